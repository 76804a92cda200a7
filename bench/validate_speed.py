"""`lathe validate` as a user meets it: the command end to end, on a copy of a recipe edited before each
check (an edited recipe is never in the acceptance cache), then unchanged. Three ways, in one run:

- in-process: no background schema process (LATHE_SCHEMA_DAEMON=0): Axolotl imported every time;
- the schema process: the first check starts it (and waits for its import), the next ones ask it;
- unchanged: the acceptance cache alone.

Also checks that an Axolotl-schema error is still refused through the schema process. Prints medians
and the ratio against in-process. Asserts nothing.

    .venv/bin/python bench/validate_speed.py [RECIPE] [--times 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LATHE = Path(sys.executable).parent / "lathe"
GOAL_S = 5.0


def check(recipe: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    began = time.perf_counter()
    done = subprocess.run([str(LATHE), "validate", str(recipe)], env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - began, done


def edited(recipe: Path, cfg: dict, n: int) -> None:
    recipe.write_text(yaml.safe_dump({**cfg, "seed": 1000 + n}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", type=Path, default=REPO / "recipes" / "quickstart.yml")
    parser.add_argument("--times", type=int, default=5)
    args = parser.parse_args()
    source = args.recipe.resolve()
    work = Path(tempfile.mkdtemp(prefix="lvb"))
    env = {**os.environ, "LATHE_CACHE": str(work / "cache"), "TMPDIR": str(work)}
    for folder in ("data", "deepspeed"):
        if (source.parent / folder).is_dir():
            shutil.copytree(source.parent / folder, work / folder)
    cfg = yaml.safe_load(source.read_text())
    recipe = work / source.name
    try:
        inproc = []
        for n in range(args.times):
            edited(recipe, cfg, n)
            inproc.append(check(recipe, {**env, "LATHE_SCHEMA_DAEMON": "0"})[0])
        edited(recipe, cfg, 100)
        first = check(recipe, env)[0]
        served = []
        for n in range(args.times):
            edited(recipe, cfg, 200 + n)
            served.append(check(recipe, env)[0])
        unchanged = [check(recipe, env)[0] for _ in range(args.times)]
        recipe.write_text(yaml.safe_dump({**cfg, "datasets": [{**cfg["datasets"][0], "type": 5}]}))
        refused = check(recipe, env)[1]
    finally:
        for pid_file in work.glob("lathe-*/schema-*.pid"):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(inproc)
    print(f"lathe validate {source.name}, {os.cpu_count()} cores, median of {args.times}:")
    print(f"  edited, Axolotl imported in-process   {base:6.2f} s")
    print(f"  edited, first (starts the process)    {first:6.2f} s")
    print(f"  edited, the schema process answering  {statistics.median(served):6.2f} s   "
          f"{base / statistics.median(served):.1f}x faster (goal < {GOAL_S:.0f} s)")
    print(f"  unchanged (acceptance cache)          {statistics.median(unchanged):6.2f} s")
    print(f"  a schema error through the process: exit {refused.returncode}, "
          f"{(refused.stderr or refused.stdout).strip().splitlines()[-1]!r}")


if __name__ == "__main__":
    main()
