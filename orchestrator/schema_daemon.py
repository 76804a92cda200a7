"""Axolotl's schema kept imported in a background process, so a recipe edited a moment ago validates in
well under a second instead of ~20 s.

Why: Axolotl's pydantic models cannot be imported without torch, transformers, peft and scikit-learn
(Axolotl's own plugin modules import peft; measured with `python -X importtime`: 18.6 s of the 21 s
a first validation costs on a 2-core machine). `orchestrator.validated` remembers recipes already
accepted, but a user validates because they just changed something: every edit missed that cache.

How: the first validation that misses the cache starts this module as a detached process and asks it;
the process binds its socket at once, imports Axolotl (the one slow part), answers each request with the
same function the in-process check runs (`axolotl_schema.verdict`), and exits after `IDLE_SECONDS`
without a request. Only this user can reach the socket (a 0700 folder). Its name hashes the installed
versions and Lathe's checker sources, so an upgrade or an edited checker starts a fresh process and the
stale one dies idle. Anything unexpected (no answer, a crash, a config with `plugins`, which register
code in the process) falls back to checking in-process. `LATHE_SCHEMA_DAEMON=0` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator import axolotl_schema
from orchestrator.errors import RecipeError, RecipeErrors

IDLE_SECONDS = float(os.environ.get("LATHE_SCHEMA_DAEMON_IDLE") or 15 * 60)
ANSWER_TIMEOUT = 180.0  # the first answer waits for the import: ~20 s on 2 cores, far more under load
_MAX_MESSAGE = 16 * 1024 * 1024


def enabled() -> bool:
    return os.environ.get("LATHE_SCHEMA_DAEMON", "1") not in ("0", "off", "false", "no")


def socket_path() -> Path:
    """Per user, per installed versions and checker sources; short enough for AF_UNIX's 107 bytes."""
    from orchestrator import validated

    folder = Path(tempfile.gettempdir()) / f"lathe-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise PermissionError(f"{folder} is not this user's alone")
    return folder / f"schema-{hashlib.sha256(validated.code_key().encode()).hexdigest()[:16]}.sock"


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _receive(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) > _MAX_MESSAGE:
            raise ConnectionError("the schema process closed the connection")
        data += chunk
    return json.loads(data)


def ask(name: str, cfg: dict[str, Any], start: bool, say=lambda _: None) -> list[str] | None:
    """Axolotl's verdict on `cfg` from the background process: its warnings, or RecipeError(s) raised;
    None when it could not answer (the caller checks in-process). `start`: start the process if none
    runs (`lathe validate`, a user's edit loop); `lathe run` only asks one already there, rather than
    leave ~1 GB resident beside its own training."""
    if not enabled() or cfg.get("plugins"):
        return None
    try:
        path = socket_path()
        conn = _connect(path)
        if conn is None and not start:
            return None
        if conn is None:
            _start(path)
            say("Axolotl's schema: loading it in a background process, kept for later validations "
                f"({IDLE_SECONDS / 60:.0f} idle minutes; LATHE_SCHEMA_DAEMON=0 turns this off)")
            conn = _connect(path, wait=10.0)
        if conn is None:
            return None
        with conn:
            conn.settimeout(ANSWER_TIMEOUT)
            _send(conn, {"name": name, "cfg": cfg})
            answer = _receive(conn)
    except (OSError, ValueError, ConnectionError):
        return None
    if "errors" in answer:
        errors = [RecipeError(*e) for e in answer["errors"]]
        raise errors[0] if len(errors) == 1 and answer.get("single") else RecipeErrors(errors)
    warnings = answer.get("warnings")
    return [str(w) for w in warnings] if isinstance(warnings, list) else None


def _connect(path: Path, wait: float = 0.0) -> socket.socket | None:
    deadline = time.monotonic() + wait
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(path))
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


def _start(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a process that died: nothing listens on it
    subprocess.Popen([sys.executable, "-m", "orchestrator.schema_daemon", str(path)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, cwd="/")


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"warnings": axolotl_schema.verdict(str(request["name"]), request["cfg"])}
    except RecipeErrors as exc:
        return {"errors": [[e.file, e.field, e.problem] for e in exc.errors]}
    except RecipeError as exc:
        return {"errors": [[exc.file, exc.field, exc.problem]], "single": True}


def serve(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))  # first: a second starter finds it taken and leaves
    except OSError:
        return
    ours = os.stat(path).st_ino
    pid_file = path.with_suffix(".pid")  # who to end, for a user or a test: `kill $(cat schema-*.pid)`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ended: still remove the socket
    try:
        os.chmod(path, 0o600)
        pid_file.write_text(f"{os.getpid()}\n")
        server.listen(8)
        axolotl_schema.warm()  # the slow import, once; clients already connected wait in the backlog
        server.settimeout(IDLE_SECONDS)
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return
            with conn:
                try:
                    conn.settimeout(30)
                    _send(conn, _answer(_receive(conn)))
                except Exception as exc:  # noqa: BLE001 - one bad request must not end the process
                    with contextlib.suppress(OSError):
                        _send(conn, {"crash": f"{type(exc).__name__}: {exc}"})
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == ours:  # not a newer process's socket
                path.unlink()
                pid_file.unlink()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
