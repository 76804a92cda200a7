"""Reach a cluster's Ray Jobs API: directly, or through an SSH tunnel Lathe opens and closes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import LatheError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from orchestrator.profiles import ClusterProfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    """Fabric binds the tunnel's local end in a thread: wait until it accepts before using it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LatheError(f"the SSH tunnel's local port {port} never opened") from None
            time.sleep(0.05)


@contextmanager
def dashboard(profile: ClusterProfile) -> Iterator[str]:
    """Yield the dashboard URL to use from here; a tunnel, if any, closes on exit."""
    tunnel = profile.ssh_tunnel
    if tunnel is None:
        yield profile.ray_address
        return
    from fabric import Connection
    from paramiko import RejectPolicy

    kwargs = {"key_filename": [os.path.expanduser(tunnel.key)], "look_for_keys": False} if tunnel.key else {}
    conn = Connection(tunnel.host, user=tunnel.user, port=tunnel.port, connect_kwargs=kwargs)
    # Fabric accepts unknown host keys by default; a tunnel to a cluster must not.
    if tunnel.known_hosts and os.path.isfile(os.path.expanduser(tunnel.known_hosts)):
        conn.client.load_host_keys(os.path.expanduser(tunnel.known_hosts))
    conn.client.set_missing_host_key_policy(RejectPolicy())
    from invoke.exceptions import ThreadException
    from paramiko import SSHException

    try:
        conn.open()
    except (SSHException, OSError) as exc:
        raise LatheError(f"cluster {profile.name}: SSH to {tunnel.host}:{tunnel.port} for the dashboard tunnel "
                         f"failed ({exc.__class__.__name__}: {exc})") from None
    local = _free_port()
    try:
        with conn.forward_local(local, remote_port=tunnel.remote_port, remote_host=tunnel.remote_host):
            _wait_listening(local)
            yield f"http://127.0.0.1:{local}"
    except ThreadException:
        # A forwarded connection the far end refused: the dashboard is down or not started yet.
        raise LatheError(f"cluster {profile.name}: nothing answers on {tunnel.remote_host}:{tunnel.remote_port} "
                         f"behind the SSH tunnel to {tunnel.host}") from None
    finally:
        conn.close()


def auth_headers(profile: ClusterProfile) -> dict[str, str]:
    """The Authorization header for a cluster with Ray's token auth; the token is read, never logged.

    Passed explicitly rather than through RAY_AUTH_* variables: Ray reads those once per process."""
    path = os.path.expanduser(profile.auth_token_file) if profile.auth_token_file else None
    if path is None:
        token = os.environ.get("RAY_AUTH_TOKEN", "")
    elif not os.path.isfile(path):
        raise LatheError(f"cluster {profile.name}: auth_token_file {profile.auth_token_file}: no such file")
    else:
        token = Path(path).read_text(encoding="utf-8").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def jobs_client(profile: ClusterProfile) -> Iterator[JobSubmissionClient]:
    from ray.job_submission import JobSubmissionClient

    headers = auth_headers(profile)
    from ray.exceptions import AuthenticationError

    with dashboard(profile) as address:
        try:
            client = JobSubmissionClient(address, headers=headers)
        except AuthenticationError:
            raise LatheError(f"cluster {profile.name}: the Ray dashboard at {address} wants a token: "
                             "set auth_token_file in the profile") from None
        except (ConnectionError, RuntimeError, OSError) as exc:
            raise LatheError(f"cluster {profile.name}: Ray dashboard at {address} not reachable "
                             f"({exc.__class__.__name__})") from None
        yield client
