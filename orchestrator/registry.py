"""The laptop's run registry: which runs it submitted, where, and what it last knew of them.

SQLite (one file, safe with several `lathe` processes at once) under
``$LATHE_HOME`` or ``~/.local/state/lathe``. The registry is a cache of what the
cluster and the store say; `lathe status` refreshes it, so a laptop that slept
through a run simply reattaches.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.run.state import RunState

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    cluster    TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    store_uri  TEXT NOT NULL,
    recipe     TEXT NOT NULL,
    state      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    created    REAL NOT NULL,
    updated    REAL NOT NULL
)
"""


@dataclass
class Entry:
    run_id: str
    cluster: str
    job_id: str
    store_uri: str
    recipe: str
    state: str
    detail: str
    created: float
    updated: float


def home() -> Path:
    base = os.environ.get("LATHE_HOME") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "lathe")
    return Path(base)


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    path = home() / "registry.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
        yield conn
    finally:
        conn.close()


def add(run_id: str, cluster: str, job_id: str, store_uri: str, recipe: str, state: str = RunState.SUBMITTING) -> Entry:
    """Record a new run; sqlite3.IntegrityError if the id is taken."""
    now = time.time()
    with _db() as db:
        db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, '', ?, ?)",
                   (run_id, cluster, job_id, store_uri, recipe, state, now, now))
    return Entry(run_id, cluster, job_id, store_uri, recipe, state, "", now, now)


def add_new(make_id: Callable[[], str], cluster: str, store_uri: Callable[[str], str], recipe: str,
            tries: int = 20) -> Entry:
    """Record a new run (job id = run id) under the first id from `make_id` that no other run has."""
    for _ in range(tries):
        run_id = make_id()
        try:
            return add(run_id, cluster, run_id, store_uri(run_id), recipe)
        except sqlite3.IntegrityError:
            continue
    raise RuntimeError(f"no free run id after {tries} tries")


def update(run_id: str, state: str, detail: str = "") -> None:
    with _db() as db:
        db.execute("UPDATE runs SET state = ?, detail = ?, updated = ? WHERE run_id = ?",
                   (state, detail, time.time(), run_id))


def set_job(run_id: str, job_id: str, state: str, detail: str) -> None:
    """A run resubmitted in place: same run id, a new Ray submission id."""
    with _db() as db:
        db.execute("UPDATE runs SET job_id = ?, state = ?, detail = ?, updated = ? WHERE run_id = ?",
                   (job_id, state, detail, time.time(), run_id))


def attempt(entry: Entry) -> int:
    """1 for the first submission; resubmissions carry `-a<N>` in their Ray submission id."""
    head, sep, tail = entry.job_id.rpartition("-a")
    return int(tail) if sep and head == entry.run_id and tail.isdigit() else 1


def get(run_id: str) -> Entry | None:
    with _db() as db:
        row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return Entry(*row) if row else None


def find(prefix: str) -> Entry | None:
    """An exact run id, or the one run whose id starts with `prefix`."""
    exact = get(prefix)
    if exact:
        return exact
    with _db() as db:
        # A prefix, literally: in LIKE, `_` is any character and `%` any run of them (SQLite has no escape
        # by default; backslash is declared as one).
        literal = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = db.execute("SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY created",
                          (literal + "%",)).fetchall()
    return Entry(*rows[0]) if len(rows) == 1 else None


def all_runs() -> list[Entry]:
    with _db() as db:
        return [Entry(*row) for row in db.execute("SELECT * FROM runs ORDER BY created").fetchall()]
