"""Stage: submit. Ship a recipe to a cluster as a Ray job, recorded in the run registry (see `status`).

The job gets a working_dir with the recipe and the local files it names (at the
same relative paths, so the recipe means the same thing there); files larger
than the inline limit go to the store under ``<run>/inputs/`` instead, since Ray
caps working_dir uploads. The laptop's own `orchestrator` package travels as a
py_module, so the cluster runs the code that validated the recipe.

Nothing secret is put in the job: credentials are found on the nodes. The Ray
submission id is the run id, so an interrupted submit is resolved by asking Ray.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orchestrator
from orchestrator import registry
from orchestrator.errors import LatheError
from orchestrator.profiles import RUN_SLOT, ClusterProfile
from orchestrator.recipe import Recipe
from orchestrator.run.job_args import CONTROLLER_ENV, JobArgs
from orchestrator.run.layout import INPUTS, new_run_id, store_key
from orchestrator.run.state import RunState
from orchestrator.store import open_store

INLINE_LIMIT = 16 << 20  # bytes; larger files go through the store


def inline_limit() -> int:
    return int(os.environ.get("LATHE_INLINE_LIMIT_BYTES") or INLINE_LIMIT)


def package(recipe: Recipe, staging: Path) -> list[tuple[Path, str]]:
    """Fill `staging` (the job's working_dir); return the (file, relative path) pairs too big for it. A GGUF
    base from outside the recipe's directory travels as the recipe's data does, at `shipped_base`."""
    (staging / recipe.path.name).write_text(recipe.text)
    large = []
    shipped: list[tuple[Path, str]] = []
    for rel in recipe.local_files():
        src = recipe.directory / rel
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        shipped += [(f, f.resolve().relative_to(recipe.directory.resolve()).as_posix()) for f in files]
    if (outside := recipe.outside_base()) is not None:
        shipped.append((outside, recipe.shipped_base()))
    for f, frel in shipped:
        if f.stat().st_size > inline_limit():
            large.append((f, frel))
            continue
        (staging / frel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, staging / frel)
    return large


@dataclass(frozen=True)
class SubmitOptions:
    """What the user may set per submission, on top of the recipe and the cluster profile."""

    workers: int | None = None
    pushgateway: str | None = None  # default: the profile's
    export: bool = True


@dataclass
class Submitted:
    run_id: str
    store_uri: str


def job_args(profile: ClusterProfile, run_id: str, recipe_name: str, options: SubmitOptions,
             attempt: int = 1, base_file: str | None = None) -> JobArgs:
    store = profile.store
    return JobArgs(run_id=run_id, recipe=recipe_name, store_uri=store.uri, cluster=profile.name, base_file=base_file,
                   endpoint_url=store.endpoint_url, region=store.region, profile=store.profile,
                   pushgateway=options.pushgateway or profile.pushgateway_url, workers=options.workers,
                   price_per_gpu_hour=profile.price_per_gpu_hour, export=options.export, attempt=attempt)


def ship(recipe: Recipe, profile: ClusterProfile, run_id: str, submission_id: str, options: SubmitOptions,
         attempt: int) -> None:
    """Package the recipe and hand it to Ray Jobs under `submission_id` (the inputs go to the store first)."""
    from orchestrator.remote.connect import jobs_client

    store = open_store(profile.store)
    with tempfile.TemporaryDirectory(prefix="lathe-submit-") as tmp:
        staging = Path(tmp)
        for f, rel in package(recipe, staging):
            store.put_file(f, store_key(run_id, INPUTS, rel))
        runtime_env: dict[str, Any] = {
            "working_dir": str(staging),
            "py_modules": [str(Path(orchestrator.__file__).parent)],
            "env_vars": {"HF_HUB_DISABLE_TELEMETRY": "1", "AXOLOTL_DO_NOT_TRACK": "1", **CONTROLLER_ENV},
        }
        # On a cluster with run slots the driver waits, PENDING in Ray's queue, for a free one.
        slot = {"entrypoint_resources": {RUN_SLOT: 1}} if profile.run_slots else {}
        with jobs_client(profile) as client:
            client.submit_job(
                entrypoint=job_args(profile, run_id, recipe.path.name, options, attempt,
                                    recipe.shipped_base()).entrypoint(profile.python),
                submission_id=submission_id, runtime_env=runtime_env,
                metadata={"lathe_run_id": run_id, "lathe_recipe": recipe.path.name, "lathe_attempt": str(attempt)},
                **slot,
            )


def submit(recipe: Recipe, profile: ClusterProfile, options: SubmitOptions | None = None) -> Submitted:
    store_uri = open_store(profile.store).uri
    # Several submits of one recipe in the same second may draw the same id: the registry says which won.
    entry = registry.add_new(lambda: new_run_id(recipe.path.stem), profile.name, lambda rid: f"{store_uri}/{rid}",
                             str(recipe.path.resolve()))
    run_id, run_uri = entry.run_id, entry.store_uri
    try:
        ship(recipe, profile, run_id, run_id, options or SubmitOptions(), attempt=1)
    except LatheError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises bare RuntimeError/ConnectionError here
        # Accepted or not? `lathe status` asks Ray by the submission id; until then the entry says so.
        registry.update(run_id, RunState.SUBMITTING, f"submit interrupted: {exc.__class__.__name__}")
        raise LatheError(f"submit {run_id} to {profile.name}: {str(exc).splitlines()[0][:200]}") from None
    registry.update(run_id, RunState.PENDING)
    return Submitted(run_id, run_uri)


