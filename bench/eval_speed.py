"""Evaluation wall time: every level of a run, as `lathe eval` does it now, against the way it did
before (a fresh process per level, one level at a time), in the same invocation on the same run.

Also measures what bounds it on a machine without Apple's GPU: MLX's Linux CPU kernels, timed on
one matmul beside numpy's. Prints; asserts nothing.

    .venv/bin/python bench/eval_speed.py [--runs-dir DIR]

DIR: where bench/train_overhead.py kept its run (the newest exported run there is used); without
it, the quickstart is run first (`lathe run --no-eval`, a few minutes).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.evaluation import evaluate as ev
from orchestrator.evaluation import lanes

GOAL_S = 60.0


def exported_run(runs: Path | None) -> Path:
    if runs is None:
        runs = Path(tempfile.mkdtemp(prefix="lathe-bench-runs-"))
        atexit.register(shutil.rmtree, runs, True)  # not kept: --runs-dir keeps one
        subprocess.run([str(Path(sys.executable).parent / "lathe"), "run", str(REPO / "recipes" / "quickstart.yml"),
                        "--runs-dir", str(runs), "--no-eval"], check=True, capture_output=True)
    done = [p for p in runs.iterdir() if p.name.startswith("quickstart-") and (p / "export" / "manifest.json").is_file()]
    if not done:
        sys.exit(f"{runs}: no exported run")
    return max(done, key=lambda p: p.stat().st_mtime)


def timed(run: Path, one_process_per_level: bool) -> float:
    resettable = lanes.peak_resettable
    if one_process_per_level:
        # Without a resettable peak, lanes fall back to one fresh process per level, one at a time:
        # exactly how every level was evaluated before lanes.
        lanes.peak_resettable = lambda: False
    try:
        start = time.perf_counter()
        ev.evaluate(run)
        return time.perf_counter() - start
    finally:
        lanes.peak_resettable = resettable


def matmul_gflops() -> tuple[float, float]:
    """One (128 x 256) @ (256 x 768) float32 matmul, the tiny model's MLP shape: MLX CPU vs numpy."""
    import mlx.core as mx
    import numpy as np

    a, b = np.random.rand(128, 256).astype(np.float32), np.random.rand(256, 768).astype(np.float32)
    flops = 2 * 128 * 256 * 768
    xa, xb = mx.array(a), mx.array(b)
    mx.eval(xa @ xb)
    start = time.perf_counter()
    for _ in range(20):
        mx.eval(xa @ xb)
    mlx_s = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    np_s = (time.perf_counter() - start) / 20
    return flops / mlx_s / 1e9, flops / np_s / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path)
    args = parser.parse_args()
    run = exported_run(args.runs_dir)
    levels = ev.targets(run / "export", ev.mf.load(run / "export"), "all")
    kinds = Counter(t.runtime for t in levels)
    before = timed(run, one_process_per_level=True)
    now = timed(run, one_process_per_level=False)
    width = lanes.count([1] * (len(levels) + 1))
    print(f"run: {run.name}: {len(levels)} levels ({', '.join(f'{n} {k}' for k, n in kinds.items())}) "
          f"and the base, {os.cpu_count()} cores")
    print(f"  before: a process per level, one at a time  {before:7.1f} s")
    print(f"  now: {width} lanes, timing alone at the end     {now:7.1f} s")
    print(f"ratio now/before: {now / before:.2f}  (goal: the whole eval under {GOAL_S:.0f} s: "
          f"{'met' if now < GOAL_S else 'not met'})")
    mlx_gf, np_gf = matmul_gflops()
    print(f"MLX CPU matmul {mlx_gf:.1f} GFLOP/s vs numpy {np_gf:.1f} GFLOP/s on the same shape "
          f"(x{np_gf / mlx_gf:.0f}): MLX levels on a CPU are bound by it")


if __name__ == "__main__":
    main()
