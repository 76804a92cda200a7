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

    def start_ray(self, host: Host, cmd: list[str], env: dict[str, str], log: Path, up, timeout: float = 240,
                  tries: int = 3) -> subprocess.Popen:
        """`ray start --block ...` in `host` until `up()` says the node serves. Ray gives a node's raylet a
        fixed 30 s to register and gives up ("timed out during startup"); with both cores busy (the other
        xdist worker compiling, installing or training) that happens, and a user would start it again:
        so does this, up to `tries` times. Any other exit is a failure."""
        for attempt in range(1, tries + 1):
            began = log.stat().st_size if log.exists() else 0
            proc = self.start(host, cmd, env, log)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None and not up():
                time.sleep(1)
            if proc.poll() is None and up():
                return proc
            said = log.read_bytes()[began:].decode(errors="replace")
            self.kill(proc)
            if "timed out during startup" not in said or attempt == tries:
                raise AssertionError(f"ray start in {host.name} failed (try {attempt} of {tries}):\n{said[-3000:]}")
        raise AssertionError("unreachable")

    def _end_all_in(self, host: Host) -> None:
        def remaining() -> list[int]:
            out = subprocess.run(["ip", "netns", "pids", host.name], capture_output=True, text=True,
                                 check=False).stdout
            return [int(p) for p in out.split()]

        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = remaining()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while pids and remaining() and time.monotonic() < deadline:
                time.sleep(0.2)

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
        # Whatever is still in a host was started there by the test (through its sshd, say) and
        # would outlive the namespace: end it by pid before the namespace goes.
        for host in self.hosts:
            self._end_all_in(host)
        for host in self.hosts:
            subprocess.run(["ip", "netns", "del", host.name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


def keygen(path: Path) -> str:
    """A fresh ed25519 key pair; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_name(path.name + ".pub").read_text().strip()


def start_sshd(net: Network, host: Host, workdir: Path, authorized_keys: Path,
               extra_config: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """A private sshd inside a host, with its own host key; returns (process, public host key).
    `extra_config`: more sshd_config lines (SetEnv PATH=... gives the host's logins programs of their own)."""
    root = workdir / f"sshd-{host.name}"
    root.mkdir(parents=True, exist_ok=True)
    host_pub = keygen(root / "host_ed25519")
    config = root / "sshd_config"
    config.write_text("\n".join([
        "Port 22", f"ListenAddress {host.address}", f"HostKey {root / 'host_ed25519'}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "AllowTcpForwarding yes", "Subsystem sftp /usr/lib/openssh/sftp-server", "LogLevel ERROR", *extra_config, ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = net.start(host, ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], dict(os.environ), root / "sshd.log")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = subprocess.run(["ip", "netns", "exec", host.name, "bash", "-c",
                                f"exec 3<>/dev/tcp/{host.address}/22"], capture_output=True, check=False)
        if probe.returncode == 0:
            return proc, host_pub
        time.sleep(0.1)
    raise RuntimeError(f"sshd on {host.name} did not start: {(root / 'sshd.log').read_text()[-500:]}")


def pids_in(host: Host) -> set[int]:
    """Every process living in a host's network namespace."""
    out = subprocess.run(["ip", "netns", "pids", host.name], capture_output=True, text=True, check=True).stdout
    return {int(p) for p in out.split()}


def comm(pid: int) -> str:
    """A process's command name, or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
