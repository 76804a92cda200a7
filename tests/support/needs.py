"""Tests that need something this machine may lack (root, a program): skipped where it is missing,
but under CI (CI=true) that skip would hide a missing part, so there it fails instead."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def missing(thing: str) -> bool:
    if thing == "root":
        return os.geteuid() != 0
    if thing == "venv-uv":  # scripts/bootstrap.sh installs uv into the venv
        return not Path(sys.executable).with_name("uv").exists()
    return shutil.which(thing) is None


def require(*things: str, why: str) -> None:
    """Skip (or, under CI, fail) the running test unless every one of `things` is here."""
    lacking = [t for t in things if missing(t)]
    if not lacking:
        return
    message = f"needs {', '.join(lacking)} ({why})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: missing on this CI machine, where a skip would hide it", pytrace=False)
    pytest.skip(message)
