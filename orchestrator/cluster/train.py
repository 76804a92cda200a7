"""Stage: train. A Ray Train `TorchTrainer` whose workers run Axolotl on the recipe.

Why not Axolotl's own `use_ray`: it hard-codes GPUs, never reports checkpoints to
Ray, sets no failure policy and forces a local storage path. Here every checkpoint
Axolotl saves is reported to Ray (and so copied into the run's store), and a
restarted worker group resumes from the newest one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from orchestrator import cpus
from orchestrator.run.layout import INPUTS, store_key

# By name, not by import: the driver and Ray Train's controller load this module too, and the plugin
# module pulls in Axolotl and transformers (~25 s and 1 GB per process); only the workers need them.
PLUGIN_NAME = "orchestrator.cluster.plugin.LathePlugin"

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json")


@dataclass
class TrainJob:
    """Everything a worker needs, as plain data (it crosses process and host boundaries)."""

    run_id: str
    axolotl_cfg: dict[str, Any]  # relative dataset paths are relative to each worker's working dir
    storage_path: str  # Ray Train's storage: the run's artifact store
    storage_fs: Any = None  # a pyarrow filesystem for storage_path (S3), None for a local path
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=lambda: {"CPU": 1})
    accelerator_type: str | None = None
    max_failures: int = 2
    pushgateway: str | None = None
    inputs_from: dict[str, Any] | None = None  # a StoreConfig: fetch <run>/inputs/ into the working dir


def _event(log: Any, event: str, **fields: Any) -> None:
    log.event(event, **fields)
    log.flush()


# Written into the final checkpoint (the trained model, not a resumable Trainer state): an attempt
# that restores it (a run resubmitted after its export was lost) has nothing left to train.
FINAL_MARK = "lathe_final.json"


def _restore_checkpoint(output_dir: Path) -> int:
    """Copy Ray's latest checkpoint (if any) into output_dir; return its step, 0 if none, -1 if it is
    the final model (copied to output_dir/final)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as src:
        if (Path(src) / FINAL_MARK).is_file():
            final = output_dir / "final"
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(src, final)
            return -1
        state = json.loads((Path(src) / "trainer_state.json").read_text())
        step = int(state["global_step"])
        target = output_dir / f"checkpoint-{step}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
    return step


def _threads_as_reserved() -> None:
    """A CPU worker computes on the cores Ray reserved for it (`cpus_per_worker`; a local run reserves
    its machine's share per worker), never more: workers of other runs on the same node (`run_slots`)
    hold the rest, and torch's spinning threads, oversubscribed, waste the cores they wait for
    (orchestrator/cpus.py). `LATHE_THREADS`, where the node's processes have it, caps it further."""
    import ray
    import torch

    threads = cpus.as_reserved(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for processes the worker starts
    torch.set_num_threads(threads)


def _one_process() -> None:
    """Train as `axolotl train` does when there is one worker. Ray Train sets up a process group (gloo on
    CPUs) and LOCAL_RANK even for one; accelerate then takes a CPU run for a multi-process one and wraps
    the model in DistributedDataParallel, whose gradient all-reduce with itself, every step, made the
    quickstart's steps 1.5x bare Axolotl's (0.045 s against 0.03 s). Ray Train itself needs neither:
    its reports synchronise through its own actor."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK"):
        os.environ.pop(key, None)


def node_scratch(run_id: str) -> Path:
    """Where a run's workers train on their node (a folder per rank), removed when they end."""
    return Path(tempfile.gettempdir()) / "lathe" / run_id


def worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: Axolotl's training, resumed from Ray's checkpoint."""
    import ray.train

    from orchestrator.base_model import resolve as resolve_base_model
    from orchestrator.cluster.checkpoint_upload import clear_staging
    from orchestrator.cluster.runlog import Writer

    job = TrainJob(**config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    log = Writer(job.run_id)
    os.environ.update(
        {"LATHE_RUN_ID": job.run_id, "LATHE_RAY_REPORT": "1", "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    )
    if rank == 0:
        os.environ["LATHE_RUN_LOG"] = "1"
        if job.pushgateway:
            os.environ["LATHE_PUSHGATEWAY"] = job.pushgateway
    if not job.use_gpu:
        # Without this each CPU worker silently trains on the whole dataset alone.
        os.environ["ACCELERATE_USE_CPU"] = "true"
        _threads_as_reserved()
        if world == 1:  # on GPUs too, likely; not measured there yet
            _one_process()

    if job.inputs_from:
        from orchestrator.store import StoreConfig, fetch_missing, open_store

        fetch_missing(open_store(StoreConfig(**job.inputs_from)), store_key(job.run_id, INPUTS) + "/", Path.cwd())
    cfg = json.loads(json.dumps(job.axolotl_cfg))
    cfg["base_model"] = resolve_base_model(cfg["base_model"])
    for key in ("datasets", "test_datasets"):
        for ds in cfg.get(key) or []:
            # A submitted job's files sit in Ray's working_dir, which has its own path on every node.
            if isinstance(ds, dict) and isinstance(ds.get("path"), str) and not Path(ds["path"]).is_absolute() \
                    and (Path.cwd() / ds["path"]).exists():
                ds["path"] = str(Path.cwd() / ds["path"])
    output_dir = node_scratch(job.run_id) / f"rank{rank}"
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        _train(job, log, cfg, output_dir, rank, world)
    except BaseException:
        # The checkpoints a restarted worker needs are in Ray's storage; the staging links stay for an
        # upload that may still be reading them (the next attempt clears them).
        shutil.rmtree(output_dir, ignore_errors=True)
        raise
    # Every report has landed (the last one is synchronous, after the asynchronous ones): nothing on
    # this node is needed any more. Left behind, each run kept its checkpoints, optimizer states and
    # final model in the node's /tmp (the SmolLM2 runs: 164 MB each; a 7B LoRA's: gigabytes).
    clear_staging(output_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        output_dir.parent.rmdir()  # the run's folder, once no other rank on this node still uses it


def _train(job: TrainJob, log: Any, cfg: dict[str, Any], output_dir: Path, rank: int, world: int) -> None:
    """Axolotl's training into output_dir, resumed from Ray's latest checkpoint; the final model reported."""
    import ray.train

    from orchestrator.cluster.checkpoint_upload import clear_staging
    from orchestrator.quiet import quiet_stderr

    cfg["output_dir"] = str(output_dir)
    cfg["dataset_prepared_path"] = str(output_dir / "prepared")
    cfg["plugins"] = [*(cfg.get("plugins") or []), PLUGIN_NAME]
    cfg.pop("ddp", None)  # the world size decides, not the driver's view of it

    clear_staging(output_dir)
    resume_step = _restore_checkpoint(output_dir)
    if resume_step > 0:
        cfg["resume_from_checkpoint"] = str(output_dir / f"checkpoint-{resume_step}")
    _event(log, event="worker_start", rank=rank, world_size=world, pid=os.getpid(), resume_step=resume_step,
           node_ip=ray.util.get_node_ip_address())
    if resume_step < 0:  # training had finished: hand the final model on again, for the export
        final_dir = output_dir / "final"
        ray.train.report({"final": 1}, checkpoint=ray.train.Checkpoint.from_directory(str(final_dir))
                         if rank == 0 else None)
        _event(log, event="worker_done", rank=rank)
        return

    with quiet_stderr():
        from axolotl.cli.args import TrainerCliArgs
        from axolotl.cli.config import load_cfg
        from axolotl.cli.train import do_train
        from axolotl.utils.dict import DictDefault

    if not job.use_gpu and world > 1:
        import axolotl.utils.environment as axolotl_env

        # Axolotl asks CUDA about peer-to-peer access whenever WORLD_SIZE > 1, which
        # raises on a machine without a GPU; NCCL P2P is irrelevant to gloo anyway.
        axolotl_env.check_cuda_p2p_support = lambda: True

    parsed = load_cfg(DictDefault(cfg))
    parsed.use_ray = True  # after load_cfg: dtype is resolved; inside, it skips main-thread-only signal setup
    if not job.use_gpu:
        parsed.device_map = "cpu"  # Axolotl maps each rank to cuda:LOCAL_RANK otherwise
    do_train(parsed, TrainerCliArgs())

    final = None
    if rank == 0:
        final_dir = output_dir / "final"
        final_dir.mkdir(exist_ok=True)
        for item in output_dir.iterdir():
            if item.is_file() and not item.name.endswith(".log"):
                shutil.copy2(item, final_dir / item.name)
        (final_dir / FINAL_MARK).write_text(json.dumps({"run_id": job.run_id}))
        final = ray.train.Checkpoint.from_directory(str(final_dir))
    ray.train.report({"final": 1}, checkpoint=final)
    _event(log, event="worker_done", rank=rank)


def _trainer_class(ray_ends_with_driver: bool = False) -> type:
    """Ray's TorchTrainer without the helpers Lathe's runs do not need.

    - Its Ray Data set-up: Lathe's workers read their data through Axolotl, never through Ray Datasets,
      yet Ray Train 2.60 starts a DatasetManager actor for every worker group regardless: one more
      process importing Ray Data (~1.1 s of CPU while the workers start, on the critical path of a
      2-core machine) that then idles beside the training (~0.6% of a core).
    - Where the Ray is the one this process started (`lathe run` with no cluster), its
      PlacementGroupCleaner: a detached actor that removes the run's placement group should the
      controller die while the cluster lives on. That Ray ends with this process, and its placement
      groups with it; the actor would be one more process importing Ray Train and waking beside the
      training for nothing. Nor, there, Ray Train's AutoscalingCoordinator (`_fixed_on_this_machine`)."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    left_out: tuple[type, ...] = (PlacementGroupCleanerCallback,) if ray_ends_with_driver else ()

    class LatheTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            unwanted = left_out if self.datasets else (*left_out, DatasetsCallback)  # datasets: never from Lathe
            return [c for c in callbacks if not isinstance(c, unwanted)]

        def _initialize_and_run_controller(self, **controller_init_kwargs):
            if ray_ends_with_driver:
                controller_init_kwargs["scaling_policy"] = _fixed_on_this_machine(self.scaling_config)
            return super()._initialize_and_run_controller(**controller_init_kwargs)

    return LatheTorchTrainer


def _fixed_on_this_machine(scaling_config: Any) -> Any:
    """Ray Train's fixed scaling policy, without its AutoscalingCoordinator. That detached actor passes a
    run's resource requests to a cluster's autoscaler; the Ray `lathe run` starts itself is this machine,
    with no autoscaler to ask. Yet the controller creates it before the first worker, and waits for it:
    a process importing Ray Data on the critical path of "start the workers", then idle beside the
    training. The decisions are the fixed policy's own: the recipe's workers, never resized."""
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    # Without a coordinator client, Ray's own shutdown and abort hooks have nothing to cancel.
    class FixedOnThisMachine(FixedScalingPolicy):
        def after_controller_start(self, train_run_context: Any) -> None:
            pass  # where Ray's makes the client and sends the first request

        def _maybe_send_resource_request(self) -> None:
            pass  # each decision's periodic request

    return FixedOnThisMachine(scaling_config)


def fit(job: TrainJob, ray_ends_with_driver: bool = False):
    """Run the job on the connected Ray cluster; return Ray's Result (its checkpoint is the final model).
    `ray_ends_with_driver`: that Ray was started by this process and ends with it (see `_trainer_class`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    scaling = ScalingConfig(
        num_workers=job.num_workers,
        use_gpu=job.use_gpu,
        resources_per_worker=job.resources_per_worker,
        accelerator_type=job.accelerator_type,
    )
    trainer = _trainer_class(ray_ends_with_driver)(
        worker_loop,
        train_loop_config={f.name: getattr(job, f.name) for f in fields(job) if f.name != "storage_fs"},
        torch_config=TorchConfig(backend="nccl" if job.use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=RunConfig(
            name=job.run_id,
            storage_path=job.storage_path,
            storage_filesystem=job.storage_fs,
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=3),
        ),
    )
    return trainer.fit()
