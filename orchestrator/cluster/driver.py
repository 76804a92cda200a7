"""The run's driver: train on the connected Ray cluster, then export, in one run directory.

The same code drives a run on the embedded default (`lathe run`, the laptop is
the driver) and on a cluster (`orchestrator.cluster.job`, the head node is).
Workers may be on other hosts: they reach the run directory only through the
run-log actor, and checkpoints only through Ray Train's storage.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.cluster import calibration
from orchestrator.errors import InfrastructureError, LatheError
from orchestrator.recipe import Recipe, cpu_note, for_cpu
from orchestrator.run import timeline
from orchestrator.run.layout import (
    ADAPTER,
    AXOLOTL,
    EXPORT,
    EXPORT_LOG,
    INPUTS,
    MANIFEST,
    RAY,
    RECIPE,
    VERSIONED,
    RunDir,
    now,
    store_key,
)
from orchestrator.run.state import RunState
from orchestrator.store import StoreConfig


@dataclass
class DriveOptions:
    num_workers: int
    use_gpu: bool
    pushgateway: str | None = None
    export: bool = True
    storage_path: str = ""  # Ray Train's storage; default: <run>/ray
    storage_fs: Any = None
    show_progress: bool = False
    on_tick: Callable[[], None] | None = None  # called every few seconds (the store sync)
    price_per_gpu_hour: float = 0.0
    upload_to: tuple[StoreConfig, str] | None = None  # export straight into the store under this key
    inputs_from: StoreConfig | None = None  # recipe files too large for the working_dir: <run>/inputs/
    cpus_per_worker: int | None = None  # Ray's CPU reservation per CPU worker; default: the recipe's
    ray_ends_with_driver: bool = False  # the local Ray this process started (`train.fit`)


def workers_for(recipe: Recipe, gpus_per_node: int | None, override: int | None) -> tuple[int, bool]:
    """How many training workers, and whether they use GPUs: the recipe's resources, else what the
    node reports; an explicit override (--workers) wins."""
    res = recipe.lathe.resources
    gpus = res.gpus_per_node if res.gpus_per_node is not None else (gpus_per_node or 0)
    return override or res.num_workers(gpus), gpus > 0


def begin(run: RunDir, recipe: Recipe, cfg: dict[str, Any], use_gpu: bool, say: Callable[[str], None], /,
          **record: Any) -> dict[str, Any]:
    """The preamble every driver runs before training, on the laptop (`lathe run`) or on the head
    (the Ray job): the config made CPU-safe where Lathe can (said in one line), the recipe as given,
    what Axolotl gets, and the run record (`record`: its fields, `recipe` among them: hence positional
    parameters before it). Returns the config to train with."""
    import yaml

    from orchestrator.versions import installed

    if not use_gpu:
        cfg, changed = for_cpu(cfg)
        if changed:
            say(f"{recipe.name}: {cpu_note(changed)}")
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / RECIPE).write_text(recipe.text)
    (run.path / AXOLOTL).write_text(yaml.safe_dump(cfg, sort_keys=False))
    run.update(recipe_sha256=recipe.sha256, state=RunState.RUNNING, versions=installed(VERSIONED), **record)
    run.mark(timeline.STARTED)
    return cfg


def caused_by_infrastructure(error: BaseException) -> bool:
    """Did Ray Train fail for a reason outside the recipe? Its controller failing (say, on a store that
    went away while it saved its state), a worker killed with its node, or a worker that died of a
    network or storage error after Ray's own retries; a Python error in the training code is the
    recipe's (or its data's) and would fail again."""
    from ray.exceptions import RayActorError
    from ray.train import ControllerError, PreemptionError, WorkerGroupError

    if isinstance(error, ControllerError | PreemptionError):
        return True
    if isinstance(error, WorkerGroupError):
        return any(isinstance(e, RayActorError | OSError) for e in error.worker_failures.values())
    return False


def export_lost_to_infrastructure(error: BaseException) -> bool:
    """Did the export task fail for a reason outside the recipe? Its worker or node lost (the object it
    was computing gone with it), or the store failing after the client's retries while the artifacts
    went up; a converter or quantizer refusing the model is the recipe's, and would fail again."""
    from ray.exceptions import (
        NodeDiedError,
        ObjectLostError,
        OwnerDiedError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    from orchestrator.store import unreachable_errors

    if isinstance(error, RayTaskError):
        return isinstance(error.cause, (OSError, *unreachable_errors()))
    return isinstance(error, WorkerCrashedError | NodeDiedError | ObjectLostError | OwnerDiedError | RayActorError)


def reason(error: BaseException) -> str:
    """One line from Ray's multi-line failure: the innermost exception message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    named = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)]
    return (named[-1] if named else lines[0] if lines else repr(error))[:300]


def _wait(thread_done: Callable[[], bool], opts: DriveOptions) -> None:
    import time

    while not thread_done():
        if opts.on_tick:
            opts.on_tick()
        time.sleep(2.0)


def drive(recipe: Recipe, run: RunDir, cfg: dict[str, Any], opts: DriveOptions) -> RunDir:
    import time

    from orchestrator.cluster import runlog
    from orchestrator.cluster.metrics import RunMetrics
    from orchestrator.cluster.train import TrainJob, fit

    run_id = run.record().run_id
    res = recipe.lathe.resources
    metrics = RunMetrics(run_id, opts.pushgateway, gpus=opts.num_workers if opts.use_gpu else 0,
                         price_per_gpu_hour=opts.price_per_gpu_hour)
    metrics.set_state(RunState.RUNNING)
    log_actor = runlog.start(run_id, run.path)  # noqa: F841 - lives as long as this handle
    job = TrainJob(
        run_id=run_id, axolotl_cfg=cfg, storage_path=opts.storage_path or str(run.path / RAY),
        storage_fs=opts.storage_fs, num_workers=opts.num_workers, use_gpu=opts.use_gpu,
        resources_per_worker={"GPU": 1} if opts.use_gpu else {"CPU": opts.cpus_per_worker or res.cpus_per_worker},
        accelerator_type=res.accelerator_type, max_failures=recipe.lathe.failure.max_failures,
        pushgateway=opts.pushgateway,
        inputs_from=opts.inputs_from.model_dump() if opts.inputs_from else None,
    )
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fit(job, opts.ray_ends_with_driver)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"lathe-train-{run_id}", daemon=True)
    run.mark(timeline.FIT_STARTED)
    thread.start()
    if opts.show_progress:
        from orchestrator.progress import follow_training

        follow_training(run, thread)
    else:
        _wait(lambda: not thread.is_alive(), opts)
    thread.join()
    run.mark(timeline.FIT_RETURNED)

    metrics.stage_done("train", time.time() - metrics.started)
    error = outcome.get("error") or getattr(outcome.get("result"), "error", None)
    if error is not None:
        why = reason(error)
        metrics.set_state(RunState.FAILED)
        run.update(state=RunState.FAILED, ended=now(), error=why)
        kind = InfrastructureError if caused_by_infrastructure(error) else LatheError
        raise kind(f"run {run_id} failed: {why} (see {run.path})")
    checkpoint = outcome["result"].checkpoint
    with checkpoint.as_directory() as final:
        shutil.copytree(final, run.path / ADAPTER)
    points = run.metrics()
    run.update(
        state=RunState.EXPORTING if opts.export else RunState.TRAINED, trained=now(), steps=points[-1]["step"] if points else 0,
        final_loss=points[-1].get("loss") if points else None,
        restarts=sum(1 for e in run.events() if e["event"] == "worker_start" and e["rank"] == 0) - 1,
    )
    if opts.export:
        metrics.set_state(RunState.EXPORTING)
        began = time.time()
        run.mark(timeline.EXPORT_STARTED)
        try:
            export_stage(run, recipe, cfg["base_model"], checkpoint, opts)
        except LatheError:
            metrics.set_state(RunState.FAILED)
            raise
        run.mark(timeline.EXPORT_DONE)
        metrics.stage_done("export", time.time() - began)
    metrics.set_state(RunState.SUCCEEDED)
    return run


def _export_task(plan: Any, checkpoint: Any, upload_to: tuple[StoreConfig, str] | None,
                 inputs_from: StoreConfig | None = None) -> int:
    """Runs on a training node: fetch the final checkpoint, export, and (on a cluster) upload."""
    import tempfile

    from orchestrator import gguf_base
    from orchestrator.base_model import resolve as resolve_base_model
    from orchestrator.cluster.export import export
    from orchestrator.cluster.runlog import Writer
    from orchestrator.recipe import SHIPPED_BASE_DIR
    from orchestrator.store import fetch_missing, open_store, put_tree

    log = Writer(plan.run_id)
    if gguf_base.is_gguf(plan.base_model):
        if not Path(plan.base_model).exists() and inputs_from is not None:
            # A GGUF base shipped from outside the recipe's directory came through the store: the workers
            # fetched it into the job's directory, which Ray may have cleared and unpacked afresh for this task.
            fetch_missing(open_store(inputs_from), store_key(plan.run_id, INPUTS, SHIPPED_BASE_DIR) + "/",
                          Path.cwd() / SHIPPED_BASE_DIR)
        plan.base_file = str(Path(plan.base_model).expanduser().resolve())  # this node's copy, this job's path
    plan.base_model = resolve_base_model(plan.base_model)
    scratch = Path(tempfile.mkdtemp(prefix=f"lathe-export-{plan.run_id}-")) if upload_to else None
    try:
        with checkpoint.as_directory() as weights:
            plan.weights_dir = Path(weights)
            if scratch is not None:
                plan.out_dir = scratch / EXPORT
            manifest = export(plan, step=lambda msg: log.line(EXPORT_LOG, msg))
        if upload_to is not None:
            log.line(EXPORT_LOG, "uploading to the store (manifest last)")
            config, key = upload_to
            put_tree(open_store(config), plan.out_dir, key, last=MANIFEST)
    finally:
        log.flush()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return len(manifest.artifacts)


CHARS_PER_TOKEN = 8  # generous: collect enough rows for the token cap without reading a whole large set


def trained_on(recipe: Recipe) -> str:
    """What the adapter was trained against, for the merge check's record."""
    if recipe.axolotl.get("load_in_4bit"):
        return "a 4-bit quantized base (QLoRA)"
    if recipe.axolotl.get("load_in_8bit"):
        return "an 8-bit quantized base"
    return "the full-precision base"


def export_stage(run: RunDir, recipe: Recipe, base_model: str, checkpoint: Any, opts: DriveOptions) -> None:
    """Export as a Ray task that needs what a training worker needs, so it runs on a training node
    (a GPU node on a cluster, never the laptop), reading the final checkpoint from the store."""
    import ray

    from orchestrator.cluster.export import ExportPlan

    lathe = recipe.lathe
    plan = ExportPlan(
        run_id=run.record().run_id, recipe_sha256=recipe.sha256, base_model=base_model,
        weights_dir=run.path / ADAPTER, out_dir=run.export_dir,
        gguf_levels=lathe.export.gguf_levels(), mlx_bits=list(lathe.export.mlx),
        reference_text=recipe.resolve(lathe.export.reference_text).read_text() if lathe.export.reference_text else None,
        top_k=lathe.export.reference_top_k, base_gguf=lathe.export.base_gguf,
        context=lathe.eval.context_length or int(recipe.axolotl.get("sequence_len") or 512),
        imatrix=lathe.export.imatrix, merge_bounds=lathe.export.merge_check, trained_on=trained_on(recipe),
        calibration_samples=calibration.samples(
            recipe.axolotl.get("datasets") or [], recipe.directory,
            recipe.resolve(lathe.export.imatrix.dataset) if lathe.export.imatrix.dataset else None,
            max_chars=CHARS_PER_TOKEN * lathe.export.imatrix.max_tokens) if lathe.export.imatrix.enabled else [],
    )

    needs = {"num_gpus": 1} if opts.use_gpu else {"num_cpus": 1}
    ref = ray.remote(max_retries=0, **needs)(_export_task).remote(plan, checkpoint, opts.upload_to, opts.inputs_from)
    finished = lambda: ray.wait([ref], timeout=0)[0] != []
    if opts.show_progress:
        from orchestrator.progress import follow_export

        follow_export(run.path / EXPORT_LOG, finished)
    else:
        _wait(finished, opts)
    try:
        ray.get(ref)
    except ray.exceptions.RayError as exc:
        why = reason(exc)
        run.update(state=RunState.FAILED, ended=now(), error=f"export: {why}")
        # Infrastructure failures are resubmitted by the laptop (the job records whose fault it was).
        kind = InfrastructureError if export_lost_to_infrastructure(exc) else LatheError
        raise kind(f"run {run.record().run_id}: export failed: {why} (see {run.path / EXPORT_LOG})") from None
