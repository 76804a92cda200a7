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


def test_where_the_install_comes_from_is_shown_without_credentials() -> None:
    env = NodeEnv(kind="venv", wheelhouse="https://ci:s3cr3t@wheels.internal/lathe/")
    assert node_env.source(env) == "https://wheels.internal/lathe/"
