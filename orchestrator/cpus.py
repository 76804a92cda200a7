"""How many threads Lathe's own compute takes: torch in training and in making bases, llama.cpp in
export and evaluation.

One rule for all of them, because both runtimes' threads spin while they wait for each other, and
spinning threads that outnumber the cores burn what they wait for. Measured on 2 cores, two processes
side by side (a tiny Llama's training steps; SmolLM2's llama.cpp decode): with 2 threads each, 3.2x
and 2.8x the CPU time of 1 thread each, for the same work (docs/ENVIRONMENT.md).

`LATHE_THREADS` says how many cores this process may take: set it where Lathe shares the machine with
other compute (the test suite's two workers on two cores set 1 each). Without it, every core this
process may run on (its affinity: `taskset` is honoured, where `os.cpu_count` would not be).
"""

from __future__ import annotations

import os

ENV = "LATHE_THREADS"


def threads() -> int:
    """The cores this process's compute may take."""
    fixed = os.environ.get(ENV, "").strip()
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no affinity
        return max(1, os.cpu_count() or 1)


def per_worker(workers: int) -> int:
    """Each of `workers` processes' share when they compute side by side on this machine."""
    return max(1, threads() // max(workers, 1))


def as_reserved(reserved: float) -> int:
    """Threads for a process the scheduler reserved `reserved` CPUs for: that many, never more than
    this machine lets it take (`LATHE_THREADS`, the affinity)."""
    return max(1, min(int(reserved or 1), threads()))
