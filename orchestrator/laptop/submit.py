"""Stage: submit. Ship a recipe to a cluster as a Ray job; follow it from the run registry.

The job gets a working_dir with the recipe and the local files it names (at the
same relative paths, so the recipe means the same thing there); files larger
than the inline limit go to the store under ``<run>/inputs/`` instead, since Ray
caps working_dir uploads. The laptop's own `orchestrator` package travels as a
py_module, so the cluster runs the code that validated the recipe.

Nothing secret is put in the job: credentials are found on the nodes. The Ray
submission id is the run id, so an interrupted submit is resolved by asking Ray.
"""

from __future__ import annotations

import json
import os
import shlex
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
from orchestrator.rundir import new_run_id
from orchestrator.store import Store, open_store

INLINE_LIMIT = 16 << 20  # bytes; larger files go through the store
ACTIVE = ("SUBMITTING", "PENDING", "RUNNING", "EXPORTING", "UPLOADING", "TRAINED")


def inline_limit() -> int:
    return int(os.environ.get("LATHE_INLINE_LIMIT_BYTES") or INLINE_LIMIT)


def package(recipe: Recipe, staging: Path) -> list[tuple[Path, str]]:
    """Fill `staging` (the job's working_dir); return the (file, relative path) pairs too big for it."""
    (staging / recipe.path.name).write_text(recipe.text)
    large = []
    for rel in recipe.local_files():
        src = recipe.directory / rel
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for f in files:
            frel = f.resolve().relative_to(recipe.directory.resolve()).as_posix()
            if f.stat().st_size > inline_limit():
                large.append((f, frel))
                continue
            (staging / frel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, staging / frel)
    return large


@dataclass
class Submitted:
    run_id: str
    store_uri: str


def entrypoint(profile: ClusterProfile, run_id: str, recipe_name: str, workers: int | None,
               attempt: int = 1) -> str:
    store = profile.store
    args = [profile.python, "-m", "orchestrator.cluster.job", "--run-id", run_id, "--recipe", recipe_name,
            "--cluster", profile.name, "--store-uri", store.uri]
    for flag, value in (("--endpoint-url", store.endpoint_url), ("--region", store.region),
                        ("--profile", store.profile), ("--pushgateway", profile.pushgateway_url)):
        if value:
            args += [flag, value]
    if workers:
        args += ["--workers", str(workers)]
    if profile.price_per_gpu_hour:
        args += ["--price-per-gpu-hour", str(profile.price_per_gpu_hour)]
    if attempt > 1:
        args += ["--attempt", str(attempt)]
    return " ".join(shlex.quote(a) for a in args)


def _ship(recipe: Recipe, profile: ClusterProfile, run_id: str, submission_id: str, workers: int | None,
          attempt: int) -> None:
    """Package the recipe and hand it to Ray Jobs under `submission_id` (the inputs go to the store first)."""
    from orchestrator.laptop.connect import jobs_client

    store = open_store(profile.store)
    with tempfile.TemporaryDirectory(prefix="lathe-submit-") as tmp:
        staging = Path(tmp)
        for f, rel in package(recipe, staging):
            store.put_file(f, f"{run_id}/inputs/{rel}")
        runtime_env: dict[str, Any] = {
            "working_dir": str(staging),
            "py_modules": [str(Path(orchestrator.__file__).parent)],
            "env_vars": {"HF_HUB_DISABLE_TELEMETRY": "1", "AXOLOTL_DO_NOT_TRACK": "1"},
        }
        # On a cluster with run slots the driver waits, PENDING in Ray's queue, for a free one.
        slot = {"entrypoint_resources": {RUN_SLOT: 1}} if profile.run_slots else {}
        with jobs_client(profile) as client:
            client.submit_job(
                entrypoint=entrypoint(profile, run_id, recipe.path.name, workers, attempt),
                submission_id=submission_id, runtime_env=runtime_env,
                metadata={"lathe_run_id": run_id, "lathe_recipe": recipe.path.name, "lathe_attempt": str(attempt)},
                **slot,
            )


def submit(recipe: Recipe, profile: ClusterProfile, workers: int | None = None) -> Submitted:
    store_uri = open_store(profile.store).uri
    # Several submits of one recipe in the same second may draw the same id: the registry says which won.
    entry = registry.add_new(lambda: new_run_id(recipe.path.stem), profile.name, lambda rid: f"{store_uri}/{rid}",
                             str(recipe.path.resolve()))
    run_id, run_uri = entry.run_id, entry.store_uri
    try:
        _ship(recipe, profile, run_id, run_id, workers, attempt=1)
    except LatheError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises bare RuntimeError/ConnectionError here
        # Accepted or not? `lathe status` asks Ray by the submission id; until then the entry says so.
        registry.update(run_id, "SUBMITTING", f"submit interrupted: {exc.__class__.__name__}")
        raise LatheError(f"submit {run_id} to {profile.name}: {str(exc).splitlines()[0][:200]}") from None
    registry.update(run_id, "PENDING")
    return Submitted(run_id, run_uri)


def driver_lost(record: dict[str, Any]) -> bool:
    """Did the job die of something other than the recipe? The job records recipe errors as such;
    a driver killed with its node (or OOM-killed) records nothing and stays RUNNING in the store."""
    if record.get("state") in ("SUCCEEDED", "STOPPED"):
        return False
    if record.get("state") == "FAILED":
        return record.get("error_kind") == "infrastructure"
    return True


def _resubmit(entry: registry.Entry, profile: ClusterProfile, record: dict[str, Any], reason: str) -> tuple[str, str]:
    """Resubmit in place (same run id, same store prefix: training resumes from its checkpoints), bounded."""
    from orchestrator.recipe import load as recipe_load

    attempt = registry.attempt(entry)
    try:
        recipe = recipe_load(Path(entry.recipe))
    except (LatheError, OSError) as exc:
        return "FAILED", f"{reason}; not resubmitted: the recipe no longer loads ({str(exc).splitlines()[0]})"
    limit = recipe.lathe.failure.max_resubmits
    if attempt > limit:
        return "FAILED", f"{reason}; gave up after {attempt} attempts (lathe.failure.max_resubmits: {limit})"
    if record.get("recipe_sha256") and record["recipe_sha256"] != recipe.sha256:
        return "FAILED", f"{reason}; not resubmitted: {entry.recipe} changed since the run started"
    job_id = f"{entry.run_id}-a{attempt + 1}"
    detail = f"{reason}: resubmitted as attempt {attempt + 1} of {limit + 1}, resuming from the store"
    try:
        _ship(recipe, profile, entry.run_id, job_id, record.get("workers"), attempt + 1)
    except Exception as exc:  # noqa: BLE001 - another `lathe status` may have resubmitted it first
        if "already exists" not in str(exc):
            raise LatheError(f"resubmit {entry.run_id}: {str(exc).splitlines()[0][:200]}") from None
    registry.set_job(entry.run_id, job_id, "PENDING", detail)
    return "PENDING", detail


@dataclass
class Status:
    run_id: str
    state: str
    detail: str
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None


def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    info = store.stat(key)
    return json.loads(store.get_bytes(key)) if info else None


def last_metrics(store: Store, run_id: str) -> dict[str, Any] | None:
    if not store.stat(f"{run_id}/metrics.jsonl"):
        return None
    lines = [ln for ln in store.get_bytes(f"{run_id}/metrics.jsonl").decode().splitlines() if ln.strip()]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def status(entry: registry.Entry, profile: ClusterProfile, client: Any = None) -> Status:
    """Ask Ray and the store, reconcile, record the answer in the registry. Pass a jobs client to ask
    about several runs through one connection (one SSH tunnel) instead of one each."""
    from ray.job_submission import JobStatus

    from orchestrator.laptop.connect import jobs_client

    if client is None:
        with jobs_client(profile) as opened:
            return status(entry, profile, opened)
    store = open_store(profile.store)
    record = _read_json(store, f"{entry.run_id}/run.json") or {}
    try:
        info = client.get_job_info(entry.job_id)
    except RuntimeError:
        info = None  # never accepted: an interrupted submit
    if info is None:
        state, detail = ("FAILED", "the cluster never accepted the job") if entry.state == "SUBMITTING" \
            else (entry.state, "the cluster no longer knows this job")
    elif info.status == JobStatus.SUCCEEDED:
        state, detail = record.get("state", "SUCCEEDED"), ""
    elif info.status == JobStatus.FAILED and driver_lost(record):
        message = (info.message or "").strip().splitlines()
        reason = f"job driver lost ({record.get('error') or (message[-1] if message else 'no message')})"
        state, detail = _resubmit(entry, profile, record, reason)
    elif info.status in (JobStatus.FAILED, JobStatus.STOPPED):
        state = "STOPPED" if info.status == JobStatus.STOPPED else "FAILED"
        message = (info.message or "").splitlines()
        detail = record.get("error") or (message[-1] if message else "")
    elif info.status == JobStatus.PENDING:
        state, detail = "PENDING", f"queued for one of the cluster's {profile.run_slots} run slots" \
            if profile.run_slots else ""
    elif record.get("state") == "FAILED":
        # The driver has recorded its failure and is still syncing its last files: whether the run is
        # over or goes on as a resubmission is decided once Ray says the job has ended.
        state, detail = "RUNNING", f"failing: {record.get('error', '')}"
    else:
        state, detail = record.get("state", "RUNNING"), ""
    if registry.get(entry.run_id).job_id == entry.job_id:  # a resubmission has already recorded itself
        registry.update(entry.run_id, state, detail or "")
    point = last_metrics(store, entry.run_id) or {}
    return Status(entry.run_id, state, detail or "", point.get("step"), point.get("max_steps"), point.get("loss"))


def stop(entry: registry.Entry, profile: ClusterProfile) -> bool:
    from orchestrator.laptop.connect import jobs_client

    with jobs_client(profile) as client:
        stopped = client.stop_job(entry.job_id)
    registry.update(entry.run_id, "STOPPED" if stopped else entry.state)
    return stopped


def logs(entry: registry.Entry, profile: ClusterProfile, follow: bool, out: Any) -> None:
    import asyncio

    from orchestrator.laptop.connect import jobs_client

    with jobs_client(profile) as client:
        if not follow:
            out.write(client.get_job_logs(entry.job_id))
            return

        async def tail() -> None:
            async for chunk in client.tail_job_logs(entry.job_id):
                out.write(chunk)
                out.flush()

        asyncio.run(tail())


def follow(entry: registry.Entry, profile: ClusterProfile, poll_s: float = 3.0) -> Status:
    """Poll until the run ends, showing its progress; a lost connection is retried, not fatal."""
    import time

    from botocore.exceptions import BotoCoreError, ClientError
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.fields[state]}[/]"), BarColumn(),
               TextColumn("step {task.fields[step]}/{task.fields[max_steps]} loss {task.fields[loss]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("run", total=None, state="PENDING", step="-", max_steps="?", loss="-")
        while True:
            entry = registry.get(entry.run_id) or entry  # a resubmission changes the Ray job to ask about
            try:
                st = status(entry, profile)
            except (LatheError, OSError, BotoCoreError, ClientError):
                # The laptop lost the network, or the store is away for a while: the run does not care.
                time.sleep(poll_s)
                continue
            bar.update(task, state=st.state, completed=st.step or 0, total=st.max_steps,
                       step=st.step or "-", max_steps=st.max_steps or "?",
                       loss=f"{st.loss:.3f}" if st.loss is not None else "-")
            if st.state in registry.TERMINAL:
                return st
            time.sleep(poll_s)
