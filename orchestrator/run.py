"""`lathe run` on the embedded default: a local Ray, a local run directory, metrics in a file.

A run directory holds everything about one run id:

    runs/<run-id>/
      run.json          id, recipe, times, versions, state
      recipe.yml        the recipe exactly as submitted
      axolotl.yml       what Axolotl was given (paths resolved)
      metrics.jsonl     one line per logged training step
      events.jsonl      worker starts (with the step resumed from), restarts, completion
      ray/<run-id>/     Ray Train's storage: every reported checkpoint
      adapter/          the trained adapter (or full weights)
      export/           merged model, GGUF levels, MLX, reference log-probs, manifest.json
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from orchestrator.cluster.metrics import read_jsonl
from orchestrator.errors import LatheError
from orchestrator.recipe import Recipe
from orchestrator.validate import axolotl_config, validate
from orchestrator.versions import installed

VERSIONED = ("lathe", "axolotl", "transformers", "torch", "peft", "ray", "llama-cpp-python", "mlx")


def new_run_id(recipe: Recipe) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{recipe.path.stem}-{stamp}-{secrets.token_hex(2)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunDir:
    path: Path

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    def record(self) -> dict[str, Any]:
        return json.loads(self.record_path.read_text())

    def update(self, **fields: Any) -> None:
        data = self.record() if self.record_path.exists() else {}
        data.update(fields)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.record_path)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "events.jsonl")


def _gpus_here() -> int:
    return 1 if shutil.which("nvidia-smi") and os.path.exists("/proc/driver/nvidia/version") else 0


def _ensure_local_ray(min_cpus: int) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # A fresh local Ray: logical CPUs sized for the workers plus Ray Train's controller.
    kwargs: dict[str, Any] = {} if address else {"num_cpus": max(min_cpus + 1, os.cpu_count() or 1, 4)}
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR", **kwargs)


def _reason(error: BaseException) -> str:
    """One line from Ray's multi-line failure: the innermost exception message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    named = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)]
    return (named[-1] if named else lines[0] if lines else repr(error))[:300]


def run_local(
    recipe_path: str | Path,
    runs_root: Path = Path("runs"),
    *,
    workers: int | None = None,
    pushgateway: str | None = None,
    show_progress: bool = True,
    export: bool = True,
) -> RunDir:
    recipe = validate(recipe_path, gpus_per_node=_gpus_here())
    res = recipe.lathe.resources
    gpus = res.gpus_per_node if res.gpus_per_node is not None else _gpus_here()
    num_workers = workers or res.num_workers(gpus)

    run_id = new_run_id(recipe)
    run = RunDir((runs_root / run_id).resolve())
    run.path.mkdir(parents=True)
    (run.path / "recipe.yml").write_text(recipe.text)
    cfg = axolotl_config(recipe)
    (run.path / "axolotl.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run.update(
        run_id=run_id, recipe=str(Path(recipe_path).resolve()), recipe_sha256=recipe.sha256, cluster="local",
        state="RUNNING", created=_now(), workers=num_workers, use_gpu=gpus > 0, versions=installed(VERSIONED),
    )

    from orchestrator.cluster.train import TrainJob, fit

    job = TrainJob(
        run_id=run_id,
        axolotl_cfg=cfg,
        run_dir=str(run.path),
        storage_path=str(run.path / "ray"),
        num_workers=num_workers,
        use_gpu=gpus > 0,
        resources_per_worker={"GPU": 1} if gpus > 0 else {"CPU": res.cpus_per_worker},
        accelerator_type=res.accelerator_type,
        max_failures=recipe.lathe.failure.max_failures,
        pushgateway=pushgateway,
    )
    _ensure_local_ray(num_workers * res.cpus_per_worker)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fit(job)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"lathe-train-{run_id}", daemon=True)
    thread.start()
    if show_progress:
        from orchestrator.progress import follow_training

        follow_training(run, thread)
    thread.join()

    error = outcome.get("error") or getattr(outcome.get("result"), "error", None)
    if error is not None:
        reason = _reason(error)
        run.update(state="FAILED", ended=_now(), error=reason)
        raise LatheError(f"run {run_id} failed: {reason} (see {run.path})")
    result = outcome["result"]
    with result.checkpoint.as_directory() as final:
        shutil.copytree(final, run.path / "adapter")
    points = run.metrics()
    run.update(
        state="EXPORTING" if export else "SUCCEEDED", trained=_now(), steps=points[-1]["step"] if points else 0,
        final_loss=points[-1].get("loss") if points else None,
        restarts=sum(1 for e in run.events() if e["event"] == "worker_start" and e["rank"] == 0) - 1,
    )
    if export:
        _export(run, recipe, cfg["base_model"], show_progress)
        run.update(state="SUCCEEDED")
    run.update(ended=_now())
    return run


def _export(run: RunDir, recipe: Recipe, base_model: str, show_progress: bool) -> None:
    """Export as a Ray task: on a cluster it runs on a node beside the training, not on the laptop."""
    import ray

    from orchestrator.cluster.export import ExportPlan, export

    lathe = recipe.lathe
    plan = ExportPlan(
        run_id=run.record()["run_id"], recipe_sha256=recipe.sha256, base_model=base_model,
        weights_dir=run.path / "adapter", out_dir=run.path / "export",
        gguf_levels=list(lathe.export.gguf), mlx_bits=list(lathe.export.mlx),
        reference_text=recipe.resolve(lathe.export.reference_text).read_text() if lathe.export.reference_text else None,
        top_k=lathe.export.reference_top_k,
        context=lathe.eval.context_length or int(recipe.axolotl.get("sequence_len") or 512),
    )

    def task(plan: ExportPlan) -> int:
        from orchestrator.tinymodel import resolve_base_model

        plan.base_model = resolve_base_model(plan.base_model)
        with (plan.out_dir.parent / "export.log").open("a") as logf:
            manifest = export(plan, step=lambda msg: print(msg, file=logf, flush=True))
        return len(manifest.artifacts)

    ref = ray.remote(num_cpus=1, max_retries=0)(task).remote(plan)
    if show_progress:
        from orchestrator.progress import follow_export

        follow_export(run.path / "export.log", lambda: ray.wait([ref], timeout=0)[0] != [])
    try:
        ray.get(ref)
    except ray.exceptions.RayError as exc:
        reason = _reason(exc)
        run.update(state="FAILED", ended=_now(), error=f"export: {reason}")
        raise LatheError(f"run {run.record()['run_id']}: export failed: {reason} (see {run.path / 'export.log'})") from None
