"""Training-phase wall time: `lathe run` (Ray Train around Axolotl) vs plain `axolotl train`.

Same recipe, same machine, one after the other in this process's run. Prints the
ratio; asserts nothing. Usage: .venv/bin/python bench/train_overhead.py [RECIPE]
"""

from __future__ import annotations

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

from orchestrator.tinymodel import resolve_base_model
from orchestrator.validate import axolotl_config, validate

BIN = Path(sys.executable).parent


def plain_axolotl(recipe: Path, work: Path) -> tuple[float, float | None]:
    cfg = axolotl_config(validate(recipe))
    cfg["base_model"] = resolve_base_model(cfg["base_model"])
    cfg.update(output_dir=str(work / "out"), dataset_prepared_path=str(work / "prepared"))
    path = work / "axolotl.yml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "AXOLOTL_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    out = subprocess.run([str(BIN / "python"), "-m", "axolotl.cli.train", str(path)], env=env, cwd=work,
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    m = re.search(r"'train_runtime': '?([0-9.]+)", out.stdout + out.stderr)
    return wall, float(m.group(1)) if m else None


def lathe_run(recipe: Path, work: Path) -> tuple[float, float | None]:
    start = time.perf_counter()
    subprocess.run([str(BIN / "lathe"), "run", str(recipe), "--runs-dir", str(work), "--no-export"], check=True,
                   capture_output=True, text=True)
    wall = time.perf_counter() - start
    run_dir = next(p for p in work.iterdir() if p.is_dir())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    first, last = yaml.safe_load(lines[0])["time"], yaml.safe_load(lines[-1])["time"]
    return wall, last - first


def main() -> None:
    recipe = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "recipes" / "quickstart.yml").resolve()
    resolve_base_model(validate(recipe, axolotl_schema=False).axolotl["base_model"])  # build once, outside timing
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ax_wall, ax_train = plain_axolotl(recipe, Path(a))
        la_wall, la_train = lathe_run(recipe, Path(b))
    print(f"recipe: {recipe.name}")
    print(f"{'':24}{'wall s':>10}{'train loop s':>14}")
    print(f"{'axolotl train':24}{ax_wall:>10.1f}{(ax_train or float('nan')):>14.1f}")
    print(f"{'lathe run (Ray Train)':24}{la_wall:>10.1f}{(la_train or float('nan')):>14.1f}")
    print(f"ratio lathe/axolotl, wall: {la_wall / ax_wall:.2f}x")
    if ax_train and la_train:
        print(f"ratio lathe/axolotl, train loop: {la_train / ax_train:.2f}x")


if __name__ == "__main__":
    main()
