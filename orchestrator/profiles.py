"""Cluster profiles: where a named cluster's Ray, store and monitoring are.

Read from ``~/.config/lathe/clusters.yml`` (``$XDG_CONFIG_HOME``), overridden entry
by entry by ``lathe-clusters.yml`` in the project directory; ``$LATHE_CLUSTERS``
names one file instead of both. `lathe cluster up` writes the user file. A
profile holds addresses and prices, never credentials.

    clusters:
      colo:
        ray_address: http://10.0.0.5:8265       # the Ray dashboard (Jobs API)
        auth_token_file: ~/.ray/colo_token       # Ray's token auth; the token itself never leaves this file
        ssh_tunnel: {host: gpu1.example.com, user: ubuntu}   # optional: reach it through SSH
        store: {uri: s3://models/lathe, endpoint_url: https://s3.example.com, region: eu-west-1}
        prometheus_url: http://10.0.0.5:9090
        pushgateway_url: http://10.0.0.5:9091
        price_per_gpu_hour: 1.8
        python: /opt/lathe/.venv/bin/python      # the nodes' interpreter with lathe[node]
        run_slots: 4                             # the head's lathe_run_slot resource: runs at once
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import LatheError, one_line
from orchestrator.store import StoreConfig

PROJECT_FILE = "lathe-clusters.yml"
RUN_SLOT = "lathe_run_slot"  # a custom Ray resource on the head: one per run driver allowed at once
# Ray fails a job whose driver has not started within 15 minutes; a queued run may wait for hours.
JOB_START_TIMEOUT_S = 7 * 24 * 3600


class SSHTunnel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    user: str | None = None
    port: int = 22
    key: str | None = Field(None, description="private key file; default: the SSH agent and ~/.ssh")
    known_hosts: str | None = Field(None, description="host keys to trust, besides ~/.ssh/known_hosts")
    remote_host: str = Field("127.0.0.1", description="where the dashboard listens, seen from the SSH host")
    remote_port: int = 8265


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    ray_address: str = Field(description="the Ray dashboard URL, e.g. http://head:8265")
    auth_token_file: str | None = Field(
        None, description="the cluster's Ray auth token (Ray >= 2.52 enables token auth); default: $RAY_AUTH_TOKEN")
    ssh_tunnel: SSHTunnel | None = None
    store: StoreConfig
    prometheus_url: str | None = None
    pushgateway_url: str | None = None
    price_per_gpu_hour: float = Field(0.0, ge=0)
    python: str = Field("python3", description="the interpreter on the nodes that has lathe[node]")
    run_slots: int | None = Field(
        None, ge=1, description=f"the head offers this many '{RUN_SLOT}' resources (`lathe cluster up` does): each "
                                "run's driver takes one, so extra runs wait in Ray's queue instead of all starting")


def user_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "lathe" / "clusters.yml"


def active_file() -> Path:
    """The profile file `lathe cluster up` writes and `down` edits: $LATHE_CLUSTERS, else the user's."""
    return Path(os.environ.get("LATHE_CLUSTERS") or user_file())


def config_dir() -> Path:
    """Beside the user's profiles: each cluster's Ray token (tokens/) and scrape targets (prometheus/)."""
    return user_file().parent


def _read(path: Path) -> dict[str, ClusterProfile]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LatheError(f"{path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    clusters = data.get("clusters") if isinstance(data, dict) else None
    if not isinstance(clusters, dict):
        raise LatheError(f"{path}: clusters: expected a mapping of cluster names to profiles")
    out = {}
    for name, raw in clusters.items():
        try:
            out[str(name)] = ClusterProfile.model_validate({**(raw or {}), "name": str(name)})
        except ValidationError as exc:
            raise LatheError(one_line(exc, str(path), f"clusters.{name}")) from None
    return out


def load_all(project_dir: Path | None = None) -> dict[str, ClusterProfile]:
    explicit = os.environ.get("LATHE_CLUSTERS")
    if explicit:
        return _read(Path(explicit))
    return _read(user_file()) | _read((project_dir or Path.cwd()) / PROJECT_FILE)


def get(name: str, project_dir: Path | None = None) -> ClusterProfile:
    profiles = load_all(project_dir)
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none defined"
        raise LatheError(f"cluster {name!r}: no such profile (known: {known}; see {user_file()})")
    return profiles[name]


def save(profile: ClusterProfile, path: Path | None = None) -> Path:
    """Add or replace one profile in the user file (what `lathe cluster up` does)."""
    path = path or active_file()
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    data = data if isinstance(data, dict) else {}
    data.setdefault("clusters", {})[profile.name] = profile.model_dump(exclude={"name"}, exclude_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


def remove(name: str, path: Path | None = None) -> bool:
    """Drop one profile from the user file (what `lathe cluster down` does); True if it was there."""
    path = path or active_file()
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(data, dict) or name not in (data.get("clusters") or {}):
        return False
    del data["clusters"][name]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return True
