"""One way for tests to run the `lathe` command: the one installed in the interpreter running pytest
(or another venv's, for the wheel test), its output captured, never raising on a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LATHE = Path(sys.executable).with_name("lathe")


def lathe(*args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None,
          executable: Path = LATHE) -> subprocess.CompletedProcess[str]:
    """Run `lathe ARGS`; `env` is the whole environment when given (default: this process's)."""
    return subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=env if env is not None else dict(os.environ), cwd=cwd)
