"""`lathe cluster up | status | down`: a Ray cluster on colocated hosts, over SSH.

up = preflight every host (if one fails, nothing is changed anywhere) -> node
environment -> services, head first (Ray, node_exporter, DCGM exporter) -> health
from Ray itself -> the cluster profile `lathe submit --cluster` reads. Every step
compares what is there with what is wanted, so a second `up` changes nothing.

Preflight is `preflight`; what runs on a host and how it is kept running (systemd, or the
supervisor script) is `services`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import profiles
from orchestrator.colo import node_env
from orchestrator.colo import nodes as nd
from orchestrator.colo import services as sv
from orchestrator.colo.inventory import Host, Inventory
from orchestrator.colo.nodes import HostReport, Node
from orchestrator.colo.preflight import preflight, wait_port
from orchestrator.errors import LatheError, ProvisionError


@dataclass
class Outcome:
    cluster: str
    hosts: list[HostReport]
    profile_path: Path | None = None
    changed: bool = False
    healthy: bool = True



# -- the cluster's token and profile ---------------------------------------------------------------

def _token_path(inv: Inventory) -> Path:
    return profiles.config_dir() / "tokens" / inv.name


def _ensure_token(inv: Inventory) -> Path:
    """The cluster's Ray auth token, made once on the laptop (0600) and copied to each node."""
    path = _token_path(inv)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


# -- health ---------------------------------------------------------------------------------------

def ray_nodes(profile: profiles.ClusterProfile) -> list[dict[str, Any]]:
    """Ray's own view of its nodes, through the dashboard (and the SSH tunnel, if any)."""
    from orchestrator.remote.connect import auth_headers, dashboard

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
    return profiles.config_dir() / "prometheus"


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
        pending = [n.name for n in nodes.values() if inv.node_env.kind == "venv" and not node_env.installed(inv, n)]
        if pending:
            say(f"node environment: {node_env.requirements(inv.node_env).decode().split()[0]} into "
                f"{inv.node_env.venv} on {', '.join(pending)}, from {node_env.source(inv.node_env)} "
                "(minutes: lathe[node] is ~7 GB)")
        for node, _, exc in nd.parallel(lambda n: sv.prepare(inv, n, token, reports[n.name]), list(nodes.values())):
            if exc is not None:
                raise ProvisionError(f"{node.name}: {nd.ssh_failure(exc, inv, node.host)}")
        order = [nodes[inv.head.name]] + [nodes[h.name] for h in inv.workers]
        head = order[0]
        workers = len(order) - 1
        say(f"services: head {head.name}, then {workers} worker{'' if workers == 1 else 's'}")
        try:
            for svc in sv.services_for(inv, head):
                sv.start(inv, head, svc, reports[head.name])
            wait_port(head, head.host.address, inv.ray.port, 120)
            dash = head.host.address if inv.ray.dashboard_host in ("0.0.0.0", "::") else inv.ray.dashboard_host
            wait_port(head, dash, inv.ray.dashboard_port, 120)
        except Exception as exc:  # noqa: BLE001 - any failure here is the head's, reported as such
            raise ProvisionError(f"{head.name}: {nd.ssh_failure(exc, inv, head.host)}") from None

        def start_worker(node: Node) -> None:
            for svc in sv.services_for(inv, node):
                sv.start(inv, node, svc, reports[node.name])

        for node, _, exc in nd.parallel(start_worker, order[1:]):
            if exc is not None:
                raise ProvisionError(f"{node.name}: {nd.ssh_failure(exc, inv, node.host)}")
        for node in order:
            reports[node.name].notes += sv.monitoring_notes(inv, node)
        profile = profile_for(inv)
        before = profiles.load_all().get(inv.name)
        path = profiles.active_file()
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

    for host, node, exc in nd.parallel(lambda h: nd.attach(inv, h), inv.hosts):
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
            for svc in sv.services_for(inv, node):
                reports[node.name].services[svc.name] = "running" if sv.backend(inv, node).running(svc.name) else "stopped"
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
        for node, _, exc in nd.parallel(lambda n: sv.stop_all(inv, n, reports[n.name]), order):
            if exc is not None:
                reports[node.name].notes.append(nd.ssh_failure(exc, inv, node.host))
        if inv.head.name in nodes:
            sv.stop_all(inv, nodes[inv.head.name], reports[inv.head.name])
        changed = any(r.changes for r in reports.values())
        path = profiles.active_file()
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
