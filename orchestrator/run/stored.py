"""A run as the store holds it: its record and metrics, read the same way by the job, `status`,
`pull` and `watch`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.run.layout import METRICS, RUN_JSON, RunRecord, parse_jsonl, store_key
from orchestrator.store import Store


@dataclass
class StoredRun:
    store: Store
    run_id: str

    def key(self, *parts: str) -> str:
        return store_key(self.run_id, *parts)

    def read(self, name: str) -> bytes | None:
        """A run file's bytes, or None when the store has no such object (one request, not a stat first:
        `lathe status` reads two files per active run)."""
        from orchestrator.errors import StoreError

        try:
            return self.store.get_bytes(self.key(name))
        except StoreError:
            return None

    def fetch(self, name: str, local: Path) -> bool:
        """A run file streamed to `local` (never whole in memory), under a temporary name until it is all
        there; False when the store has no such object."""
        if not self.store.stat(self.key(name)):
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        staging = local.with_name(f".{local.name}.{os.getpid()}.fetch")
        try:
            self.store.get_file(self.key(name), staging)
            os.replace(staging, local)
        finally:
            staging.unlink(missing_ok=True)
        return True

    def record(self) -> RunRecord:
        return RunRecord.parse(self.read(RUN_JSON))

    def metrics(self) -> list[dict[str, Any]]:
        raw = self.read(METRICS)
        return parse_jsonl(raw.decode("utf-8", errors="replace")) if raw else []

    def last_metrics(self) -> dict[str, Any] | None:
        points = self.metrics()
        return points[-1] if points else None


def stored_runs(store: Store) -> list[str]:
    """The run ids a store holds (a folder with a run.json): what another laptop can pull by id."""
    return [name for name in store.folders() if store.stat(store_key(name, RUN_JSON))]


def find_stored(store: Store, run_id: str) -> str:
    """A run id in the store, exactly or by a unique prefix; LatheError naming what it has otherwise."""
    from orchestrator.errors import LatheError

    if store.stat(store_key(run_id, RUN_JSON)):
        return run_id
    runs = stored_runs(store)
    matches = [name for name in runs if name.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    said = "matches several runs" if matches else "is not in the store"
    raise LatheError(f"run {run_id!r} {said} ({store.uri}); it has {len(runs)} run(s): see `lathe runs --cluster`")
