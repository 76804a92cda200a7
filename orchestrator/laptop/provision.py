"""`lathe cluster up | status | down`: a Ray cluster on colocated hosts, over SSH.

up = preflight every host (if one fails, nothing is changed anywhere) -> node
environment -> services, head first (Ray, node_exporter, DCGM exporter) -> health
from Ray itself -> the cluster profile `lathe submit --cluster` reads. Every step
compares what is there with what is wanted, so a second `up` changes nothing.

Services run under systemd where the login can use it, and otherwise under a small
supervisor (restart with back-off, its own session so it outlives the SSH login).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import profiles
from orchestrator.errors import LatheError
from orchestrator.laptop import nodes as nd
from orchestrator.laptop.inventory import Host, Inventory
from orchestrator.laptop.nodes import HostFailure, Node


class ProvisionError(LatheError):
    exit_code = 6


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

_LISTEN = ("import socket,sys\ns=socket.create_server(('',int(sys.argv[1])))\ns.settimeout(float(sys.argv[3]))\n"
           "for _ in range(int(sys.argv[2])):\n  s.accept()[0].close()\n")
_PROBE = ("import socket,sys,time\nend=time.time()+float(sys.argv[3])\nwhile True:\n  try:\n"
          "    socket.create_connection((sys.argv[1],int(sys.argv[2])),3).close(); break\n  except OSError as e:\n"
          "    if time.time()>end: print(e.strerror or e); sys.exit(1)\n    time.sleep(0.3)\n")


# Ray puts sockets at TEMP/session_<date>_<pid>/sockets/dash_<Module>: 107 bytes at most in all.
MAX_RAY_TEMP_DIR = 38


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # never secrets: those stay in the node's env_file

    def spec(self, *extra: str) -> str:
        blob = json.dumps([self.argv, self.env, *extra])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


@dataclass
class Outcome:
    cluster: str
    hosts: list[HostReport]
    profile_path: Path | None = None
    changed: bool = False
    healthy: bool = True


# -- preflight ------------------------------------------------------------------------------------

def _node_python(inv: Inventory, node: Node) -> str:
    if inv.node_env.kind == "venv":
        return f"{node.path(inv.node_env.venv)}/bin/python"
    return node.facts.get("py", {}).get("executable") or node.host.python


def _host_problems(inv: Inventory, node: Node, ray_version: str) -> list[str]:
    host, facts, problems = node.host, node.facts, []
    if facts.get("os") != "Linux":
        problems.append(f"OS is {facts.get('os') or 'unknown'}; Lathe nodes run Linux")
    py = facts.get("py")
    if not py:
        problems.append(f"python {host.python}: not found on the host")
    elif "error" in py:
        problems.append(f"python {host.python}: does not run ({py['error'][:120]})")
    elif inv.node_env.kind == "existing":
        if not py.get("ray"):
            problems.append(f"python {host.python}: has no ray (install lathe[node] there, or use node_env.kind: venv)")
        elif py["ray"] != ray_version:
            problems.append(f"python {host.python}: ray {py['ray']}, this laptop has {ray_version} "
                            "(Ray wants one version across a cluster and its clients)")
        if py.get("ray") and not py.get("orchestrator"):
            problems.append(f"python {host.python}: has no lathe (the orchestrator package)")
    elif not py.get("venv"):
        problems.append(f"python {host.python}: has no venv module (apt install python3-venv)")
    free_gb = int(facts.get("disk_kb") or 0) / 1e6
    if free_gb < host.min_free_disk_gb:
        problems.append(f"{free_gb:.1f} GB free under {host.state_dir}, {host.min_free_disk_gb:g} GB wanted "
                        "(min_free_disk_gb)")
    if host.ray_temp_dir and len(node.path(host.ray_temp_dir)) > MAX_RAY_TEMP_DIR:
        problems.append(f"ray_temp_dir {host.ray_temp_dir} is too long: Ray's socket paths under it would pass "
                        f"the 107-byte AF_UNIX limit (keep it to {MAX_RAY_TEMP_DIR} characters)")
    if host.gpus:
        gpus = facts.get("gpu", [])
        if "bin_nvidia-smi" not in facts:
            problems.append(f"declares {host.gpus} GPUs but has no nvidia-smi (driver not installed?)")
        elif len(gpus) < host.gpus or any("," not in g for g in gpus):
            problems.append(f"declares {host.gpus} GPUs, nvidia-smi shows: {'; '.join(gpus) or 'none'}")
    return problems


def _probe_ray_port(inv: Inventory, nodes: dict[str, Node], failures: dict[str, list[str]]) -> None:
    """Can every worker open a TCP connection to the head's GCS port? (The usual firewall trap.)"""
    head = nodes.get(inv.head.name)
    workers = [n for n in nodes.values() if n.host.role == "worker" and n.name not in failures]
    if head is None or inv.head.name in failures:
        return
    port, py = inv.ray.port, shlex.quote(_node_python_for_probe(head))
    listener = None
    if "running_ray" not in head.facts:
        listener = head.conn.run(f"{py} -c {shlex.quote(_LISTEN)} {port} {len(workers)} 15", asynchronous=True,
                                 hide=True, warn=True, in_stream=False)
        time.sleep(0.3)

    def probe(node: Node) -> None:
        out = node.sh(f"{shlex.quote(_node_python_for_probe(node))} -c {shlex.quote(_PROBE)} "
                      f"{shlex.quote(inv.head.address)} {port} 10 || echo FAILED", check=False)
        if "FAILED" in out:
            reason = out.replace("FAILED", "").strip() or "refused"
            failures.setdefault(node.name, []).append(
                f"cannot reach the head's Ray port {inv.head.address}:{port} ({reason}): open it between the hosts")

    for _node, _, exc in nd.parallel(probe, workers):
        if exc is not None:
            failures.setdefault(_node.name, []).append(nd.ssh_failure(exc, inv, _node.host))
    if listener is not None:
        result = listener.join()
        if result.exited != 0 and "in use" in (result.stderr or ""):
            failures.setdefault(head.name, []).append(f"port {port} is already in use by another program")


def _node_python_for_probe(node: Node) -> str:
    return node.facts.get("py", {}).get("executable") or node.host.python


def preflight(inv: Inventory) -> dict[str, Node]:
    """Connect to every host and check it; raise naming each failing host before anything changes."""
    ray_version = nd.laptop_ray_version()
    failures: dict[str, list[str]] = {}
    nodes: dict[str, Node] = {}

    def check(host: Host) -> Node:
        node = Node(host, nd.connect(inv, host))
        node.conn.open()
        nd.gather_facts(node)
        return node

    for host, node, exc in nd.parallel(check, inv.hosts):
        if exc is not None:
            failures[host.name] = [nd.ssh_failure(exc, inv, host)]
            continue
        nodes[host.name] = node
        problems = _host_problems(inv, node, ray_version)
        if problems:
            failures[host.name] = problems
    pythons = {n.name: n.facts["py"]["python"].rsplit(".", 1)[0] for n in nodes.values()
               if n.facts.get("py") and "python" in n.facts["py"] and n.name not in failures}
    head_py = pythons.get(inv.head.name)
    for name, version in pythons.items():
        if head_py and version != head_py and inv.node_env.kind == "existing":
            failures.setdefault(name, []).append(f"Python {version}, the head has {head_py}: Ray needs one version")
    if not failures:
        _probe_ray_port(inv, nodes, failures)
    if failures:
        for node in nodes.values():
            node.close()
        lines = [f"  {name} ({inv.host(name).address}): {reason}"
                 for name in (h.name for h in inv.hosts) for reason in failures.get(name, [])]
        raise ProvisionError(f"cluster {inv.name}: preflight failed on {len(failures)} of {len(inv.hosts)} hosts; "
                             "nothing was changed:\n" + "\n".join(lines))
    return nodes


# -- node environment and services -----------------------------------------------------------------

def _token_path(inv: Inventory) -> Path:
    return profiles.user_file().parent / "tokens" / inv.name


def _ensure_token(inv: Inventory) -> Path:
    """The cluster's Ray auth token, made once on the laptop (0600) and copied to each node."""
    path = _token_path(inv)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def _install_env(inv: Inventory, node: Node, report: HostReport) -> None:
    if inv.node_env.kind != "venv":
        return
    if not inv.node_env.requirements:
        raise HostFailure("node_env.kind venv needs node_env.requirements (a pinned file including lathe[node])")
    wanted = Path(os.path.expanduser(inv.node_env.requirements)).read_bytes()
    digest = hashlib.sha256(wanted + json.dumps(inv.node_env.pip_args).encode()).hexdigest()
    venv = node.path(inv.node_env.venv)
    marker = f"{venv}/.lathe-requirements.sha256"
    if node.sh(f"cat {shlex.quote(marker)} 2>/dev/null || true", check=False).strip() == digest:
        return
    req = f"{node.state_dir}/requirements.txt"
    node.write(req, wanted)
    node.sh(f"[ -x {shlex.quote(venv)}/bin/python ] || {shlex.quote(node.host.python)} -m venv {shlex.quote(venv)}")
    pip_args = " ".join(shlex.quote(a) for a in inv.node_env.pip_args)
    node.sh(f"{shlex.quote(venv)}/bin/python -m pip install -q {pip_args} -r {shlex.quote(req)}", timeout=3600)
    node.sh(f"echo {digest} > {shlex.quote(marker)}")
    report.changes.append("node environment installed")
    nd.gather_facts(node)  # what the venv now has, for the health report


def services_for(inv: Inventory, node: Node) -> list[Service]:
    host, python = node.host, _node_python(inv, node)
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


def _monitoring_notes(inv: Inventory, node: Node) -> list[str]:
    notes = []
    if inv.monitoring.node_exporter and not any(k in node.facts for k in ("bin_prometheus-node-exporter",
                                                                           "bin_node_exporter")):
        notes.append("node_exporter not installed: no host metrics (apt install prometheus-node-exporter)")
    if inv.monitoring.dcgm_exporter and node.host.gpus and "bin_dcgm-exporter" not in node.facts:
        notes.append("dcgm-exporter not installed: no GPU metrics in Prometheus")
    return notes


def _unit(inv: Inventory, node: Node, svc: Service) -> bytes:
    env_file = f"EnvironmentFile=-{node.path(node.host.env_file)}\n" if node.host.env_file else ""
    envs = "".join(f"Environment={k}={v}\n" for k, v in svc.env.items())
    return (f"# Written by `lathe cluster up` for cluster {inv.name}.\n[Unit]\nDescription=Lathe {svc.name}\n"
            "After=network-online.target\nWants=network-online.target\n\n[Service]\n"
            f"User={node.facts.get('user', 'root')}\n{env_file}{envs}"
            f"ExecStart={' '.join(shlex.quote(a) for a in svc.argv)}\n"
            "Restart=on-failure\nRestartSec=5\nKillMode=control-group\nTimeoutStopSec=60\n\n"
            "[Install]\nWantedBy=multi-user.target\n").encode()


def _sudo(node: Node) -> str:
    return "" if node.facts.get("user") == "root" else "sudo -n "


def _running(node: Node, name: str) -> bool:
    if node.facts.get("systemd"):
        return node.sh(f"systemctl is-active lathe-{name} || true", check=False).strip() == "active"
    return f"running_{name}" in node.facts


def _start(inv: Inventory, node: Node, svc: Service, report: HostReport) -> None:
    """Start or restart one service if it is not running with exactly this spec."""
    state = node.state_dir
    spec = svc.spec(node.host.env_file or "", hashlib.sha256(SUPERVISE).hexdigest())
    spec_file = f"{state}/{svc.name}.spec"
    current = node.sh(f"cat {shlex.quote(spec_file)} 2>/dev/null || true", check=False).strip()
    if current == spec and _running(node, svc.name):
        report.services[svc.name] = "running"
        return
    verb = "restarted" if _running(node, svc.name) else "started"
    if node.facts.get("systemd"):
        unit = f"/etc/systemd/system/lathe-{svc.name}.service"
        node.write(f"{state}/lathe-{svc.name}.service", _unit(inv, node, svc))
        node.sh(f"{_sudo(node)}install -m 644 {shlex.quote(state)}/lathe-{svc.name}.service {unit} && "
                f"{_sudo(node)}systemctl daemon-reload && {_sudo(node)}systemctl enable lathe-{svc.name} && "
                f"{_sudo(node)}systemctl restart lathe-{svc.name}")
    else:
        if verb == "restarted":
            _stop_supervised(node, svc.name)
        envs = [f"{k}={v}" for k, v in svc.env.items()]
        env_file = node.path(node.host.env_file) if node.host.env_file else ""
        command = " ".join(shlex.quote(a) for a in ["env", *envs, *svc.argv])
        q = shlex.quote
        node.sh(f"mkdir -p {q(state)}/logs && rm -f {q(state)}/{svc.name}.stop {q(state)}/{svc.name}.pid && "
                f"(setsid nohup bash {q(state)}/supervise.sh {svc.name} {q(state)} {q(env_file)} -- {command} "
                f">> {q(state)}/logs/{svc.name}.log 2>&1 < /dev/null &) && "
                f"for i in $(seq 100); do [ -s {q(state)}/{svc.name}.pid ] && break; sleep 0.1; done; "
                f"test -s {q(state)}/{svc.name}.pid")
    node.sh(f"echo {spec} > {shlex.quote(spec_file)}")
    report.services[svc.name] = "running"
    report.changes.append(f"{svc.name} {verb}")


def _stop_supervised(node: Node, name: str) -> bool:
    """Stop a supervised service: its whole process group, TERM then KILL. True if one was running."""
    q, state = shlex.quote, node.state_dir
    out = node.sh(
        f"f={q(state)}/{name}.pid; [ -f \"$f\" ] || exit 0; pid=$(cat \"$f\"); touch {q(state)}/{name}.stop; "
        f"if kill -0 \"$pid\" 2>/dev/null; then echo was-running; kill -TERM -- -\"$pid\" 2>/dev/null; "
        f"for i in $(seq 150); do kill -0 -- -\"$pid\" 2>/dev/null || break; sleep 0.2; done; "
        f"kill -KILL -- -\"$pid\" 2>/dev/null; fi; rm -f \"$f\" {q(state)}/{name}.spec", check=False, timeout=60)
    return "was-running" in out


def _stop(node: Node, name: str) -> bool:
    if node.facts.get("systemd"):
        unit = f"lathe-{name}"
        active = node.sh(f"systemctl is-active {unit} || true", check=False).strip() == "active"
        node.sh(f"{_sudo(node)}systemctl disable --now {unit} 2>/dev/null; "
                f"{_sudo(node)}rm -f /etc/systemd/system/{unit}.service; {_sudo(node)}systemctl daemon-reload; "
                f"rm -f {shlex.quote(node.state_dir)}/{name}.spec", check=False)
        return active
    return _stop_supervised(node, name)


def _prepare(inv: Inventory, node: Node, token: Path | None, report: HostReport) -> None:
    """The node environment and the files services need, each only if it differs."""
    _install_env(inv, node, report)
    state = node.state_dir
    files = {f"{state}/supervise.sh": (SUPERVISE, 0o755)}
    if token is not None:
        files[f"{state}/ray-token"] = (token.read_bytes(), 0o600)
    have = node.sha256s(files)
    for path, (content, mode) in files.items():
        if have.get(path) != hashlib.sha256(content).hexdigest():
            node.write(path, content, mode)
            report.changes.append(f"{os.path.basename(path)} written")


def _wait_port(node: Node, address: str, port: int, timeout: float) -> None:
    py = shlex.quote(_node_python_for_probe(node))
    out = node.sh(f"{py} -c {shlex.quote(_PROBE)} {address} {port} {timeout} || echo FAILED", check=False,
                  timeout=timeout + 30)
    if "FAILED" in out:
        log = f"{node.state_dir}/logs/ray.log"
        raise HostFailure(f"Ray did not open {address}:{port} within {timeout:.0f} s (see {log} on the host)")


# -- health ---------------------------------------------------------------------------------------

def ray_nodes(profile: profiles.ClusterProfile) -> list[dict[str, Any]]:
    """Ray's own view of its nodes, through the dashboard (and the SSH tunnel, if any)."""
    from orchestrator.laptop.connect import auth_headers, dashboard

    with dashboard(profile) as url:
        request = urllib.request.Request(f"{url}/api/v0/nodes?limit=1000", headers=auth_headers(profile))
        with urllib.request.urlopen(request, timeout=20) as response:
            body = json.load(response)
    return body.get("data", {}).get("result", {}).get("result", [])


def _wait_healthy(inv: Inventory, profile: profiles.ClusterProfile, reports: dict[str, HostReport],
                  timeout: float) -> bool:
    deadline, alive = time.monotonic() + timeout, {}
    while True:
        try:
            alive = {n["node_ip"]: n for n in ray_nodes(profile) if n.get("state") == "ALIVE"}
        except (OSError, ValueError, LatheError):
            alive = {}
        if all(h.address in alive for h in inv.hosts) or time.monotonic() > deadline:
            break
        time.sleep(2)
    for host in inv.hosts:
        node = alive.get(host.address)
        report = reports[host.name]
        report.ray = "ALIVE" if node else "not joined"
        if node:
            seen = int(node.get("resources_total", {}).get("GPU", 0))
            report.gpus = f"{seen}/{host.gpus}"
            if seen != host.gpus:
                report.notes.append(f"Ray sees {seen} GPUs, the inventory declares {host.gpus}")
    return all(h.address in alive for h in inv.hosts)


def profile_for(inv: Inventory) -> profiles.ClusterProfile:
    head = inv.head
    loopback = inv.ray.dashboard_host in ("127.0.0.1", "localhost", "::1")
    tunnel = profiles.SSHTunnel(host=head.address, user=head.user, port=head.port, key=head.key,
                                known_hosts=inv.known_hosts, remote_port=inv.ray.dashboard_port) if loopback else None
    address = f"http://127.0.0.1:{inv.ray.dashboard_port}" if loopback else f"http://{head.address}:" \
                                                                             f"{inv.ray.dashboard_port}"
    python = head.python if inv.node_env.kind == "existing" else f"{inv.node_env.venv}/bin/python"
    return profiles.ClusterProfile(
        name=inv.name, ray_address=address, ssh_tunnel=tunnel, store=inv.store,
        auth_token_file=str(_token_path(inv)) if inv.ray.token_auth else None,
        prometheus_url=inv.monitoring.prometheus_url, pushgateway_url=inv.monitoring.pushgateway_url,
        price_per_gpu_hour=inv.price_per_gpu_hour, python=python, run_slots=inv.ray.run_slots)


def scrape_targets(inv: Inventory) -> dict[str, list[dict[str, Any]]]:
    """Prometheus file_sd target lists (infra/prometheus/prometheus.yml reads them)."""
    def group(port: int, hosts: list[Host]) -> list[dict[str, Any]]:
        return [{"targets": [f"{h.address}:{port}"], "labels": {"cluster": inv.name, "host": h.name,
                                                               "role": h.role}} for h in hosts]
    return {"nodes": group(inv.monitoring.node_exporter_port, inv.hosts),
            "gpus": group(inv.monitoring.dcgm_exporter_port, [h for h in inv.hosts if h.gpus]),
            "ray": group(inv.ray.metrics_export_port, inv.hosts)}


def _targets_dir() -> Path:
    return profiles.user_file().parent / "prometheus"


def _write_if_changed(path: Path, content: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)
    return True


# -- the commands ---------------------------------------------------------------------------------

def up(inv: Inventory, say: Any = print, health_timeout: float = 180) -> Outcome:
    say(f"preflight: {len(inv.hosts)} hosts")
    nodes = preflight(inv)
    reports = {h.name: HostReport(h.name, h.role, h.address) for h in inv.hosts}
    try:
        token = _ensure_token(inv) if inv.ray.token_auth else None
        for node, _, exc in nd.parallel(lambda n: _prepare(inv, n, token, reports[n.name]), list(nodes.values())):
            if exc is not None:
                raise ProvisionError(f"{node.name}: {nd.ssh_failure(exc, inv, node.host)}")
        order = [nodes[inv.head.name]] + [nodes[h.name] for h in inv.workers]
        head = order[0]
        workers = len(order) - 1
        say(f"services: head {head.name}, then {workers} worker{'' if workers == 1 else 's'}")
        try:
            for svc in services_for(inv, head):
                _start(inv, head, svc, reports[head.name])
            _wait_port(head, head.host.address, inv.ray.port, 120)
            dash = head.host.address if inv.ray.dashboard_host in ("0.0.0.0", "::") else inv.ray.dashboard_host
            _wait_port(head, dash, inv.ray.dashboard_port, 120)
        except Exception as exc:  # noqa: BLE001 - any failure here is the head's, reported as such
            raise ProvisionError(f"{head.name}: {nd.ssh_failure(exc, inv, head.host)}") from None

        def start_worker(node: Node) -> None:
            for svc in services_for(inv, node):
                _start(inv, node, svc, reports[node.name])

        for node, _, exc in nd.parallel(start_worker, order[1:]):
            if exc is not None:
                raise ProvisionError(f"{node.name}: {nd.ssh_failure(exc, inv, node.host)}")
        for node in order:
            reports[node.name].notes += _monitoring_notes(inv, node)
        profile = profile_for(inv)
        before = profiles.load_all().get(inv.name)
        path = Path(os.environ.get("LATHE_CLUSTERS") or profiles.user_file())
        profile_changed = before is None or before.model_dump() != profile.model_dump()
        if profile_changed:
            profiles.save(profile, path)
        targets_changed = False
        for kind, groups in scrape_targets(inv).items():
            targets_changed |= _write_if_changed(_targets_dir() / f"{inv.name}-{kind}.json",
                                                 json.dumps(groups, indent=2) + "\n")
        say("health: waiting for every node to join Ray")
        healthy = _wait_healthy(inv, profile, reports, health_timeout)
        changed = profile_changed or targets_changed or any(r.changes for r in reports.values())
        return Outcome(inv.name, [reports[h.name] for h in inv.hosts], path, changed, healthy)
    finally:
        for node in nodes.values():
            node.close()


def _connect_all(inv: Inventory, reports: dict[str, HostReport]) -> dict[str, Node]:
    nodes: dict[str, Node] = {}

    def attach(host: Host) -> Node:
        node = Node(host, nd.connect(inv, host))
        node.conn.open()
        nd.gather_facts(node)
        return node

    for host, node, exc in nd.parallel(attach, inv.hosts):
        if exc is not None:
            reports[host.name].notes.append(nd.ssh_failure(exc, inv, host))
        else:
            nodes[host.name] = node
    return nodes


def status(inv: Inventory) -> Outcome:
    reports = {h.name: HostReport(h.name, h.role, h.address) for h in inv.hosts}
    nodes = _connect_all(inv, reports)
    try:
        for node in nodes.values():
            for svc in services_for(inv, node):
                reports[node.name].services[svc.name] = "running" if _running(node, svc.name) else "stopped"
        healthy = len(nodes) == len(inv.hosts) and all(
            s == "running" for r in reports.values() for s in r.services.values())
        if "running" in reports[inv.head.name].services.get("ray", ""):
            healthy &= _wait_healthy(inv, profile_for(inv), reports, timeout=0)
        else:
            healthy = False
        return Outcome(inv.name, [reports[h.name] for h in inv.hosts], None, False, healthy)
    finally:
        for node in nodes.values():
            node.close()


def down(inv: Inventory) -> Outcome:
    """Stop what `up` started, workers first; remove the profile and scrape targets it wrote."""
    reports = {h.name: HostReport(h.name, h.role, h.address) for h in inv.hosts}
    nodes = _connect_all(inv, reports)
    try:
        order = [nodes[h.name] for h in inv.workers if h.name in nodes]
        for node, _, exc in nd.parallel(lambda n: _stop_all(n, reports[n.name]), order):
            if exc is not None:
                reports[node.name].notes.append(nd.ssh_failure(exc, inv, node.host))
        if inv.head.name in nodes:
            _stop_all(nodes[inv.head.name], reports[inv.head.name])
        changed = any(r.changes for r in reports.values())
        path = Path(os.environ.get("LATHE_CLUSTERS") or profiles.user_file())
        changed |= profiles.remove(inv.name, path)
        for kind in ("nodes", "gpus", "ray"):
            target = _targets_dir() / f"{inv.name}-{kind}.json"
            if target.is_file():
                target.unlink()
                changed = True
        healthy = len(nodes) == len(inv.hosts)
        return Outcome(inv.name, [reports[h.name] for h in inv.hosts], path, changed, healthy)
    finally:
        for node in nodes.values():
            node.close()


def _stop_all(node: Node, report: HostReport) -> None:
    for name in reversed(nd.SERVICES):  # exporters first, Ray last
        if _stop(node, name):
            report.changes.append(f"{name} stopped")
        report.services[name] = "stopped"
