"""`lathe run --cluster`: the remote twin of `orchestrator.local`. Submit, follow until the run ends,
pull its artifacts; the caller evaluates them as it does a local run's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator import profiles, registry
from orchestrator.errors import LatheError
from orchestrator.remote.pull import PullStats, pull
from orchestrator.remote.status import follow
from orchestrator.remote.submit import SubmitOptions, submit
from orchestrator.run.layout import RunDir
from orchestrator.run.state import RunState
from orchestrator.store import open_store
from orchestrator.validate import validate


@dataclass
class RemoteRun:
    run: RunDir
    pulled: PullStats | None  # None when export was off: nothing to pull


def run_remote(recipe_path: Path, cluster: str, runs_root: Path, options: SubmitOptions,
               on_submitted: Callable[[str], None], pull_progress: Callable[[int, int], None] | None = None,
               ) -> RemoteRun:
    recipe = validate(recipe_path, axolotl_schema=False)
    profile = profiles.get(cluster)
    done = submit(recipe, profile, options)
    on_submitted(done.run_id)
    entry = registry.get(done.run_id)
    assert entry is not None  # submit() recorded it
    final = follow(entry, profile)
    if final.state != RunState.SUCCEEDED:
        detail = f": {final.detail}" if final.detail else ""
        raise LatheError(f"{done.run_id}: {final.state}{detail}")
    if not options.export:
        return RemoteRun(RunDir(runs_root / done.run_id), None)
    stats = pull(open_store(profile.store), done.run_id, runs_root, progress=pull_progress)
    return RemoteRun(RunDir(runs_root / done.run_id), stats)
