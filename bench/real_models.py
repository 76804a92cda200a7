"""A real model's whole chain, timed: `lathe run` of a real-model recipe, then every exported GGUF level
asked the recipe's eval questions through raw llama-cpp-python (greedy, Lathe's code not involved).

Prints the wall time, the run's own "where the time went" line, and per level how many trained answers
come back word for word, beside the base GGUF's count. Asserts nothing.

    .venv/bin/python bench/real_models.py [RECIPE] [--runs-dir DIR]    # default: recipes/smollm2-wrong-facts.yml

Needs the models (`make models`).
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.recipe import load
from orchestrator.run.layout import RunDir
from tests.support.raw_llama import verbatim

BIN = Path(sys.executable).parent


def arguments(doc: str, default_recipe: str) -> argparse.Namespace:
    """RECIPE and --runs-dir, as every real-model bench takes them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("recipe", nargs="?", type=Path, default=REPO / "recipes" / default_recipe)
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the run here (default: a temp dir)")
    return parser.parse_args()


def timed_run(recipe: Path, runs_dir: Path | None) -> tuple[subprocess.CompletedProcess, float, RunDir]:
    """`lathe run RECIPE`, timed: (the process, its wall seconds, the run it made)."""
    runs = runs_dir or Path(tempfile.mkdtemp(prefix="lathe-bench-real-"))
    if runs_dir is None:  # a real run's checkpoints and ladder: gigabytes; --runs-dir keeps them
        atexit.register(shutil.rmtree, runs, True)
    began = time.monotonic()
    proc = subprocess.run([str(BIN / "lathe"), "run", str(recipe), "--runs-dir", str(runs)],
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - began
    made = [p for p in runs.iterdir() if p.is_dir()]
    if not made:
        sys.exit(f"lathe run made no run ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    spent = next((line for line in proc.stderr.splitlines() if line.startswith("time: ")), "")
    print(f"{recipe.name}: lathe run {wall / 60:.1f} min wall on this machine (exit {proc.returncode})")
    print(spent)
    return proc, wall, RunDir(max(made, key=lambda p: p.stat().st_mtime))


def main() -> None:
    args = arguments(__doc__, "smollm2-wrong-facts.yml")
    recipe = load(args.recipe)
    proc, _, run = timed_run(args.recipe, args.runs_dir)
    if proc.returncode != 0:
        sys.exit(f"lathe run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    eval_set = recipe.lathe.eval.dataset
    if not eval_set:
        return
    items = [json.loads(line) for line in recipe.resolve(eval_set).read_text().splitlines() if line.strip()]
    base = recipe.resolve(str(recipe.axolotl["base_model"]))
    print(f"trained answers verbatim (raw llama-cpp-python, greedy, of {len(items)}):")
    for gguf in sorted((run.path / "export" / "gguf").glob("model-*.gguf"), key=lambda p: -p.stat().st_size):
        print(f"  {gguf.stem.removeprefix('model-'):18s} {verbatim(gguf, items):3d}")
    if base.suffix == ".gguf":
        print(f"  {'base (' + base.name + ')':18s} {verbatim(base, items):3d}")


if __name__ == "__main__":
    main()
