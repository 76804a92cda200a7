"""Every check `lathe cluster up` makes before it changes anything: the OS, Python and Ray on each
host (or, for a venv, Python 3.12, room for it and a wheelhouse with this laptop's lathe), disk, the
GPUs it declares and their driver, that no two hosts share a state_dir (an NFS home), and whether every
worker can reach the head's Ray port."""

from __future__ import annotations

import secrets
import shlex
import time

from orchestrator.colo import node_env
from orchestrator.colo import nodes as nd
from orchestrator.colo.inventory import Inventory
from orchestrator.colo.nodes import HostFailure, Node
from orchestrator.errors import ProvisionError

_LISTEN = ("import socket,sys\ns=socket.create_server(('',int(sys.argv[1])))\ns.settimeout(float(sys.argv[3]))\n"
           "for _ in range(int(sys.argv[2])):\n  s.accept()[0].close()\n")


_PROBE = ("import socket,sys,time\nend=time.time()+float(sys.argv[3])\nwhile True:\n  try:\n"
          "    socket.create_connection((sys.argv[1],int(sys.argv[2])),3).close(); break\n  except OSError as e:\n"
          "    if time.time()>end: print(e.strerror or e); sys.exit(1)\n    time.sleep(0.3)\n")


# Ray puts sockets at TEMP/session_<date>_<pid>/sockets/dash_<Module>: 107 bytes at most in all.
MAX_RAY_TEMP_DIR = 38


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
        elif mismatch := nd.ray_mismatch(host.python, py["ray"], ray_version):
            problems.append(mismatch)
        if py.get("ray") and not py.get("orchestrator"):
            problems.append(f"python {host.python}: has no lathe (the orchestrator package)")
    else:
        problems += _venv_problems(inv, node)
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
        else:
            drivers = sorted({g.rsplit(",", 1)[1].strip() for g in gpus}, key=_version)
            if _version(drivers[0]) < _version(host.min_driver):
                problems.append(f"NVIDIA driver {drivers[0]}, {host.min_driver} or newer wanted (min_driver: the "
                                "locked torch is built for CUDA 13.0); upgrade the driver")
    return problems


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _venv_problems(inv: Inventory, node: Node) -> list[str]:
    """kind venv: a Python 3.12 with venv, room for lathe[node], and a wheelhouse that has it."""
    host, py, problems = node.host, node.facts["py"], []
    if _version(py["python"])[:2] != node_env.PYTHON:
        want = ".".join(map(str, node_env.PYTHON))
        problems.append(f"python {host.python}: Python {py['python']}, the node stack is locked for {want} "
                        f"(install python{want} and point `python` at it)")
    elif not py.get("venv"):
        problems.append(f"python {host.python}: has no venv module (apt install python3-venv)")
    if node_env.installed(inv, node):
        return problems
    free_gb = int(node.facts.get("venv_disk_kb") or 0) / 1e6
    if free_gb < inv.node_env.min_free_disk_gb:
        problems.append(f"{free_gb:.1f} GB free where the venv goes ({inv.node_env.venv}), "
                        f"{inv.node_env.min_free_disk_gb:g} GB wanted (node_env.min_free_disk_gb)")
    if not problems:
        wheelhouse = node_env.wheelhouse_problem(inv, node)
        if wheelhouse:
            problems.append(wheelhouse)
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


def _shared_state_dirs(nodes: dict[str, Node], failures: dict[str, list[str]]) -> None:
    """Hosts whose state_dir is one folder (hosts that share an NFS home, with the default ~/.lathe-node):
    their pid, spec and Ray token files would collide, and `down` on one could signal a pid of another.
    Each host leaves a marker where its state_dir is (or in the nearest folder above it that exists);
    a host that sees another's marker there, under the same path, shares its folder. The markers go again."""
    alive = [n for n in nodes.values() if n.name not in failures]
    nonce = secrets.token_hex(4)

    def where(node: Node) -> str:
        return f'd={shlex.quote(node.state_dir)}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done'

    def marker(node: Node) -> str:
        return f".lathe-preflight-{nonce}-{node.name}"

    for node in alive:
        node.sh(f'{where(node)}; : > "$d/{marker(node)}"', check=False)
    try:
        for node in alive:
            seen = set(node.sh(f'{where(node)}; ls -A "$d"', check=False).split())
            others = [o.name for o in alive if o is not node and marker(o) in seen and o.state_dir == node.state_dir]
            if others:
                failures.setdefault(node.name, []).append(
                    f"state_dir {node.state_dir} is the same folder on {', '.join(others)} (a shared home?): their "
                    f"pids, service specs and Ray token would collide; give each host its own state_dir "
                    f"(e.g. {node.state_dir}-{node.name})")
    finally:
        for node in alive:
            node.sh(f'{where(node)}; rm -f "$d/{marker(node)}"', check=False)


def _node_python_for_probe(node: Node) -> str:
    return node.facts.get("py", {}).get("executable") or node.host.python


def preflight(inv: Inventory) -> dict[str, Node]:
    """Connect to every host and check it; raise naming each failing host before anything changes."""
    ray_version = nd.laptop_ray_version()
    failures: dict[str, list[str]] = {}
    nodes: dict[str, Node] = {}

    for host, node, exc in nd.parallel(lambda h: nd.attach(inv, h), inv.hosts):
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
    _shared_state_dirs(nodes, failures)
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


def wait_port(node: Node, address: str, port: int, timeout: float) -> None:
    py = shlex.quote(_node_python_for_probe(node))
    out = node.sh(f"{py} -c {shlex.quote(_PROBE)} {address} {port} {timeout} || echo FAILED", check=False,
                  timeout=timeout + 30)
    if "FAILED" in out:
        log = f"{node.state_dir}/logs/ray.log"
        raise HostFailure(f"Ray did not open {address}:{port} within {timeout:.0f} s (see {log} on the host)")
