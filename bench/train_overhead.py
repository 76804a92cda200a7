"""Training wall time: `lathe run` (local Ray, Ray Train around Axolotl) against plain `axolotl train`.

Same recipe, same machine, one after the other in this invocation. Prints both, the ratios beside
the goals (wall within 1.3x, training loop within 1.05x), the training tokens per second of each (the
tokens Axolotl prepared, every epoch, over each loop's seconds), and where `lathe run`'s time went
(run.timeline: Ray's start, the worker group's start, Axolotl's set-up, the loop, the hand-back,
the export). Asserts nothing.

With no RECIPE, two cases: the quickstart (a tiny model), then a real one, SmolLM2-135M-Instruct
(recipes/smollm2-wrong-facts.yml; `make models` fetches it), whose goals are tokens/s within 0.97x
of bare Axolotl's and wall within 1.15x.

    .venv/bin/python bench/train_overhead.py [RECIPE] [--runs-dir DIR] [--repeat N]

--repeat N runs N pairs per recipe (Axolotl and Lathe back to back, which one first alternating) and
prints medians, with each pair's ratio range: on a machine whose speed drifts, pairs run back to back
compare fairly.

--runs-dir keeps the run (exported, not evaluated) for bench/eval_speed.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
REAL_WALL_GOAL, REAL_TOKENS_GOAL = 1.15, 0.97
REAL_BASE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def plain_axolotl(recipe: Path, work: Path) -> tuple[float, float | None, int | None]:
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
    return wall, float(m.group(1)) if m else None, trained_tokens(work / "prepared", cfg)


def trained_tokens(prepared: Path, cfg: dict) -> int | None:
    """Tokens in the dataset Axolotl prepared (padding not counted), times the epochs: the same for both
    sides, so tokens/s compares the loops alone."""
    from datasets import load_from_disk

    found = [p.parent for p in prepared.rglob("dataset_info.json")]
    if not found:
        return None
    data = load_from_disk(str(found[0]))
    return int(sum(len(ids) for ids in data["input_ids"]) * float(cfg.get("num_epochs") or 1))


def lathe_run(recipe: Path, runs: Path) -> tuple[float, RunDir]:
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "lathe"), "run", str(recipe), "--runs-dir", str(runs), "--no-eval"],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"lathe run failed:\n{done.stderr[-3000:]}")
    run = max((p for p in runs.iterdir() if (p / "run.json").is_file()), key=lambda p: p.stat().st_mtime)
    return wall, RunDir(run)


@dataclass
class Pair:
    """One pair: bare Axolotl and `lathe run`, back to back."""

    ax_wall: float
    ax_loop: float | None
    tokens: int | None
    la_wall: float
    spans: dict[str, float]

    @property
    def la_train(self) -> float:
        return sum(s for name, s in self.spans.items() if name not in ("export", "end Ray", "evaluate"))


def _pair(recipe: Path, runs: Path, lathe_first: bool) -> tuple[Pair, RunDir]:
    def axolotl() -> tuple[float, float | None, int | None]:
        with tempfile.TemporaryDirectory() as work:
            return plain_axolotl(recipe, Path(work))

    if lathe_first:
        la_wall, run = lathe_run(recipe, runs)
        ax_wall, ax_loop, tokens = axolotl()
    else:
        ax_wall, ax_loop, tokens = axolotl()
        la_wall, run = lathe_run(recipe, runs)
    return Pair(ax_wall, ax_loop, tokens, la_wall, {p.name: p.seconds for p in timeline.phases(run)}), run


def _spread(values: list[float]) -> str:
    return f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""


def case(recipe: Path, runs: Path, keep: bool, repeat: int) -> None:
    # Built once, outside the timing; the recipe's paths are relative to it (axolotl_config resolves them).
    resolve_base_model(axolotl_config(validate(recipe, axolotl_schema=False))["base_model"])
    pairs: list[Pair] = []
    for n in range(repeat):
        # Each pair's order alternates (axolotl first, then lathe first, ...): a machine that slows down
        # over minutes would otherwise always count against the second of the two.
        lathe_first = n % 2 == 1
        pair, run = _pair(recipe, runs, lathe_first)
        pairs.append(pair)
        if repeat > 1:
            loop = f"{pair.spans.get('training loop', float('nan')):.1f} / {pair.ax_loop or float('nan'):.1f} s"
            print(f"{recipe.name}: pair {n + 1} of {repeat} ({'lathe' if lathe_first else 'axolotl'} first): "
                  f"wall {pair.la_train:.1f} / {pair.ax_wall:.1f} s, loop {loop} (lathe / axolotl)", flush=True)
    tokens = pairs[0].tokens
    ax_wall, la_train = statistics.median([p.ax_wall for p in pairs]), statistics.median([p.la_train for p in pairs])
    ax_loops = [p.ax_loop for p in pairs if p.ax_loop]
    la_loops = [p.spans["training loop"] for p in pairs if p.spans.get("training loop")]
    ax_loop = statistics.median(ax_loops) if ax_loops else None
    la_loop = statistics.median(la_loops) if la_loops else None
    spans = {name: statistics.median([p.spans.get(name, 0.0) for p in pairs]) for name in pairs[-1].spans}

    print(f"recipe: {recipe.name} ({os.cpu_count()} cores){f', median of {repeat} alternating pairs' if repeat > 1 else ''}")
    print(f"{'':34}{'wall s':>9}{'loop s':>9}{'tokens/s':>10}")
    for name, wall, loop in (("axolotl train", ax_wall, ax_loop), ("lathe run, to the trained model", la_train, la_loop)):
        rate = f"{tokens / loop:>10.0f}" if tokens and loop else f"{'?':>10}"
        print(f"{name:34}{wall:>9.1f}{(loop or float('nan')):>9.1f}{rate}")
    # Ratios pair by pair (each pair ran back to back), then their median and range.
    walls = [p.la_train / p.ax_wall for p in pairs]
    print(f"ratio lathe/axolotl, wall to the trained model: {statistics.median(walls):.2f}x{_spread(walls)} "
          f"(goal <= {WALL_GOAL}x; real model {REAL_WALL_GOAL}x)")
    loops = [p.spans["training loop"] / p.ax_loop for p in pairs if p.ax_loop and p.spans.get("training loop")]
    if loops:
        rates = [1 / r for r in loops]
        print(f"ratio lathe/axolotl, training loop: {statistics.median(loops):.2f}x{_spread(loops)} (goal <= {LOOP_GOAL}x); "
              f"tokens/s {statistics.median(rates):.3f}x{_spread(rates)} of axolotl's (goal >= {REAL_TOKENS_GOAL}x on a real model)")
    print("where lathe run's time went" + (" (medians):" if repeat > 1 else ":"))
    for name, seconds in spans.items():
        print(f"  {name:32}{seconds:>7.1f} s")
    print(f"  {'lathe run, whole command':32}{statistics.median([p.la_wall for p in pairs]):>7.1f} s  (validate, train, export; no eval)")
    if keep:
        print(f"run kept: {run.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="one recipe (default: the quickstart, then SmolLM2's)")
    parser.add_argument("--runs-dir", help="keep the lathe runs here (for bench/eval_speed.py)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs per recipe, in alternating order; medians are printed "
                        "(this machine's step time varies ~15%% from run to run: one pair cannot show a 3%% effect)")
    args = parser.parse_args()
    recipes = [Path(args.recipe).resolve()] if args.recipe else [REPO / "recipes" / "quickstart.yml"]
    if not args.recipe and (REPO / "models" / REAL_BASE).is_file():
        recipes.append(REPO / "recipes" / "smollm2-wrong-facts.yml")
    elif not args.recipe:
        print(f"(no SmolLM2 case: models/{REAL_BASE} missing; `make models` fetches it)")
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="lathe-bench-runs-"))
    runs.mkdir(parents=True, exist_ok=True)
    try:
        for recipe in recipes:
            case(recipe, runs, bool(args.runs_dir), max(1, args.repeat))
    finally:
        if not args.runs_dir:  # each SmolLM2 run keeps ~250 MB of checkpoints: gone with the bench
            shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
