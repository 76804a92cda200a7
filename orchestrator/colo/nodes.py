"""SSH to the hosts of an inventory (Fabric), with host keys checked, and what each host is.

Every connection loads the inventory's known_hosts and rejects unknown or changed
host keys: a provisioning tool that trusts on first use would hand a cluster token
to whoever answers on that address.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.colo.inventory import Host, Inventory

if TYPE_CHECKING:
    from fabric import Connection

SERVICES = ("ray", "node-exporter", "dcgm-exporter")


@dataclass
class HostReport:
    name: str
    role: str
    address: str
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)  # name -> running / stopped / missing
    ray: str = "-"
    gpus: str = "-"


class HostFailure(Exception):
    """Something a host cannot do, worded for the person who owns the host."""


def expand(path: str, home: str) -> str:
    return home + path[1:] if path == "~" or path.startswith("~/") else path


def connect(inv: Inventory, host: Host) -> Connection:
    from fabric import Connection
    from paramiko import RejectPolicy

    kwargs: dict[str, Any] = {"banner_timeout": 15, "auth_timeout": 15}
    if host.key:
        key = os.path.expanduser(host.key)
        if not os.path.isfile(key):
            raise HostFailure(f"SSH key {host.key} not found on this machine")
        kwargs.update(key_filename=[key], look_for_keys=False, allow_agent=False)
    gateway = connect(inv, inv.host(host.proxy_jump)) if host.proxy_jump else None
    conn = Connection(host.address, user=host.user, port=host.port, connect_kwargs=kwargs, gateway=gateway,
                      connect_timeout=10)
    known = os.path.expanduser(inv.known_hosts)
    if os.path.isfile(known):
        conn.client.load_host_keys(known)
    conn.client.set_missing_host_key_policy(RejectPolicy())
    return conn


def ssh_failure(exc: BaseException, inv: Inventory, host: Host) -> str:
    from paramiko import AuthenticationException, BadHostKeyException, SSHException

    if isinstance(exc, HostFailure):
        return str(exc)
    if isinstance(exc, BadHostKeyException):
        return (f"host key does not match {inv.known_hosts} (offered {exc.key.get_name()} "
                f"{exc.key.fingerprint}); refusing to connect")
    if isinstance(exc, AuthenticationException):
        return f"SSH authentication failed for user {host.user or '(default)'} with key {host.key or '(agent)'}"
    if isinstance(exc, SSHException) and "not found in known_hosts" in str(exc):
        return (f"host key not in {inv.known_hosts}: verify its fingerprint, then add it "
                f"(ssh-keyscan -p {host.port} {host.address})")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no SSH answer from {host.address}:{host.port} (timed out)"
    if isinstance(exc, OSError):
        return f"cannot reach {host.address}:{host.port} over SSH ({exc.strerror or exc})"
    return f"SSH failed: {exc.__class__.__name__}: {exc}"


@dataclass
class Node:
    """A connected host and what preflight learnt about it."""

    host: Host
    conn: Connection
    home: str = "~"
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.host.name

    def path(self, p: str) -> str:
        return expand(p, self.home)

    @property
    def state_dir(self) -> str:
        return self.path(self.host.state_dir)

    def sh(self, command: str, check: bool = True, timeout: float | None = 120) -> str:
        result = self.conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        if check and result.exited != 0:
            err = (result.stderr or result.stdout).strip().splitlines()
            raise HostFailure(f"`{command.split()[0]}` failed (exit {result.exited}): {err[-1] if err else ''}")
        return result.stdout

    def write(self, path: str, content: bytes, mode: int = 0o644) -> None:
        """Atomic on the node: a temp file renamed into place. The temp file is made empty with `mode`
        (under umask 077) before a byte of `content` reaches it: SFTP's upload truncates an existing
        file and keeps its mode, where a file it creates gets the server's umask (0644), readable by
        every user on the node while a secret (the Ray token) is written into it."""
        import io

        tmp, quoted = f"{path}.lathe-tmp", shlex.quote(f"{path}.lathe-tmp")
        self.sh(f"mkdir -p {shlex.quote(os.path.dirname(path))} && rm -f {quoted} && "
                f"(umask 077 && : > {quoted}) && chmod {mode:o} {quoted}")
        self.conn.put(io.BytesIO(content), tmp)
        self.sh(f"mv -f {quoted} {shlex.quote(path)}")

    def sha256s(self, paths: Iterable[str]) -> dict[str, str]:
        quoted = " ".join(shlex.quote(p) for p in paths)
        out = self.sh(f"sha256sum {quoted} 2>/dev/null || true", check=False)
        return {line.split(None, 1)[1].strip(): line.split(None, 1)[0] for line in out.splitlines() if "  " in line}

    def close(self) -> None:
        self.conn.close()


# What preflight asks each host, in one round trip. Values come back as key=value lines.
_FACTS = r"""
echo "home=$HOME"
echo "os=$(uname -s)"
echo "arch=$(uname -m)"
echo "user=$(id -un)"
if [ -d /run/systemd/system ] && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then echo systemd=1; fi
probe() {
  "$1" - <<'EOF' 2>&1 | tail -n 1
import json, sys
from importlib import metadata
info = {"python": "%%d.%%d.%%d" %% sys.version_info[:3], "executable": sys.executable}
for mod in ("venv", "ray", "orchestrator"):
    try:
        m = __import__(mod)
        info[mod] = getattr(m, "__version__", "yes")
    except Exception as exc:
        info[mod] = None
try:
    info["lathe"] = metadata.version("lathe")
except metadata.PackageNotFoundError:
    info["lathe"] = None
print(json.dumps(info))
EOF
}
PY=%(python)s
if command -v "$PY" >/dev/null 2>&1; then echo "py=$(probe "$PY")"; else echo "py=missing"; fi
VENV=%(venv)s
if [ -n "$VENV" ]; then
  [ -x "$VENV/bin/python" ] && echo "venv_py=$(probe "$VENV/bin/python")"
  d=$VENV; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
  echo "venv_disk_kb=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
fi
d=%(state_dir)s; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "disk_kb=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
for tool in prometheus-node-exporter node_exporter dcgm-exporter nvidia-smi; do
  p=$(command -v $tool 2>/dev/null) && echo "bin_$tool=$p"
done
if [ %(gpus)d -gt 0 ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu=/'
fi
for svc in %(services)s; do
  f=%(state_dir)s/$svc.pid
  # Alive and not a zombie: a killed supervisor lingers as one until init reaps it.
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$(cat "$f")/status"
  then echo "running_$svc=$(cat "$f")"; fi
done
"""


def gather_facts(node: Node, venv: str | None = None) -> dict[str, Any]:
    """What the host has; with `venv` (kind venv), also that venv's interpreter and the disk under it."""
    host = node.host
    script = _FACTS % {"python": shlex.quote(host.python), "state_dir": _shell_path(host.state_dir),
                       "gpus": host.gpus, "services": " ".join(SERVICES),
                       "venv": _shell_path(venv) if venv else "''"}
    facts: dict[str, Any] = {"gpu": []}
    for line in node.sh(script, check=False).splitlines():
        key, _, value = line.partition("=")
        if key == "gpu":
            facts["gpu"].append(value.strip())
        elif key in ("py", "venv_py"):
            try:
                facts[key] = json.loads(value)
            except json.JSONDecodeError:
                facts[key] = None if value == "missing" else {"error": value}
        elif key:
            facts[key] = value.strip()
    node.home = facts.get("home", "~")
    node.facts = facts
    return facts


def _shell_path(p: str) -> str:
    """A path for the remote shell with ~ expanded there ("$HOME"), everything else quoted."""
    if p == "~" or p.startswith("~/"):
        return '"$HOME"' + (shlex.quote(p[1:]) if len(p) > 1 else "")
    return shlex.quote(p)


def attach(inv: Inventory, host: Host) -> Node:
    """Log in to `host` and learn what it has."""
    node = Node(host, connect(inv, host))
    node.conn.open()
    gather_facts(node, inv.node_env.venv if inv.node_env.kind == "venv" else None)
    return node


def parallel[T](fn: Callable[[T], Any], items: list[T]) -> list[tuple[T, Any, BaseException | None]]:
    """Run fn on every item at once (one SSH session per host); collect results and errors."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        futures = [(item, pool.submit(fn, item)) for item in items]
        out = []
        for item, fut in futures:
            try:
                out.append((item, fut.result(), None))
            except Exception as exc:  # noqa: BLE001 - reported per host by the caller
                out.append((item, None, exc))
        return out


def laptop_ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def ray_mismatch(python: str, ray: str | None, laptop_ray: str) -> str | None:
    """Why `python`'s Ray does not fit this laptop's, or None when it does: Ray wants one version."""
    if ray == laptop_ray:
        return None
    return (f"python {python}: ray {ray}, this laptop has {laptop_ray} "
            "(Ray wants one version across a cluster and its clients)")

