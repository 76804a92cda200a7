"""Where a submitted run is: Ray's job state and the store's run record, reconciled into one `RunState`;
a run whose driver was lost to infrastructure is resubmitted in place (bounded). Also stop, logs, follow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import registry
from orchestrator.errors import LatheError
from orchestrator.profiles import ClusterProfile
from orchestrator.remote.submit import SubmitOptions, ship
from orchestrator.run.layout import RunRecord
from orchestrator.run.state import RunState, is_terminal
from orchestrator.run.stored import StoredRun
from orchestrator.store import Store, open_store


def driver_lost(record: RunRecord) -> bool:
    """Did the job die of something other than the recipe? The job records recipe errors as such;
    a driver killed with its node (or OOM-killed) records nothing and stays RUNNING in the store."""
    if record.state in (RunState.SUCCEEDED, RunState.STOPPED):
        return False
    if record.state == RunState.FAILED:
        return record.error_kind == "infrastructure"
    return True


def _resubmit(entry: registry.Entry, profile: ClusterProfile, record: RunRecord, reason: str) -> tuple[str, str]:
    """Resubmit in place (same run id, same store prefix: training resumes from its checkpoints), bounded."""
    from orchestrator.recipe import load as recipe_load

    attempt = registry.attempt(entry)
    try:
        recipe = recipe_load(Path(entry.recipe))
    except (LatheError, OSError) as exc:
        return RunState.FAILED, f"{reason}; not resubmitted: the recipe no longer loads ({str(exc).splitlines()[0]})"
    limit = recipe.lathe.failure.max_resubmits
    if attempt > limit:
        return RunState.FAILED, f"{reason}; gave up after {attempt} attempts (lathe.failure.max_resubmits: {limit})"
    if record.recipe_sha256 and record.recipe_sha256 != recipe.sha256:
        return RunState.FAILED, f"{reason}; not resubmitted: {entry.recipe} changed since the run started"
    job_id = f"{entry.run_id}-a{attempt + 1}"
    detail = f"{reason}: resubmitted as attempt {attempt + 1} of {limit + 1}, resuming from the store"
    try:
        ship(recipe, profile, entry.run_id, job_id, SubmitOptions(workers=record.workers, export=record.export),
             attempt + 1)
    except Exception as exc:  # noqa: BLE001 - another `lathe status` may have resubmitted it first
        if "already exists" not in str(exc):
            raise LatheError(f"resubmit {entry.run_id}: {str(exc).splitlines()[0][:200]}") from None
    registry.set_job(entry.run_id, job_id, RunState.PENDING, detail)
    return RunState.PENDING, detail


@dataclass
class Status:
    run_id: str
    state: str  # a RunState's value
    detail: str
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None


def reconcile(entry: registry.Entry, profile: ClusterProfile, job: Any, record: RunRecord) -> tuple[str, str]:
    """Ray's word on the job (`job`: its JobInfo, None if Ray does not know it) and the store's run
    record, mapped onto one RunState and a detail line. Ray decides whether the job still runs; the
    record says how far it got and whose fault a failure was."""
    from ray.job_submission import JobStatus

    message = (job.message or "").strip().splitlines() if job is not None else []
    if job is None:
        if entry.state == RunState.SUBMITTING:
            return RunState.FAILED, "the cluster never accepted the job"
        return entry.state, "the cluster no longer knows this job"
    if job.status == JobStatus.SUCCEEDED:
        return record.state or RunState.SUCCEEDED, ""
    if job.status == JobStatus.FAILED and driver_lost(record):
        reason = f"job driver lost ({record.error or (message[-1] if message else 'no message')})"
        return _resubmit(entry, profile, record, reason)
    if job.status in (JobStatus.FAILED, JobStatus.STOPPED):
        state = RunState.STOPPED if job.status == JobStatus.STOPPED else RunState.FAILED
        return state, record.error or (message[-1] if message else "")
    if job.status == JobStatus.PENDING:
        slots = f"queued for one of the cluster's {profile.run_slots} run slots" if profile.run_slots else ""
        return RunState.PENDING, slots
    if record.state == RunState.FAILED:
        # The driver has recorded its failure and is still syncing its last files: whether the run is
        # over or goes on as a resubmission is decided once Ray says the job has ended.
        return RunState.RUNNING, f"failing: {record.error or ''}"
    return record.state or RunState.RUNNING, ""


# Backoff between asks when the dashboard answers 5xx (or a 4xx other than 404): ~30 s in all.
RETRY_WAITS_S = (1.0, 2.0, 4.0, 8.0, 15.0)
# A submit interrupted before Ray took the job: only Ray's own "no such job", this long after the submit
# began, counts as never accepted (a job Ray is still registering is not yet found).
NEVER_ACCEPTED_AFTER_S = 120.0


def job_info(client: Any, job_id: str, waits: tuple[float, ...] = RETRY_WAITS_S) -> tuple[Any, str | None]:
    """(Ray's JobInfo, None), or (None, None) only when Ray says it has no such job (HTTP 404), or
    (None, why) when the dashboard kept failing: no answer, which is not "no such job". Ray's client
    raises the same RuntimeError for all of them, with the status code in its message."""
    for attempt, wait in enumerate((*waits, None)):
        try:
            return client.get_job_info(job_id), None
        except RuntimeError as exc:
            text = str(exc)
            if "status code 404" in text:
                return None, None
            if wait is None:
                code = text.split("status code ", 1)[-1].split(":", 1)[0] if "status code " in text else "an error"
                return None, f"the cluster's dashboard answered {code} {attempt + 1} times"
            time.sleep(wait)
    return None, None


def listed_jobs(client: Any) -> dict[str, Any]:
    """Every job Ray knows, by submission id, in one request; empty when the listing fails (each run is
    then asked about on its own, with `job_info`'s retries)."""
    try:
        return {job.submission_id: job for job in client.list_jobs() if getattr(job, "submission_id", None)}
    except (RuntimeError, OSError):
        return {}


def status(entry: registry.Entry, profile: ClusterProfile, client: Any = None, store: Store | None = None,
           known: dict[str, Any] | None = None) -> Status:
    """Ask Ray and the store, reconcile, record the answer in the registry. For several runs, pass what
    they share: a jobs client (one connection, one SSH tunnel), the store (one boto3 client: ~0.5 s each
    to make) and `known`, Ray's jobs listed once (`listed_jobs`). `lathe status` of 20 active runs took
    110-150 s under load with a client, a store and two requests per object for each run."""
    from orchestrator.remote.connect import jobs_client

    if client is None:
        with jobs_client(profile) as opened:
            return status(entry, profile, opened, store, known)
    stored = StoredRun(store or open_store(profile.store), entry.run_id)
    record = stored.record()
    listed = (known or {}).get(entry.job_id)
    job, failing = (listed, None) if listed is not None else job_info(client, entry.job_id)
    if failing:  # no answer is not "no such job": the state stays, asked again next time
        point = stored.last_metrics() or {}
        return Status(entry.run_id, str(entry.state), f"{failing} (state unchanged)", point.get("step"),
                      point.get("max_steps"), point.get("loss"))
    if job is None and entry.state == RunState.SUBMITTING and time.time() - entry.created < NEVER_ACCEPTED_AFTER_S:
        state, detail = RunState.SUBMITTING, "not yet known to the cluster"
    else:
        state, detail = reconcile(entry, profile, job, record)
    current = registry.get(entry.run_id)
    if current is not None and current.job_id == entry.job_id:  # a resubmission has already recorded itself
        registry.update(entry.run_id, state, detail or "")
    point = stored.last_metrics() or {}
    return Status(entry.run_id, str(state), detail or "", point.get("step"), point.get("max_steps"),
                  point.get("loss"))


def stop(entry: registry.Entry, profile: ClusterProfile) -> bool:
    from orchestrator.remote.connect import jobs_client

    with jobs_client(profile) as client:
        stopped = client.stop_job(entry.job_id)
    registry.update(entry.run_id, RunState.STOPPED if stopped else entry.state)
    return stopped


def logs(entry: registry.Entry, profile: ClusterProfile, follow: bool, out: Any) -> None:
    import asyncio

    from orchestrator.remote.connect import jobs_client

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
        task = bar.add_task("run", total=None, state=RunState.PENDING.value, step="-", max_steps="?", loss="-")
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
            if is_terminal(st.state):
                return st
            time.sleep(poll_s)
