"""How the suite is spread over pytest-xdist's workers, and where its time went.

Each test module is one group, run by one worker: its module-scoped fixtures (a netns cluster and
the runs made on it) are made once. What several modules share, the end-to-end `lathe run` and the
monitoring it pushes to, is made once per test run by the suite-wide registry (tests/support/shared.py)
and inspected from either worker. The groups are handed out in an order that keeps both cores busy
to the end: the two netns cluster modules first (the longest; much of their time is spent waiting on
Ray and on retries, which the other worker fills), then one module that makes the end-to-end run,
then the modules that do not need it (while it is made), then the other modules that inspect it.

xdist's own `xdist_group` mark does not group under pytest 9.2 (xdist 3.8 renames `item._nodeid`,
which pytest 9.2 no longer reads), so `GroupScheduling` does the grouping: each worker writes the
groups it collected beside its base temp, and the controller's scheduler reads them.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

CLUSTERS = ("tests/test_cluster.py", "tests/test_remote.py")  # handed out first, in this order
MAKES_THE_RUN = "tests/test_eval.py"  # the first module that needs the end-to-end run
GROUPS = "xdist-groups.json"  # beside the workers' base temps: their parent is the controller's


def uses_the_e2e_run(item: pytest.Item) -> bool:
    return "e2e_cli" in getattr(item, "fixturenames", ())


def fast(item: pytest.Item) -> bool:
    """In `make test-fast`: not slow (or one of the few slow tests marked inner_loop), and not one of
    the inspections of the end-to-end run (it costs minutes to make)."""
    if uses_the_e2e_run(item):
        return False
    return item.get_closest_marker("inner_loop") is not None or item.get_closest_marker("slow") is None


def group_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def group_and_order(items: list[pytest.Item], factory: pytest.TempPathFactory) -> None:
    """Put the groups in the order the module docstring gives (a stable sort: within a group, tests
    keep the order they are written in) and, in an xdist worker, write down each test's group for
    the controller."""
    inspects = {group_of(item) for item in items if uses_the_e2e_run(item)}

    def rank(item: pytest.Item) -> int:
        group = group_of(item)
        if group in CLUSTERS:
            return CLUSTERS.index(group)
        if group == MAKES_THE_RUN:
            return 2
        return 4 if group in inspects else 3

    items.sort(key=rank)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = factory.getbasetemp().parent / GROUPS
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(json.dumps({item.nodeid: group_of(item) for item in items}))
        os.replace(staging, path)  # every worker collects the same tests: the last write is as good as any


def make_scheduler(config: pytest.Config, log):
    """xdist's load-scope scheduling with our groups as the scopes, handed out in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def schedule(self) -> None:
            if self.groups is None:  # every worker has collected by now: the file is there
                base = config._tmp_path_factory.getbasetemp()  # the workers' base temps are under it
                self.groups = json.loads((base / GROUPS).read_text())
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            return (self.groups or {}).get(nodeid, nodeid)

    config.option.loadscopereorder = False  # keep the order above, not the most tests first
    return GroupScheduling(config, log)


@dataclass
class Timings:
    """Each test's setup + call + teardown (a shared fixture's cost lands on the first test that asks
    for it), and the run's wall time."""

    started: float = field(default_factory=time.monotonic)
    tests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    workers: set[str] = field(default_factory=set)

    def add(self, report: pytest.TestReport) -> None:
        self.tests[report.nodeid] += report.duration
        node = getattr(report, "node", None)  # the xdist worker it came from, in xdist's controller
        self.workers.add(node.gateway.id if node is not None else "main")

    def summary(self, slowest: int) -> list[str]:
        ranked = sorted(self.tests.items(), key=lambda kv: -kv[1])
        lines = [f"{seconds:8.1f} s  {nodeid}" for nodeid, seconds in ranked[:slowest]]
        wall, busy = time.monotonic() - self.started, sum(self.tests.values())
        lines.append(f"total: {len(self.tests)} tests, {busy / 60:.1f} min of test time in {wall / 60:.1f} min "
                     f"wall on {len(self.workers)} worker(s)")
        return lines
