"""The cores Lathe's compute takes: LATHE_THREADS, else the process's affinity; a Ray worker no more
than it reserved."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator import cpus


def test_the_override_wins_and_nonsense_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpus.ENV, "3")
    assert cpus.threads() == 3
    assert cpus.per_worker(2) == 1 and cpus.per_worker(1) == 3
    monkeypatch.setenv(cpus.ENV, "0")
    assert cpus.threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(cpus.ENV, "many")
    assert cpus.threads() == len(os.sched_getaffinity(0))


def test_a_reserved_worker_takes_what_it_reserved_and_no_more_than_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cpus.ENV, "2")
    assert cpus.as_reserved(1) == 1
    assert cpus.as_reserved(1.0) == 1
    assert cpus.as_reserved(8) == 2, "a reservation larger than the cores this process may take"
    assert cpus.as_reserved(0) == 1


def test_a_process_pinned_to_one_core_takes_one() -> None:
    """`taskset` (util-linux, on every Debian) narrows what the process may run on; os.cpu_count would not see it."""
    env = {k: v for k, v in os.environ.items() if k != cpus.ENV}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", "from orchestrator import cpus; print(cpus.threads())"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "1"
