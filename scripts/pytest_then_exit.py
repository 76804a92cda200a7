"""Run pytest and exit with its status without Python's interpreter finalization.

The suite loads torch, MLX, llama.cpp and Ray into one process. On 2026-12-02 a full
run (/tmp/ci2, 314 tests) printed its summary and then died with SIGSEGV while the
interpreter tore those native libraries down, after pytest had already reported;
`make` then saw a crash instead of pytest's status. Results are final once pytest
returns, so this exits right there (after flushing), with pytest's own exit code.
A crash during a test is still a crash: faulthandler is on until pytest returns.

Usage: python scripts/pytest_then_exit.py [pytest arguments]
"""

from __future__ import annotations

import os
import sys

import pytest

if __name__ == "__main__":
    code = int(pytest.main(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
