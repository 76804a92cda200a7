"""The suite-wide registry: runs and services made once per test run and shared by every xdist worker.

A kind ("quickstart-e2e", "monitoring") is made by the first worker that asks for it, under a file
lock, into a directory of its own beside the workers' base temps; a worker that asks meanwhile waits
for it, and one that asks later finds it made. A make that failed fails every later asker with the
same reason instead of being tried again. What must outlive the worker that made it (a service's
processes, a directory outside the base temp) is recorded there and ended by the process that owns
the whole test run (xdist's controller, or pytest itself without xdist) when the run ends.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MADE, FAILED = ".made", ".failed"
PIDS, DIRS = "pids", "dirs"  # what the run's owner ends and removes at the end


def shared_root(factory: pytest.TempPathFactory) -> Path:
    """One directory per test run, the same for every xdist worker and the controller (xdist gives each
    worker a base temp under the controller's)."""
    base = factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    return root


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def made_once(root: Path, kind: str, make: Callable[[Path], None]) -> Path:
    """The directory `make` filled for `kind`: made here if no worker has made it yet."""
    where = root / kind
    with _locked(root / f".{kind}.lock"):
        if (where / FAILED).exists():
            pytest.fail(f"{kind}, shared by the suite, failed where it was made:\n{(where / FAILED).read_text()}",
                        pytrace=False)
        if not (where / MADE).exists():
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir()
            try:
                make(where)
            except BaseException as exc:
                (where / FAILED).write_text(f"{type(exc).__name__}: {exc}"[-6000:])
                raise
            (where / MADE).touch()
    return where


def outlives_its_maker(where: Path, *, pid: int | None = None, directory: Path | None = None) -> None:
    """Record a process to end, or a directory to remove, when the whole test run ends."""
    if pid is not None:
        with open(where / PIDS, "a") as out:
            out.write(f"{pid}\n")
    if directory is not None:
        with open(where / DIRS, "a") as out:
            out.write(f"{directory}\n")


def end_all(root: Path) -> None:
    """At the end of the test run: end every recorded process (by pid, TERM then KILL) and remove
    every recorded directory."""
    pids = [int(p) for f in root.glob(f"*/{PIDS}") for p in f.read_text().split()]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in (p for p in pids if alive(p)):
        _signal(pid, signal.SIGKILL)
    for listed in root.glob(f"*/{DIRS}"):
        for line in listed.read_text().split():
            shutil.rmtree(line, ignore_errors=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
