"""Real services for tests: Debian's Prometheus binaries on loopback, started and stopped by pid."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, any_status: bool = False) -> None:
    """Until `url` answers 2xx (or anything at all, with `any_status`: e.g. 401 from a server with auth)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            if any_status:
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class Service:
    proc: subprocess.Popen
    url: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_pushgateway(workdir: Path) -> Service:
    port = free_port()
    log = (workdir / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        ["/usr/bin/prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # may outlive the xdist worker that started it
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready")
    return Service(proc, url)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def start_prometheus(workdir: Path, scrape_targets: list[str], interval: str = "1s") -> Service:
    """A real Prometheus (Debian's binary) scraping `scrape_targets` (host:port) with honor_labels."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {interval}\n"
        "scrape_configs:\n"
        "  - job_name: pushgateway\n"
        "    honor_labels: true\n"
        f"    static_configs: [{{targets: [{', '.join(repr(t) for t in scrape_targets)}]}}]\n"
    )
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready")
    return Service(proc, url)


class S3Server:
    """moto's S3 over real HTTP that a test can stop and start again, or have stop itself in the
    middle of a chosen upload. moto keeps its objects in this process, so they outlive a restart."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app

        self.host, self.port = host, port or free_port()
        self.url = f"http://{host}:{self.port}"
        self._backend = DomainDispatcherApplication(create_backend_app)
        self._server = None
        self._lock = threading.Lock()
        self._down = threading.Event()
        self._stop_on: Callable[[str, str, str], bool] | None = None
        self.log: list[tuple[str, str, str]] = []  # (method, path, query) of every request answered
        self.cut: list[str] = []  # the paths of the requests cut off when the server stopped itself

    def start(self) -> S3Server:
        from werkzeug.serving import make_server

        with self._lock:
            if self._server is None:
                self._server = make_server(self.host, self.port, self._app, threaded=True)
                threading.Thread(target=self._server.serve_forever, daemon=True).start()
            self._down.clear()
        return self

    def stop(self) -> None:
        """No new connection is accepted and no request on an open one is answered until start()."""
        with self._lock:
            self._down.set()
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None

    def stop_during(self, predicate: Callable[[str, str, str], bool] | None) -> None:
        """Stop the server at the first request (method, path, query) the predicate picks, cutting that
        request off mid-transfer; its path goes into `cut` (emptied when armed, so that `cut` is this
        outage's). None disarms."""
        if predicate is not None:
            self.cut = []
        self._stop_on = predicate

    def _app(self, environ: dict, start_response: Callable):
        request = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        trigger = self._stop_on
        if trigger is not None and not self._down.is_set() and trigger(*request):
            self._stop_on = None
            self.cut.append(request[1])
            self.stop()  # from a request thread: serve_forever runs in its own
        if self._down.is_set():
            # As a server that went away: the connection drops, with no response to the request.
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionAbortedError("the S3 server is stopped")
        response = self._backend(environ, start_response)
        self.log.append(request)
        return response
