"""The run's log files (metrics.jsonl, events.jsonl), written on the driver's node.

Training workers may sit on other hosts, so they never write the run directory
themselves: they send lines to a small Ray actor pinned to the driver's node,
which appends them. Calls from one worker reach the actor in order, so each
worker's lines stay in sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ACTOR_PREFIX = "lathe-runlog-"
NAMESPACE = "lathe"


class RunLog:
    def __init__(self, run_dir: str) -> None:
        self.run_dir = Path(run_dir)

    def append(self, name: str, line: str) -> None:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad log name {name!r}")
        with (self.run_dir / name).open("a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")


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
    """What a worker holds: append JSON records to one of the run's log files."""

    def __init__(self, run_id: str) -> None:
        import ray

        self.actor = ray.get_actor(ACTOR_PREFIX + run_id, namespace=NAMESPACE)
        self._last: Any = None

    def write(self, name: str, record: dict[str, Any]) -> None:
        self._last = self.actor.append.remote(name, json.dumps(record))

    def line(self, name: str, text: str) -> None:
        self._last = self.actor.append.remote(name, text)

    def flush(self) -> None:
        import ray

        if self._last is not None:
            ray.get(self._last)
