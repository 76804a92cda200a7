"""What runs on each host (Ray, the exporters) and how it is kept running: systemd where the host
has it, else a small supervisor script. Both back-ends answer the same three questions (running?
start, stop), so `provision` never branches on which one a host uses."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator import profiles
from orchestrator.colo import node_env
from orchestrator.colo import nodes as nd
from orchestrator.colo.inventory import Inventory
from orchestrator.colo.nodes import HostReport, Node

# The fallback supervisor: keeps one command running until NAME.stop appears. It is
# started with setsid, so it leads its own process group and `down` ends the group.
SUPERVISE = b"""#!/usr/bin/env bash
# Written by `lathe cluster up`. usage: supervise.sh NAME STATE_DIR ENV_FILE -- COMMAND...
name=$1 state=$2 envfile=$3; shift 4
echo $$ > "$state/$name.pid"
if [ -n "$envfile" ]; then set -a; . "$envfile"; set +a; fi
delay=1
while [ ! -e "$state/$name.stop" ]; do
  started=$(date +%s)
  "$@"
  code=$?
  [ -e "$state/$name.stop" ] && break
  echo "$(date -u +%FT%TZ) supervise: $name exited ($code); restarting in ${delay}s"
  sleep "$delay"
  if [ $(( $(date +%s) - started )) -gt 60 ]; then delay=1; elif [ "$delay" -lt 30 ]; then delay=$(( delay * 2 )); fi
done
"""


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # never secrets: those stay in the node's env_file

    def spec(self, *extra: str) -> str:
        blob = json.dumps([self.argv, self.env, *extra])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def node_python(inv: Inventory, node: Node) -> str:
    if inv.node_env.kind == "venv":
        return node_env.venv_python(inv, node)
    return node.facts.get("py", {}).get("executable") or node.host.python


def services_for(inv: Inventory, node: Node) -> list[Service]:
    host, python = node.host, node_python(inv, node)
    ray = f"{os.path.dirname(python)}/ray"
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if inv.ray.token_auth:
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": f"{node.state_dir}/ray-token"}
    argv = [ray, "start", "--block", "--node-ip-address", host.address, "--disable-usage-stats",
            "--metrics-export-port", str(inv.ray.metrics_export_port), "--num-gpus", str(host.gpus)]
    resources: dict[str, int] = {}
    if host.role == "head":
        argv += ["--head", "--port", str(inv.ray.port), "--dashboard-host", inv.ray.dashboard_host,
                 "--dashboard-port", str(inv.ray.dashboard_port)]
        resources[profiles.RUN_SLOT] = inv.ray.run_slots
        env["RAY_JOB_START_TIMEOUT_SECONDS"] = str(profiles.JOB_START_TIMEOUT_S)  # read by the head's job manager
    else:
        argv += ["--address", f"{inv.head.address}:{inv.ray.port}"]
    if host.cpus is not None:
        argv += ["--num-cpus", str(host.cpus)]
    if host.ray_temp_dir:
        argv += ["--temp-dir", node.path(host.ray_temp_dir)]
    if host.accelerator:
        # Ray's own convention: tasks asking for accelerator_type="A100" need this resource.
        resources[f"accelerator_type:{host.accelerator}"] = 1
    if resources:
        argv += ["--resources", json.dumps(resources)]
    out = [Service("ray", argv, env)]
    exporter = node.facts.get("bin_prometheus-node-exporter") or node.facts.get("bin_node_exporter")
    if inv.monitoring.node_exporter and exporter:
        listen = f"--web.listen-address={host.address}:{inv.monitoring.node_exporter_port}"
        out.append(Service("node-exporter", [exporter, listen]))
    dcgm = node.facts.get("bin_dcgm-exporter")
    if inv.monitoring.dcgm_exporter and host.gpus and dcgm:
        out.append(Service("dcgm-exporter", [dcgm, "-a", f"{host.address}:{inv.monitoring.dcgm_exporter_port}"]))
    return out


def monitoring_notes(inv: Inventory, node: Node) -> list[str]:
    notes = []
    if inv.monitoring.node_exporter and not any(k in node.facts for k in ("bin_prometheus-node-exporter",
                                                                           "bin_node_exporter")):
        notes.append("node_exporter not installed: no host metrics (apt install prometheus-node-exporter)")
    if inv.monitoring.dcgm_exporter and node.host.gpus and "bin_dcgm-exporter" not in node.facts:
        notes.append("dcgm-exporter not installed: no GPU metrics in Prometheus")
    return notes


class Backend(Protocol):
    """How a host keeps a service running."""

    def running(self, name: str) -> bool: ...

    def start(self, svc: Service, restart: bool) -> None: ...

    def stop(self, name: str) -> bool:
        """Stop it; True if it was running."""


@dataclass
class Systemd:
    inv: Inventory
    node: Node

    def _sudo(self) -> str:
        return "" if self.node.facts.get("user") == "root" else "sudo -n "

    def unit(self, svc: Service) -> bytes:
        node = self.node
        env_file = f"EnvironmentFile=-{node.path(node.host.env_file)}\n" if node.host.env_file else ""
        envs = "".join(f"Environment={k}={v}\n" for k, v in svc.env.items())
        return (f"# Written by `lathe cluster up` for cluster {self.inv.name}.\n[Unit]\nDescription=Lathe {svc.name}\n"
                "After=network-online.target\nWants=network-online.target\n\n[Service]\n"
                f"User={node.facts.get('user', 'root')}\n{env_file}{envs}"
                f"ExecStart={' '.join(shlex.quote(a) for a in svc.argv)}\n"
                "Restart=on-failure\nRestartSec=5\nKillMode=control-group\nTimeoutStopSec=60\n\n"
                "[Install]\nWantedBy=multi-user.target\n").encode()

    def running(self, name: str) -> bool:
        return self.node.sh(f"systemctl is-active lathe-{name} || true", check=False).strip() == "active"

    def start(self, svc: Service, restart: bool) -> None:
        state, sudo = self.node.state_dir, self._sudo()
        unit = f"/etc/systemd/system/lathe-{svc.name}.service"
        self.node.write(f"{state}/lathe-{svc.name}.service", self.unit(svc))
        self.node.sh(f"{sudo}install -m 644 {shlex.quote(state)}/lathe-{svc.name}.service {unit} && "
                     f"{sudo}systemctl daemon-reload && {sudo}systemctl enable lathe-{svc.name} && "
                     f"{sudo}systemctl restart lathe-{svc.name}")

    def stop(self, name: str) -> bool:
        unit, sudo = f"lathe-{name}", self._sudo()
        active = self.running(name)
        self.node.sh(f"{sudo}systemctl disable --now {unit} 2>/dev/null; "
                     f"{sudo}rm -f /etc/systemd/system/{unit}.service; {sudo}systemctl daemon-reload; "
                     f"rm -f {shlex.quote(self.node.state_dir)}/{name}.spec", check=False)
        return active


@dataclass
class Supervisor:
    """SUPERVISE, started with setsid: it leads its own process group, and stopping ends the group."""

    node: Node

    def running(self, name: str) -> bool:
        return f"running_{name}" in self.node.facts

    def start(self, svc: Service, restart: bool) -> None:
        node, q = self.node, shlex.quote
        state = node.state_dir
        if restart:
            self.stop(svc.name)
        envs = [f"{k}={v}" for k, v in svc.env.items()]
        env_file = node.path(node.host.env_file) if node.host.env_file else ""
        command = " ".join(q(a) for a in ["env", *envs, *svc.argv])
        node.sh(f"mkdir -p {q(state)}/logs && rm -f {q(state)}/{svc.name}.stop {q(state)}/{svc.name}.pid && "
                f"(setsid nohup bash {q(state)}/supervise.sh {svc.name} {q(state)} {q(env_file)} -- {command} "
                f">> {q(state)}/logs/{svc.name}.log 2>&1 < /dev/null &) && "
                f"for i in $(seq 100); do [ -s {q(state)}/{svc.name}.pid ] && break; sleep 0.1; done; "
                f"test -s {q(state)}/{svc.name}.pid")

    def stop(self, name: str) -> bool:
        """The whole process group, TERM then KILL."""
        q, state = shlex.quote, self.node.state_dir
        out = self.node.sh(
            f"f={q(state)}/{name}.pid; [ -f \"$f\" ] || exit 0; pid=$(cat \"$f\"); touch {q(state)}/{name}.stop; "
            f"if kill -0 \"$pid\" 2>/dev/null; then echo was-running; kill -TERM -- -\"$pid\" 2>/dev/null; "
            f"for i in $(seq 150); do kill -0 -- -\"$pid\" 2>/dev/null || break; sleep 0.2; done; "
            f"kill -KILL -- -\"$pid\" 2>/dev/null; fi; rm -f \"$f\" {q(state)}/{name}.spec", check=False, timeout=60)
        return "was-running" in out


def backend(inv: Inventory, node: Node) -> Backend:
    return Systemd(inv, node) if node.facts.get("systemd") else Supervisor(node)


def start(inv: Inventory, node: Node, svc: Service, report: HostReport) -> None:
    """Start or restart one service if it is not running with exactly this spec."""
    spec = svc.spec(node.host.env_file or "", hashlib.sha256(SUPERVISE).hexdigest())
    spec_file = f"{node.state_dir}/{svc.name}.spec"
    current = node.sh(f"cat {shlex.quote(spec_file)} 2>/dev/null || true", check=False).strip()
    keeper = backend(inv, node)
    running = keeper.running(svc.name)
    if current == spec and running:
        report.services[svc.name] = "running"
        return
    keeper.start(svc, restart=running)
    node.sh(f"echo {spec} > {shlex.quote(spec_file)}")
    report.services[svc.name] = "running"
    report.changes.append(f"{svc.name} {'restarted' if running else 'started'}")


def stop_all(inv: Inventory, node: Node, report: HostReport) -> None:
    keeper = backend(inv, node)
    for name in reversed(nd.SERVICES):  # exporters first, Ray last
        if keeper.stop(name):
            report.changes.append(f"{name} stopped")
        report.services[name] = "stopped"


def prepare(inv: Inventory, node: Node, token: Path | None, report: HostReport) -> None:
    """The node environment and the files services need, each only if it differs."""
    node_env.install(inv, node, report)
    state = node.state_dir
    files = {f"{state}/supervise.sh": (SUPERVISE, 0o755)}
    if token is not None:
        files[f"{state}/ray-token"] = (token.read_bytes(), 0o600)
    have = node.sha256s(files)
    for path, (content, mode) in files.items():
        if have.get(path) != hashlib.sha256(content).hexdigest():
            node.write(path, content, mode)
            report.changes.append(f"{os.path.basename(path)} written")
