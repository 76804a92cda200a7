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
        """A run file's bytes, or None when the store has no such object."""
        return self.store.get_bytes(self.key(name)) if self.store.stat(self.key(name)) else None

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
