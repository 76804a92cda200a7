"""`lathe run` on the embedded default: a local Ray, a local run directory (see `run.layout`).

This machine is the driver: `cluster.driver.drive` trains on the local Ray (or the
one `RAY_ADDRESS` names) and exports, exactly as a submitted job does on a head node.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator import cpus, gguf_base
from orchestrator.cluster.driver import DriveOptions, begin, drive, workers_for
from orchestrator.errors import LatheError
from orchestrator.run import timeline
from orchestrator.run.job_args import CONTROLLER_ENV
from orchestrator.run.layout import RunDir, new_run_id, now
from orchestrator.run.state import RunState
from orchestrator.validate import axolotl_config, validate


def _gpus_here() -> int:
    return 1 if shutil.which("nvidia-smi") and os.path.exists("/proc/driver/nvidia/version") else 0


# Ray gives its raylet a fixed 30 s to register (not configurable); a busy 2-core laptop (a compile
# beside it) can need longer, so a start that timed out is tried again before giving up.
RAY_START_TRIES = 3


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# Ray Train's preemption watcher is one more actor process per run (~8 s of CPU, mostly Ray's imports) that
# reports spot-instance preemptions: none happen to the machine the user is sitting at. Clusters keep it.
# Ray starts its workers at niceness 15, below its own daemons and below everything else on the machine;
# `axolotl train` here runs at 0. On 2 cores each daemon wake-up then preempts one of torch's two threads
# while the other waits for it: renicing the training worker between 0 and 15 every 5 s within one run,
# its steps took 1-5% longer at 15 (medians of ~40 steps each, three runs; docs/benchmarks.md). Clusters
# keep Ray's default (their nodes are Ray's alone, and their operators set it).
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_worker_niceness": "0"}


_started_here = False  # whether this process started the Ray it is connected to (it then ends with it)


def _ensure_local_ray(min_cpus: int, say: Any = _to_stderr) -> bool:
    """Connect to Ray (a fresh local one unless RAY_ADDRESS names one); True if this process started it."""
    global _started_here
    import ray

    if ray.is_initialized():
        return _started_here
    for key, value in {**CONTROLLER_ENV, **LOCAL_RAY_ENV}.items():
        os.environ.setdefault(key, value)  # inherited by the local Ray's processes, the controller's among them
    # RAY_ADDRESS joins that Ray. Otherwise a fresh local one ("local"): left to itself, ray.init would
    # join whatever cluster a `ray start` on this machine last wrote into /tmp/ray, with no cluster named.
    address = os.environ.get("RAY_ADDRESS") or "local"
    # A fresh local Ray: logical CPUs sized for the workers plus Ray Train's controller.
    kwargs: dict[str, Any] = {} if address != "local" else {"num_cpus": max(min_cpus + 1, cpus.threads(), 4)}
    for attempt in range(1, RAY_START_TRIES + 1):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR", **kwargs)
            _started_here = address == "local"
            return _started_here
        except Exception as exc:  # Ray raises a bare Exception when its raylet does not register in time
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()  # ends the half-started local Ray this process began
            if attempt < RAY_START_TRIES:
                say(f"the local Ray was slow to start (this machine is busy); trying again ({attempt + 1} of "
                    f"{RAY_START_TRIES})")
    raise LatheError(f"the local Ray did not start in {RAY_START_TRIES} tries of 30 s (this machine is busy: another "
                     "build or run?); try again when it is quieter, or point RAY_ADDRESS at a running Ray")


def _import_while_waiting(module: str) -> None:
    """Import `module` on a thread while this one waits for the local Ray to start (~3.6 s, most of
    it waiting on Ray's processes: the driver used 0.6 s of CPU in it). torch is the driver's heaviest
    import before training (~1.1 s warm; Ray Train's TorchTrainer needs it) and imports nothing of
    Ray's, so the two threads never wait on each other's modules. A failure here is not reported: the
    import runs again where it is needed and raises there."""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import-{module}", daemon=True).start()


def _make_base(base_model: str, say: Any) -> tuple[str, bool]:
    """The base, resolved (and whether it was made now). A tiny:// base is built, and a .gguf base
    dequantized, on first use (a minute or two): here, where the user sees it said, rather than silently
    inside the training worker (which then finds it made)."""
    from orchestrator import base_model as bases
    from orchestrator import tinymodel

    if bases.is_made(base_model):
        return bases.resolve(base_model), False
    began = time.monotonic()
    if base_model.startswith(tinymodel.TINY_SCHEME):
        say(f"building the tiny base model {base_model} (first use only: about two minutes on 2 cores)")
    resolved = bases.resolve(base_model, say=say)
    say(f"made the base {Path(base_model).name if Path(base_model).suffix else base_model} in "
        f"{time.monotonic() - began:.0f} s")
    return resolved, True


def run_local(
    recipe_path: str | Path,
    runs_root: Path = Path("runs"),
    *,
    workers: int | None = None,
    pushgateway: str | None = None,
    show_progress: bool = True,
    export: bool = True,
    say: Any = _to_stderr,
) -> RunDir:
    """Validate, train, export; `say` gets the one-line notes (what validation let through, what
    Lathe changed for CPU)."""
    recipe = validate(recipe_path, gpus_per_node=_gpus_here(), say=say)
    for line in recipe.warnings:
        say(f"warning: {line}")
    num_workers, use_gpu = workers_for(recipe, _gpus_here(), workers)
    run_id = new_run_id(recipe.path.stem)
    run = RunDir((runs_root / run_id).resolve())
    run.path.mkdir(parents=True)
    cfg = begin(run, recipe, axolotl_config(recipe), use_gpu, say, run_id=run_id,
                recipe=str(Path(recipe_path).resolve()), cluster="local", created=now(), workers=num_workers,
                use_gpu=use_gpu, export=export)

    resolved, made = _make_base(str(cfg.get("base_model") or ""), say)
    if made:
        run.mark(timeline.BASE_BUILT)
    if provenance := gguf_base.Provenance.read(resolved):  # where "full precision" came from (run.json)
        run.update(base_provenance=asdict(provenance))
    # The machine is the run's: each CPU worker reserves (and so trains on) its share of the cores, as
    # `axolotl train` here would, or the recipe's `cpus_per_worker` where that is more.
    cpus_per_worker = max(recipe.lathe.resources.cpus_per_worker, cpus.per_worker(num_workers))
    _import_while_waiting("torch")  # the trainer's import, otherwise paid after Ray is up
    import ray

    fresh = not ray.is_initialized()
    own_ray = _ensure_local_ray(num_workers * cpus_per_worker)
    run.mark(timeline.RAY_READY)
    opts = DriveOptions(num_workers=num_workers, use_gpu=use_gpu, pushgateway=pushgateway, export=export,
                        show_progress=show_progress, cpus_per_worker=None if use_gpu else cpus_per_worker,
                        ray_ends_with_driver=own_ray)
    try:
        drive(recipe, run, cfg, opts)
    finally:
        if fresh and own_ray:
            _end_local_ray(run)
    run.update(state=RunState.SUCCEEDED, ended=now())
    return run


def _end_local_ray(run: RunDir) -> None:
    """End the local Ray this call started, once the model is exported. Left up, it stayed through the
    evaluation that follows: 2.2 GB resident (a Ray worker that had run the export kept 1.4 GB of it) and a
    dozen processes waking 100 times a second each, beside levels whose memory and tokens/s are measured
    (Gemma 3 270M's evaluation, sampled: Ray's processes 0.56 CPU-seconds of 40)."""
    global _started_here
    import ray

    ray.shutdown()
    _started_here = False
    run.mark(timeline.RAY_ENDED)
