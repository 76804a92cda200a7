"""The first `make demo` on a fresh machine, right after set-up: how long a newcomer waits. Asserts nothing.

A fresh machine is simulated on this one, as far as a process can see it:
1. a new, empty home directory (HOME, XDG_CACHE_HOME): no Lathe cache (tiny bases, validated recipes,
   GGUF headers), no Hugging Face datasets cache, nothing a previous run left;
2. set-up's own share of the work, done there as `make setup` does it: the quickstart's tiny base
   (scripts/bootstrap.sh builds it once); the venv and its compiled bytecode are this checkout's, as
   set-up left them;
3. the kernel's page cache dropped (root only; otherwise said): every library, torch's included, is
   read from disk again, as after a reboot; a machine that has just run set-up is warmer than this;
4. then the demo's command, `lathe run recipes/quickstart.yml`, timed from the shell's side.

Prints set-up's share, the demo's wall time beside the goal (6 min, anything first-use included) and
the demo's own `time:` line (where it went).

    .venv/bin/python bench/cold_demo.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LATHE = Path(sys.executable).parent / "lathe"
GOAL_MIN = 6.0


def drop_page_cache() -> str:
    """Empty the kernel's page cache (needs root); say what was done."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "page cache dropped"
    except OSError as exc:
        return f"page cache NOT dropped ({exc.__class__.__name__}: needs root): this run is warmer than a fresh machine's"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lathe-cold-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LATHE_", "HF_", "XDG_"))}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PATH=f"{LATHE.parent}:{env['PATH']}",
                   # A fresh machine has no schema process running (`lathe validate` starts one; `lathe run`
                   # only uses one it finds): none of this machine's is asked.
                   LATHE_SCHEMA_DAEMON="0")
        start = time.perf_counter()
        built = subprocess.run([str(LATHE), "tiny", "path", "tiny://llama"], env=env, capture_output=True, text=True,
                               check=False)
        setup_s = time.perf_counter() - start
        if built.returncode != 0:
            print(f"set-up's tiny base failed:\n{built.stderr[-2000:]}", file=sys.stderr)
            return 1
        cache = drop_page_cache()
        start = time.perf_counter()
        demo = subprocess.run([str(LATHE), "run", str(REPO / "recipes" / "quickstart.yml"),
                               "--runs-dir", str(Path(tmp) / "runs")], env=env, capture_output=True, text=True,
                              check=False, cwd=REPO)
        wall_min = (time.perf_counter() - start) / 60
    timing = re.search(r"^time: .*$", demo.stdout, re.MULTILINE)
    print(f"set-up's share (the quickstart's tiny base, in the fresh home): {setup_s:.0f} s")
    print(f"{cache}; fresh home: no Lathe, Hugging Face or Ray caches")
    print(f"first `make demo` (lathe run recipes/quickstart.yml): {wall_min:.1f} min wall, exit {demo.returncode} "
          f"(goal: under {GOAL_MIN:.0f} min: {'met' if wall_min < GOAL_MIN and demo.returncode == 0 else 'NOT met'})")
    print(timing.group(0) if timing else demo.stdout[-1500:] + demo.stderr[-1500:])
    return 0 if demo.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
