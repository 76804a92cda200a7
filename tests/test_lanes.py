"""Evaluation lanes: a level's peak memory stays its own in a reused process, and the lane count
respects the machine (cores, memory, LATHE_EVAL_LANES). The lanes' results against one level at a
time are compared on the quickstart by the e2e tests (answers identical across venvs and lanes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.evaluation import lanes

# A process that held 200 MB on the C heap (64 KB blocks: below glibc's mmap threshold, so malloc's heap,
# not mmapped chunks that munmap hands back by themselves), freed it below a block still held (so free()
# cannot trim the heap's top either), and reset its peak: the peak after the reset is its own again, and
# the next 50 MB, which would reuse the freed heap without raising the peak, counts. With 1 MB blocks
# (mmapped) this passed even without the heap trim; with these it fails without it (200 MB still
# resident after the reset, the next 50 MB invisible).
PROBE = """
import json
from orchestrator.evaluation import lanes
before = lanes.peak_rss_bytes()
held = [bytearray(64 << 10) for _ in range(3200)]
for block in held:
    block[::4096] = b"x" * len(block[::4096])
pin = bytearray(64 << 10)
grown = lanes.peak_rss_bytes()
del held, block
lanes.reset_peak()
after_reset = lanes.peak_rss_bytes()
again = [bytearray(64 << 10) for _ in range(800)]
for block in again:
    block[::4096] = b"y" * len(block[::4096])
print(json.dumps({"before": before, "grown": grown, "after_reset": after_reset, "second": lanes.peak_rss_bytes()}))
"""


@pytest.mark.skipif(not lanes.peak_resettable(), reason="Linux-only: /proc/self/clear_refs")
def test_a_reused_process_charges_each_level_its_own_peak() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    assert m["grown"] - m["before"] > 190e6
    # Freed and handed back (malloc_trim), then reset: the 200 MB no longer counts...
    assert m["after_reset"] < m["grown"] - 150e6, m
    # ...and the next 50 MB does, in full: neither hidden in the freed heap nor lost.
    assert m["second"] - m["after_reset"] > 45e6, m


def test_lanes_follow_cores_levels_memory_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lanes.ENV_LANES, raising=False)
    monkeypatch.setenv("LATHE_THREADS", "8")  # the cores this process may take (orchestrator/cpus.py)
    monkeypatch.setattr(lanes, "peak_resettable", lambda: True)
    monkeypatch.setattr(lanes, "physical_memory", lambda: 16 << 30)
    assert lanes.count([10 << 20] * 3) == 3, "no more lanes than levels"
    assert lanes.count([10 << 20] * 20) == 8, "no more lanes than cores"
    # A 16 GB laptop and 8B-model levels (~5-9 GB each): only one fits in half the memory at a time.
    assert lanes.count([9 << 30, 6 << 30, 5 << 30]) == 1
    assert lanes.count([3 << 30, 3 << 30, 3 << 30]) == 2
    monkeypatch.setenv(lanes.ENV_LANES, "1")
    assert lanes.count([10 << 20] * 20) == 1
    monkeypatch.delenv(lanes.ENV_LANES)
    monkeypatch.setattr(lanes, "peak_resettable", lambda: False)
    assert lanes.count([10 << 20] * 20) == 1, "a peak that cannot be reset: a fresh process per level"


def test_memory_without_proc_and_mlx_s_own_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS has no /proc: the baseline came out 0 and the level was charged the runtime's memory too.
    MLX's Metal buffers may not show in resident memory there, so its own counter is a floor. (Run here
    on Linux with /proc hidden; on a Mac itself this is untested: docs/evaluation.md.)"""
    import mlx.core as mx

    here = lanes.rss_bytes()
    monkeypatch.setattr(lanes, "STATUS", Path("/nonexistent/status"))
    assert lanes.rss_bytes() == pytest.approx(here, rel=0.2), "psutil's resident memory where /proc is absent"
    lanes.reset_peak()
    block = mx.zeros((25_000_000,), dtype=mx.float32)  # 100 MB in MLX's allocator
    mx.eval(block)
    assert lanes.mlx_peak_bytes() >= 100_000_000
    del block
    lanes.reset_peak()
    assert lanes.mlx_peak_bytes() < 1_000_000, "reset with the level: the next one starts from zero"
