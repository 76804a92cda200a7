"""Hosts for tests: network namespaces on a private bridge, each with its own address.

Each "host" is a network namespace with a veth into a bridge the test creates, on
a private /24 it picks. Processes started in a host are tracked and ended by
their process group (only what the test started); namespaces, veths and the
bridge are deleted on close.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Host:
    name: str  # the namespace
    address: str


@dataclass
class Network:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: str = field(default_factory=lambda: f"10.{random.randint(64, 250)}.{random.randint(1, 250)}")
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"lbr{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: where the 'laptop' and its services listen."""
        return f"{self.subnet}.1"

    def up(self) -> Network:
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, role: str) -> Host:
        index = len(self.hosts)
        ns, outer, inner = f"lathe-{self.tag}-{role}", f"v{self.tag}{index}a", f"v{self.tag}{index}b"
        host = Host(ns, f"{self.subnet}.{index + 2}")
        _ip("netns", "add", ns)
        self.hosts.append(host)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return host

    def start(self, host: Host, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        out = log.open("ab")
        proc = subprocess.Popen(["ip", "netns", "exec", host.name, *cmd], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 20.0) -> None:
        """End a process this network started, and its process group (a Ray node's raylet, GCS, ...)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.kill(proc)
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
