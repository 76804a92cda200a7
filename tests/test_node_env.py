"""A bare node's install source, checked without a cluster: the wheelhouse listing that preflight runs
with the host's own Python, against a real HTTP server that wants credentials (a private wheelhouse)."""

from __future__ import annotations

import base64
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from orchestrator.colo import node_env
from orchestrator.colo.inventory import NodeEnv

USER, PASSWORD = "ci", "s3cr3t/pa:ss"  # a password with characters a URL must escape


class _PrivateWheelhouse(http.server.BaseHTTPRequestHandler):
    """A directory listing behind HTTP Basic auth, as an internal artifact server serves one."""

    def do_GET(self) -> None:
        wanted = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != wanted:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="wheels"')
            self.end_headers()
            return
        body = b'<a href="lathe-0.1.0-py3-none-any.whl">x</a> <a href="/wheels/ray-2.55.0-cp312-none.whl">y</a>'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def private_wheelhouse() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PrivateWheelhouse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}/wheels/"
    finally:
        server.shutdown()
        server.server_close()


def _listing(url: str) -> str:
    # The host's Python has nothing of ours installed: the script must run on the standard library alone.
    return subprocess.run([sys.executable, "-I", "-c", node_env.LIST_WHEELHOUSE, url], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def test_a_private_wheelhouse_is_listed_with_the_credentials_in_its_url(private_wheelhouse: str) -> None:
    quoted = PASSWORD.replace("/", "%2F").replace(":", "%3A")
    assert _listing(f"http://{USER}:{quoted}@{private_wheelhouse}") == "lathe-0.1.0-py3-none-any.whl"
    assert _listing(f"http://{private_wheelhouse}") == "UNREADABLE Unauthorized"
    assert _listing(f"http://{USER}:wrong@{private_wheelhouse}") == "UNREADABLE Unauthorized"
    # As preflight runs it: the URL on standard input, so no command line carries the password.
    on_stdin = subprocess.run([sys.executable, "-I", "-c", node_env.LIST_WHEELHOUSE, "-"], capture_output=True,
                              text=True, check=True, timeout=60, input=f"http://{USER}:{quoted}@{private_wheelhouse}\n")
    assert on_stdin.stdout.strip() == "lathe-0.1.0-py3-none-any.whl"


def test_where_the_install_comes_from_is_shown_without_credentials() -> None:
    env = NodeEnv(kind="venv", wheelhouse="https://ci:s3cr3t@wheels.internal/lathe/")
    assert node_env.source(env) == "https://wheels.internal/lathe/"


class _LocalConnection:
    """A node's connection on this machine: commands through invoke's real local shell; uploads opened
    the way OpenSSH's sftp-server opens them (O_CREAT|O_TRUNC, 0666 under the umask), recording the
    file's mode at the moment the first byte is written."""

    def __init__(self) -> None:
        import invoke

        self.context = invoke.Context()
        self.modes: list[int] = []

    def run(self, command: str, **kwargs):
        return self.context.run(command, **kwargs)

    def put(self, data, remote: str) -> None:
        import os
        import stat

        fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            self.modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
            os.write(fd, data.read())
        finally:
            os.close(fd)


def test_a_secret_written_to_a_node_is_never_readable_by_others(tmp_path) -> None:
    """The Ray token went into `ray-token.lathe-tmp` created with the server's umask (0644) and only then
    chmod 600: for the length of the upload any user on the node could read it."""
    import os
    import stat

    from orchestrator.colo.inventory import Host
    from orchestrator.colo.nodes import Node

    conn = _LocalConnection()
    node = Node(Host(name="h", address="127.0.0.1"), conn)  # type: ignore[arg-type]
    old = os.umask(0o022)  # an sftp-server's usual umask
    try:
        node.write(str(tmp_path / "state" / "ray-token"), b"s3cret-token", mode=0o600)
        node.write(str(tmp_path / "state" / "start-ray.sh"), b"#!/bin/sh\n", mode=0o755)
    finally:
        os.umask(old)
    assert conn.modes == [0o600, 0o755], [oct(m) for m in conn.modes]
    assert stat.S_IMODE((tmp_path / "state" / "ray-token").stat().st_mode) == 0o600
    assert (tmp_path / "state" / "ray-token").read_bytes() == b"s3cret-token"
    assert not list((tmp_path / "state").glob("*.lathe-tmp"))


class _HangingWheelhouse(_PrivateWheelhouse):
    """A wheelhouse that takes longer to answer than the install may wait."""

    def do_GET(self) -> None:
        import time

        time.sleep(20)
        super().do_GET()


def test_an_index_password_is_on_no_command_line_and_in_no_timeout_error(tmp_path, monkeypatch) -> None:
    """pip got the credentialed URL on its command line: `ps` showed it to every user of the node for the
    whole install, and a timeout's error (invoke's CommandTimedOut quotes the command) carried it to the
    laptop. Here the node is this machine through a real shell, the index really hangs, `ps` is sampled
    all through the install, and the install is timed out."""
    import os
    import site
    import time
    from urllib.parse import quote

    from orchestrator.colo.inventory import Host, Inventory, NodeEnv
    from orchestrator.colo.nodes import HostFailure, HostReport, Node
    from orchestrator.store import StoreConfig

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HangingWheelhouse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # A venv whose pip is this one's (a .pth to our site-packages): made in a blink, whatever the base has.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (next(venv.glob("lib/python3*/site-packages")) / "ours.pth").write_text(site.getsitepackages()[0] + "\n")
    url = f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.server_address[1]}/wheels/"
    (tmp_path / "requirements.txt").write_text("lathe-test-only-wheel==1.0\n")  # not installed: pip must ask
    env = NodeEnv(kind="venv", venv=str(venv), wheelhouse=url, requirements=str(tmp_path / "requirements.txt"))
    host = Host(name="h", address="127.0.0.1", role="head", python=sys.executable, state_dir=str(tmp_path / "state"))
    inv = Inventory(name="t", hosts=[host], node_env=env, store=StoreConfig(uri=str(tmp_path / "store")))
    node = Node(host, _LocalConnection())  # type: ignore[arg-type]
    monkeypatch.setattr(node_env, "INSTALL_TIMEOUT_S", 8)

    seen: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True)
            seen.extend(ps.stdout.splitlines())
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with pytest.raises(HostFailure) as err:
            node_env.install(inv, node, HostReport("h", "head", "127.0.0.1"))
    finally:
        done.set()
        sampler.join()
        server.shutdown()
        server.server_close()
    secrets = (PASSWORD, quote(PASSWORD, safe=""))
    pip_lines = [line for line in seen if "pip install" in line]
    assert pip_lines, f"the sampler saw pip running ({err.value})"
    assert not [line for line in seen if any(s in line for s in secrets)], "a password on a command line"
    assert "CommandTimedOut" in str(err.value) and not any(s in str(err.value) for s in secrets), str(err.value)
    assert not (tmp_path / "state" / "pip-sources.conf").exists(), "the sources file went with the install"
    assert not os.path.exists(f"{venv}/.lathe-installed")
