"""The run's log files (metrics.jsonl, events.jsonl), written on the driver's node.

Training workers may sit on other hosts, so they never write the run directory
themselves: they send lines to a small Ray actor pinned to the driver's node,
which appends them. Calls from one worker reach the actor in order, so each
worker's lines stay in sequence.

A worker sends what it wrote at most every `SEND_EVERY_S` (a timer sends the rest), not a call per
line: an actor call per logged step cost the quickstart's loop 16 ms a step on 2 cores, 1.3x bare
Axolotl's loop (`bench/train_overhead.py`).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

ACTOR_PREFIX = "lathe-runlog-"
NAMESPACE = "lathe"
SEND_EVERY_S = 1.0


class RunLog:
    def __init__(self, run_dir: str) -> None:
        self.run_dir = Path(run_dir)

    def append(self, name: str, lines: list[str]) -> None:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad log name {name!r}")
        with (self.run_dir / name).open("a", encoding="utf-8") as fh:
            fh.writelines(line.rstrip("\n") + "\n" for line in lines)


def start(run_id: str, run_dir: Path) -> Any:
    """Create the run's log actor on this node; keep the handle alive for the run's lifetime."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0)(RunLog).options(
        name=ACTOR_PREFIX + run_id, namespace=NAMESPACE,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(str(run_dir))
    ray.get(actor.__ray_ready__.remote())
    return actor


class Writer:
    """What a worker holds: append JSON records or lines to the run's log files, sent in batches."""

    def __init__(self, run_id: str, actor: Any = None) -> None:
        import ray

        self.actor = actor or ray.get_actor(ACTOR_PREFIX + run_id, namespace=NAMESPACE)
        self._last: Any = None
        self._pending: dict[str, list[str]] = {}
        self._sent = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def write(self, name: str, record: dict[str, Any]) -> None:
        self.line(name, json.dumps(record))

    def event(self, name: str, **fields: Any) -> None:
        """A line in the run's events.jsonl: the time, the event's name, its fields."""
        from orchestrator.run.layout import EVENTS

        self.write(EVENTS, {"time": round(time.time(), 3), "event": name, **fields})

    def line(self, name: str, text: str) -> None:
        with self._lock:
            self._pending.setdefault(name, []).append(text)
            wait = self._sent + SEND_EVERY_S - time.monotonic()
            if wait <= 0:
                self._send()
            elif self._timer is None:  # the rest goes out when the interval is up, even if nothing follows
                self._timer = threading.Timer(wait, self._send_later)
                self._timer.daemon = True
                self._timer.start()

    def _send_later(self) -> None:
        with self._lock:
            self._timer = None
            self._send()

    def _send(self) -> None:
        """Under the lock: one call per file with everything pending (calls from here stay in order)."""
        for name, lines in self._pending.items():
            self._last = self.actor.append.remote(name, lines)
        self._pending = {}
        self._sent = time.monotonic()

    def flush(self) -> None:
        """Send what is pending and wait until every line sent is written."""
        import ray

        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._send()
            last = self._last
        if last is not None:
            ray.get(last)
