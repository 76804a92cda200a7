"""The node's Python environment when the inventory says `node_env.kind: venv`: a bare box (only its
own Python 3.12) gets a venv with lathe[node] at this laptop's version, installed from the inventory's
wheelhouse or package index.

Hosts that share a home directory (NFS) share the venv's path: the first host installs it under a
lock on that filesystem, the others wait on the lock and find it done. A marker in the venv records
what was installed (the requirements and where they came from), so a second `up` installs nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.colo import nodes as nd
from orchestrator.colo.inventory import Inventory, NodeEnv
from orchestrator.colo.nodes import HostFailure, HostReport, Node

# requirements.lock is resolved for CPython 3.12 (cp312 wheels): a node's venv must be made from one.
PYTHON = (3, 12)

# Run by the host's own python: list the wheelhouse (a URL or a directory on the node) and print the
# lathe wheels in it, or why it cannot be read. urllib does not take credentials inside a URL (pip
# does, as a private wheelhouse often needs): they go in a Basic authorization header instead. The URL
# comes on standard input (`-`), never on the command line, where `ps` would show its password.
LIST_WHEELHOUSE = """import base64, os, re, sys, urllib.request
from urllib.parse import unquote, urlsplit
where = sys.stdin.readline().strip() if sys.argv[1] == "-" else sys.argv[1]
try:
    if re.match(r"https?://", where):
        url, parts, headers = where, urlsplit(where), {}
        if parts.username is not None:
            url = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
            pair = unquote(parts.username) + ":" + unquote(parts.password or "")
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=15) as r:
            names = re.findall(r'href="([^"]+)"', r.read().decode("utf-8", "replace"))
    else:
        names = os.listdir(os.path.expanduser(where))
except Exception as exc:
    print("UNREADABLE", getattr(exc, "reason", None) or exc)
    sys.exit(0)
print(" ".join(n.rsplit("/", 1)[-1] for n in names if n.rsplit("/", 1)[-1].startswith("lathe-")))
"""


def laptop_version() -> str:
    return metadata.version("lathe")


def venv_python(inv: Inventory, node: Node) -> str:
    return f"{node.path(inv.node_env.venv)}/bin/python"


def requirements(env: NodeEnv) -> bytes:
    """What the venv gets: the inventory's pinned file, or lathe[node] at exactly the laptop's version."""
    if env.requirements:
        return Path(os.path.expanduser(env.requirements)).read_bytes()
    return f"lathe[node]=={laptop_version()}\n".encode()


def pip_sources(env: NodeEnv, node: Node) -> str:
    """Where pip installs from, as a pip configuration file: the URLs may carry credentials (an internal
    index's password), and a command line is what `ps` shows every user on the node and what an error
    (a timeout's) quotes. The file is written 0600 before a byte is in it and removed after the install."""
    lines = ["[global]"]
    if env.wheelhouse:
        lines.append(f"find-links = {env.wheelhouse if '://' in env.wheelhouse else node.path(env.wheelhouse)}")
        if not env.index_url:
            lines.append("no-index = true")  # a wheelhouse alone: nothing may come from anywhere else
    if env.index_url:
        lines.append(f"index-url = {env.index_url}")
    # pip ignores plain-HTTP sources off loopback unless told to trust them; naming one in the inventory
    # is that choice (a wheelhouse served on the cluster's own network). HTTPS needs nothing.
    trusted = [urlsplit(url).hostname or "" for url in (env.wheelhouse, env.index_url) if url and url.startswith("http://")]
    if trusted:
        lines.append(f"trusted-host = {' '.join(trusted)}")
    return "\n".join(lines) + "\n"


def _secrets(env: NodeEnv) -> list[str]:
    """The passwords in the inventory's source URLs, as written and as pip or urllib may print them."""
    from urllib.parse import unquote

    found = [urlsplit(u).password for u in (env.wheelhouse, env.index_url) if u and "://" in u]
    return [v for p in found if p for v in {p, unquote(p)}]


def redact(text: str, env: NodeEnv) -> str:
    for secret in _secrets(env):
        text = text.replace(secret, "***")
    return text


def source(env: NodeEnv) -> str:
    """Where the install comes from, for people to read: an index URL's credentials are left out."""
    where = env.wheelhouse or env.index_url or env.requirements or ""
    return re.sub(r"^(\w+://)[^/@]+@", r"\1", where)




def installed(inv: Inventory, node: Node) -> bool:
    """Does the venv hold this laptop's lathe (the facts preflight gathered)?"""
    venv = node.facts.get("venv_py") or {}
    return bool(venv.get("lathe")) and (inv.node_env.requirements is not None or venv["lathe"] == laptop_version())


def wheelhouse_problem(inv: Inventory, node: Node) -> str | None:
    """Preflight: can this host read the wheelhouse, and does it hold the laptop's lathe?"""
    env = inv.node_env
    if not env.wheelhouse or env.requirements:
        return None
    # Preflight changes nothing on the host: the URL goes on the script's standard input, not into a file.
    q = shlex.quote
    out = node.conn.run(f"{q(node.host.python)} -c {q(LIST_WHEELHOUSE)} -", hide=True, warn=True,
                        in_stream=io.StringIO(env.wheelhouse + "\n"), timeout=60).stdout.strip()
    if out.startswith("UNREADABLE"):
        why = out.removeprefix("UNREADABLE").strip()
        # An error that quotes the URL must not carry its password to the laptop's terminal.
        return f"wheelhouse {source(env)}: cannot be read from the host ({redact(why, env)})"
    version = laptop_version()
    if not any(name.startswith(f"lathe-{version}-") for name in out.split()):
        have = sorted({n.split("-")[1] for n in out.split() if n.count("-") >= 2})
        return (f"wheelhouse {source(env)}: has no lathe {version} wheel (this laptop's version; it has "
                f"{', '.join(have) or 'none'}): scripts/node_wheelhouse.py builds one")
    return None


INSTALL_TIMEOUT_S = 3600  # lathe[node] with CUDA is several GB of wheels
# pip reads these from the environment over any configuration file: a node's own (PIP_FIND_LINKS set for
# its users, say) would override the sources Lathe gives it, and they used to lose to the command line.
PIP_SOURCE_VARS = " ".join(f"-u {v}" for v in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                                               "PIP_NO_INDEX", "PIP_TRUSTED_HOST"))


def install(inv: Inventory, node: Node, report: HostReport) -> None:
    """Make the venv and install into it, unless it already holds exactly what is wanted."""
    env = inv.node_env
    if env.kind != "venv":
        return
    venv = node.path(env.venv)
    from invoke.exceptions import CommandTimedOut

    wanted, sources = requirements(env), pip_sources(env, node)
    # What was installed and from where: a second `up` compares it with the venv's marker.
    digest = hashlib.sha256(wanted + sources.encode() + json.dumps(env.pip_args).encode()).hexdigest()
    q = shlex.quote
    if node.sh(f"cat {q(venv)}/.lathe-installed 2>/dev/null || true", check=False).strip() == digest:
        return  # a second `up`: nothing to write or install
    req, conf = f"{node.state_dir}/node-requirements.txt", f"{node.state_dir}/pip-sources.conf"
    node.write(req, wanted)
    node.write(conf, sources.encode(), mode=0o600)
    pip = " ".join(q(a) for a in ["-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                  # Bytecode is written on first import, for what a node imports.
                                  "--no-compile", *env.pip_args, "-r", req])
    # One installer at a time per venv path (hosts sharing a home directory); the others find the marker.
    # The sources file goes whatever happens (the trap), a timeout's kill included.
    script = (f"set -e; trap 'rm -f {q(conf)}' EXIT; mkdir -p {q(os.path.dirname(venv))}; "
              f"exec 9>{q(venv + '.lock')}; flock 9; "
              f"if [ \"$(cat {q(venv)}/.lathe-installed 2>/dev/null)\" = {digest} ]; then echo DONE; exit 0; fi; "
              f"[ -x {q(venv)}/bin/python ] || {q(node.host.python)} -m venv {q(venv)}; "
              f"env {PIP_SOURCE_VARS} PIP_CONFIG_FILE={q(conf)} {q(venv)}/bin/python {pip}; "
              f"echo {digest} > {q(venv)}/.lathe-installed; "
              "echo INSTALLED")
    try:
        result = node.conn.run(script, hide=True, warn=True, in_stream=False, timeout=INSTALL_TIMEOUT_S)
    except CommandTimedOut as exc:  # its text quotes the command (no credentials in it now, redacted anyway)
        node.sh(f"rm -f {q(conf)}", check=False)
        raise HostFailure(f"installing {wanted.decode().split()[0]} into {venv} failed: "
                          f"{redact(exc.__class__.__name__ + ': ' + str(exc).splitlines()[0][:200], env)}") from None
    if result.exited != 0:
        lines = [ln for ln in (result.stderr or result.stdout).strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
        raise HostFailure(redact(f"installing {wanted.decode().split()[0]} into {venv} failed: "
                                 f"{errors[0] if errors else f'exit {result.exited}'}", env))
    if "INSTALLED" in result.stdout:
        report.changes.append("node environment installed")
    nd.gather_facts(node, env.venv)
    got = node.facts.get("venv_py") or {}
    if not env.requirements and got.get("lathe") != laptop_version():
        raise HostFailure(f"{venv} has lathe {got.get('lathe')} after the install, this laptop has {laptop_version()}")
    mismatch = nd.ray_mismatch(venv_python(inv, node), got.get("ray"), nd.laptop_ray_version())
    if mismatch:
        raise HostFailure(mismatch)
