"""Real services for tests: Debian's Prometheus binaries on loopback, started and stopped by pid."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
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
        stdout=log, stderr=subprocess.STDOUT,
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
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready")
    return Service(proc, url)
