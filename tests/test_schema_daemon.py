"""Axolotl's schema kept loaded in a background process: an edited recipe is checked by it, with Axolotl's
own verdict (a schema error refused in the same one line), without the validating process importing
torch; the process leaves when idle and takes its socket with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# Validate in a fresh process and say whether that process imported torch (Axolotl's schema needs it).
PROBE = """
import sys
from orchestrator.errors import LatheError
from orchestrator.validate import validate
try:
    print(validate(sys.argv[1], say=lambda line: print("said:", line), start_schema_process=True).name + ": ok")
except LatheError as exc:
    print(exc)
print("torch imported here:", "torch" in sys.modules)
"""


def _validate(recipe: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(recipe)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()


def test_an_edited_recipe_is_checked_by_the_background_schema_not_by_importing_torch(tmp_path: Path) -> None:
    short_tmp = Path(tempfile.mkdtemp(prefix="lsd"))  # the socket's path must fit AF_UNIX's 107 bytes
    env = {**os.environ, "LATHE_SCHEMA_DAEMON": "1", "LATHE_SCHEMA_DAEMON_IDLE": "10", "TMPDIR": str(short_tmp),
           "LATHE_CACHE": str(tmp_path / "cache")}  # nothing remembered: every edit is checked afresh
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    cfg = yaml.safe_load((REPO / "recipes" / "quickstart.yml").read_text())
    recipe = tmp_path / "mine.yml"
    pid_files: list[Path] = []
    pid = 0
    try:
        recipe.write_text(yaml.safe_dump(cfg))
        first = _validate(recipe, env)
        assert first[0].startswith("said: Axolotl's schema: loading it in a background process"), first
        assert first[1:] == ["mine.yml: ok", "torch imported here: False"]
        pid_files = list(short_tmp.glob(f"lathe-{os.getuid()}/schema-*.pid"))
        assert len(pid_files) == 1
        pid = int(pid_files[0].read_text())

        cfg["micro_batch_size"] = 3  # an edit: not in the acceptance cache, checked again, by the process
        recipe.write_text(yaml.safe_dump(cfg))
        assert _validate(recipe, env) == ["mine.yml: ok", "torch imported here: False"]

        cfg["datasets"][0]["type"] = 5  # only Axolotl's own schema refuses this
        recipe.write_text(yaml.safe_dump(cfg))
        assert _validate(recipe, env) == ["mine.yml: datasets[0].type: Input should be a valid string",
                                          "torch imported here: False"]

        # Off: the same refusal, from Axolotl imported in the validating process itself.
        off = _validate(recipe, {**env, "LATHE_SCHEMA_DAEMON": "0"})
        assert off == ["mine.yml: datasets[0].type: Input should be a valid string", "torch imported here: True"]

        deadline = time.monotonic() + 120
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _alive(pid), "idle for LATHE_SCHEMA_DAEMON_IDLE seconds, the process leaves"
        assert not list(short_tmp.glob(f"lathe-{os.getuid()}/schema-*")), "and removes its socket and pid file"
    finally:
        if pid and _alive(pid):
            os.kill(pid, 15)
        shutil.rmtree(short_tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")
