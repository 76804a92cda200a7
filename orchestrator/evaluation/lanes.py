"""Where levels are evaluated: a few worker processes ("lanes"), each taking levels one after another.

A process per level paid its runtime's import for every level (mlx_lm brings in transformers:
about 6 s in a large environment). A lane imports once. On a machine with cores to spare, lanes
run side by side: MLX's CPU backend computes on one thread, and llama.cpp gets the cores divided
among the lanes. Two numbers stay each level's own:

- peak memory: before a level loads, the lane's high-water mark is reset (Linux's
  /proc/self/clear_refs), after the previous level's memory was released. Where it cannot be reset,
  each level gets a fresh process, one at a time, as a process per level did;
- load time and tokens/s: measured afterwards, one level at a time, with nothing else running and
  llama.cpp on every core (`alone`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import resource
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Self

from orchestrator import cpus

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MEMORY_SHARE = 0.5  # of physical memory, for the levels that are loaded at the same time
ENV_LANES = "LATHE_EVAL_LANES"  # a fixed number of lanes (1: one level at a time)


def rss_bytes() -> int:
    """This process's resident memory now: from /proc on Linux, from psutil elsewhere (macOS has no
    /proc; without a baseline the level was charged the runtime's own memory too)."""
    found = re.search(r"^VmRSS:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE) if STATUS.is_file() else None
    if found:
        return int(found.group(1)) * 1024
    try:
        import psutil  # Ray's dependency: on every laptop Lathe runs on

        return int(psutil.Process().memory_info().rss)
    except (ImportError, OSError):
        return 0


def mlx_peak_bytes() -> int:
    """MLX's own high-water mark of its allocations since `reset_peak` (0 without MLX loaded). On Apple
    Silicon the weights live in Metal buffers that the resident-memory counters may not show at all;
    on Linux (CPU) they are inside the resident memory as well."""
    mx = sys.modules.get("mlx.core")
    return int(mx.get_peak_memory()) if mx is not None else 0


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started or since `reset_peak`. On Linux from /proc
    (VmHWM): getrusage's ru_maxrss keeps the high-water mark across fork and exec, so a fresh process
    would report its parent's (the `lathe run` driver's) peak. Elsewhere ru_maxrss: bytes on macOS,
    kilobytes on other systems."""
    if STATUS.is_file():
        found = re.search(r"^VmHWM:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
        if found:
            return int(found.group(1)) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_resettable() -> bool:
    return CLEAR_REFS.exists() and STATUS.is_file()


def _trim_heap() -> None:
    """Hand the C heap's free pages back (glibc's malloc_trim). Without it the previous level's freed
    memory stays resident, the next level's allocations reuse it without raising the peak, and that
    level is charged too little."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: nothing to trim this way


def reset_peak() -> None:
    """Release what the previous level left behind, then start the high-water mark from here."""
    gc.collect()
    if "mlx.core" in sys.modules:
        sys.modules["mlx.core"].clear_cache()  # MLX keeps freed buffers for reuse
        sys.modules["mlx.core"].reset_peak_memory()
    _trim_heap()
    if peak_resettable():
        CLEAR_REFS.write_text("5")  # "5": reset the peak resident set size (proc(5))


def _keep_torch_out() -> None:
    """In an evaluation process: torch is not importable. mlx_lm imports transformers, which imports
    torch whenever it is installed (a node's venv has it): tens of seconds and a GB per level that a
    user's laptop would not spend, measured as the level's own load time and memory. A None entry in
    sys.modules makes importlib report torch absent, so transformers goes on without it."""
    sys.modules["torch"] = None  # type: ignore[assignment]


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def count(memory_needs: Sequence[int]) -> int:
    """How many lanes: one per core, no more than there are levels, and no more than the largest levels
    that fit in half the machine's memory together (a 16 GB laptop evaluating an 8B model gets one)."""
    fixed = os.environ.get(ENV_LANES, "").strip()
    if fixed.isdigit() and int(fixed) > 0:
        wanted = int(fixed)
    else:
        wanted = cpus.threads()
    if not peak_resettable():
        return 1
    budget, fitting, used = physical_memory() * MEMORY_SHARE, 0, 0
    for need in sorted(memory_needs, reverse=True):
        used += need
        if budget and used > budget:
            break
        fitting += 1
    return max(1, min(wanted, len(memory_needs), fitting))


class Lanes:
    """`count` worker processes (spawned: no state inherited from the driver, torch kept out)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        # Without a resettable peak a lane cannot tell one level's memory from the last's: a fresh process each.
        fresh = None if peak_resettable() else 1
        self.pool = ProcessPoolExecutor(max_workers=lanes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_keep_torch_out, max_tasks_per_child=fresh)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def threads(self) -> int:
        """llama.cpp threads per level while lanes run side by side."""
        return cpus.per_worker(self.lanes)

    def run_all(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]],
                finished: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Every call, in submission order across the lanes (submit the longest first); results in the
        calls' order. `finished(index, result)` as each one completes."""
        futures: dict[Future[Any], int] = {self.pool.submit(fn, *args): n for n, (fn, args) in enumerate(calls)}
        results: list[Any] = [None] * len(calls)
        for fut in as_completed(futures):
            n = futures[fut]
            results[n] = fut.result()
            if finished:
                finished(n, results[n])
        return results

    def alone(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One call with nothing else in flight on any lane."""
        return self.pool.submit(fn, *args).result()
