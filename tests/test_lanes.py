"""Evaluation lanes: a level's peak memory stays its own in a reused process, and the lane count
respects the machine (cores, memory, LATHE_EVAL_LANES). The lanes' results against one level at a
time are compared on the quickstart by the e2e tests (answers identical across venvs and lanes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.evaluation import lanes

# A process that held 200 MB, freed it, and reset its peak: the peak after the reset is its own again.
PROBE = """
import json
from orchestrator.evaluation import lanes
before = lanes.peak_rss_bytes()
held = [bytearray(1 << 20) for _ in range(200)]
for block in held:
    block[::4096] = b"x" * len(block[::4096])
grown = lanes.peak_rss_bytes()
del held, block
lanes.reset_peak()
after_reset = lanes.peak_rss_bytes()
again = bytearray(50 << 20); again[::4096] = b"y" * len(again[::4096])
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
