"""`lathe run` on the embedded default: a local Ray, a local run directory (see `rundir`).

This machine is the driver: `cluster.driver.drive` trains on the local Ray (or the
one `RAY_ADDRESS` names) and exports, exactly as a submitted job does on a head node.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from orchestrator.cluster.driver import DriveOptions, drive
from orchestrator.rundir import VERSIONED, RunDir, new_run_id, now
from orchestrator.validate import axolotl_config, validate
from orchestrator.versions import installed

__all__ = ["RunDir", "run_local"]


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

    run_id = new_run_id(recipe.path.stem)
    run = RunDir((runs_root / run_id).resolve())
    run.path.mkdir(parents=True)
    (run.path / "recipe.yml").write_text(recipe.text)
    cfg = axolotl_config(recipe)
    (run.path / "axolotl.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run.update(
        run_id=run_id, recipe=str(Path(recipe_path).resolve()), recipe_sha256=recipe.sha256, cluster="local",
        state="RUNNING", created=now(), workers=num_workers, use_gpu=gpus > 0, versions=installed(VERSIONED),
    )

    _ensure_local_ray(num_workers * res.cpus_per_worker)
    opts = DriveOptions(num_workers=num_workers, use_gpu=gpus > 0, pushgateway=pushgateway, export=export,
                        show_progress=show_progress)
    drive(recipe, run, cfg, opts)
    run.update(state="SUCCEEDED", ended=now())
    return run
