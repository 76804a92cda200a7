"""Training wall time: `lathe run` (local Ray, Ray Train around Axolotl) against plain `axolotl train`.

Same recipe, same machine, one after the other in this invocation. Prints both, the ratios beside
the goals (wall within 1.3x, training loop within 1.05x), and where `lathe run`'s time went
(run.timeline: Ray's start, the worker group's start, Axolotl's set-up, the loop, the hand-back,
the export). Asserts nothing.

    .venv/bin/python bench/train_overhead.py [RECIPE] [--runs-dir DIR]

--runs-dir keeps the run (exported, not evaluated) for bench/eval_speed.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.base_model import resolve as resolve_base_model
from orchestrator.recipe import for_cpu
from orchestrator.run import timeline
from orchestrator.run.layout import RunDir
from orchestrator.validate import axolotl_config, validate

BIN = Path(sys.executable).parent
WALL_GOAL, LOOP_GOAL = 1.3, 1.05


def plain_axolotl(recipe: Path, work: Path) -> tuple[float, float | None]:
    """`axolotl train` on the config Lathe would hand its workers (made CPU-safe the same way)."""
    cfg, _ = for_cpu(axolotl_config(validate(recipe)))
    cfg["base_model"] = resolve_base_model(cfg["base_model"])
    for ds in cfg.get("datasets") or []:
        if isinstance(ds.get("path"), str) and not Path(ds["path"]).is_absolute():
            ds["path"] = str(recipe.parent / ds["path"])
    cfg.update(output_dir=str(work / "out"), dataset_prepared_path=str(work / "prepared"))
    path = work / "axolotl.yml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "true"}
    start = time.perf_counter()
    out = subprocess.run([str(BIN / "python"), "-m", "axolotl.cli.train", str(path)], env=env, cwd=work,
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"axolotl train failed:\n{(out.stdout + out.stderr)[-3000:]}")
    m = re.search(r"'train_runtime': '?([0-9.]+)", out.stdout + out.stderr)
    return wall, float(m.group(1)) if m else None


def lathe_run(recipe: Path, runs: Path) -> tuple[float, RunDir]:
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "lathe"), "run", str(recipe), "--runs-dir", str(runs), "--no-eval"],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"lathe run failed:\n{done.stderr[-3000:]}")
    run = max((p for p in runs.iterdir() if (p / "run.json").is_file()), key=lambda p: p.stat().st_mtime)
    return wall, RunDir(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default=str(REPO / "recipes" / "quickstart.yml"))
    parser.add_argument("--runs-dir", help="keep the lathe run here (for bench/eval_speed.py)")
    args = parser.parse_args()
    recipe = Path(args.recipe).resolve()
    resolve_base_model(validate(recipe, axolotl_schema=False).axolotl["base_model"])  # built once, outside timing
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="lathe-bench-runs-"))
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        ax_wall, ax_loop = plain_axolotl(recipe, Path(work))
    la_wall, run = lathe_run(recipe, runs)
    spans = {p.name: p.seconds for p in timeline.phases(run)}
    la_train = sum(s for name, s in spans.items() if name not in ("export", "evaluate"))
    la_loop = spans.get("training loop")

    print(f"recipe: {recipe.name} ({os.cpu_count()} cores)")
    print(f"{'':34}{'wall s':>9}{'loop s':>9}")
    print(f"{'axolotl train':34}{ax_wall:>9.1f}{(ax_loop or float('nan')):>9.1f}")
    print(f"{'lathe run, to the trained model':34}{la_train:>9.1f}{(la_loop or float('nan')):>9.1f}")
    print(f"ratio lathe/axolotl, wall to the trained model: {la_train / ax_wall:.2f}x (goal <= {WALL_GOAL}x)")
    if ax_loop and la_loop:
        print(f"ratio lathe/axolotl, training loop: {la_loop / ax_loop:.2f}x (goal <= {LOOP_GOAL}x)")
    print("where lathe run's time went:")
    for name, seconds in spans.items():
        print(f"  {name:32}{seconds:>7.1f} s")
    print(f"  {'lathe run, whole command':32}{la_wall:>7.1f} s  (validate, train, export; no eval)")
    if args.runs_dir:
        print(f"run kept: {run.path}")


if __name__ == "__main__":
    main()
