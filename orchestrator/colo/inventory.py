"""The inventory of a colocated cluster: which hosts, how to reach them, what runs where.

    name: colo                       # the cluster profile `lathe cluster up` writes
    known_hosts: ~/.ssh/known_hosts  # host keys are checked against this, never accepted blindly
    defaults: {user: ubuntu, key: ~/.ssh/id_ed25519, python: /opt/lathe/.venv/bin/python}
    # or: node_env: {kind: venv, wheelhouse: http://10.0.0.2:8000/wheels/}  (from each host's python3.12)
    hosts:
      - {name: gpu1, address: 10.0.0.5, role: head, gpus: 0, cpus: 0}
      - {name: gpu2, address: 10.0.0.6, role: worker, gpus: 8, accelerator: A100}
      - {name: gpu3, address: 10.0.1.7, role: worker, gpus: 8, accelerator: A100, proxy_jump: gpu1}
    store: {uri: s3://models/lathe, endpoint_url: https://s3.example.com}
    price_per_gpu_hour: 1.1

A host entry overrides `defaults` field by field. Credentials never live here: the
SSH key is a path on the laptop, and the nodes read theirs from `env_file` on the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import LatheError, one_line
from orchestrator.store import StoreConfig


class HostDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    port: int = Field(22, ge=1, le=65535)
    key: str | None = Field(None, description="private key on the laptop; default: the SSH agent and ~/.ssh")
    python: str = Field("python3", description="the node interpreter that has lathe[node] (or makes the venv)")
    state_dir: str = Field("~/.lathe-node", description="where the node keeps its service scripts, pids and logs")
    ray_temp_dir: str | None = Field(None, description="Ray's --temp-dir (default /tmp/ray)")
    env_file: str | None = Field(None, description="a file ON THE NODE with KEY=value lines (store credentials)")
    min_free_disk_gb: float = Field(30.0, ge=0, description="preflight: free space wanted under state_dir")
    min_driver: str = Field("580.65.06", pattern=r"^\d+(\.\d+)*$",
                            description="preflight, hosts with GPUs: the oldest NVIDIA driver accepted (the "
                                        "locked torch is built for CUDA 13.0, which needs 580.65.06)")


class Host(HostDefaults):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    address: str
    role: Literal["head", "worker"] = "worker"
    gpus: int = Field(0, ge=0)
    cpus: int | None = Field(None, ge=0, description="Ray --num-cpus (default: all); 0 keeps training off the head")
    accelerator: str | None = Field(None, description="e.g. A100; becomes Ray's accelerator_type resource")
    proxy_jump: str | None = Field(None, description="another host of this inventory to jump through")


class NodeEnv(BaseModel):
    """kind venv: `up` makes a venv from the host's Python 3.12 and installs lathe[node] at the laptop's
    version into it, from `wheelhouse` (scripts/node_wheelhouse.py builds one) or `index_url`."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["existing", "venv"] = Field(
        "existing", description="existing: `python` already has lathe[node]; venv: Lathe makes one from `python`")
    venv: str = Field("~/.lathe-node/venv", description="kind venv: where the venv goes on each node")
    wheelhouse: str | None = Field(None, description="kind venv: a directory of wheels, as a URL the nodes can "
                                                     "reach (http://...) or a path on the nodes")
    index_url: str | None = Field(None, description="kind venv: a package index (a mirror); with a wheelhouse, "
                                                    "both are searched")
    requirements: str | None = Field(None, description="kind venv: a requirements file on the laptop (pinned) "
                                                       "instead of lathe[node] at the laptop's version")
    pip_args: list[str] = Field(default_factory=list, description="kind venv: more pip options")
    min_free_disk_gb: float = Field(15.0, ge=0, description="kind venv: free space wanted where the venv goes "
                                                            "(lathe[node] with CUDA takes ~7.5 GB, its wheels more)")

    @model_validator(mode="after")
    def _has_a_source(self) -> NodeEnv:
        if self.kind == "venv" and not (self.wheelhouse or self.index_url or self.requirements):
            raise ValueError("node_env.kind venv needs a wheelhouse or an index_url to install lathe[node] from")
        return self


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(6379, description="GCS port on the head; workers must reach it")
    dashboard_port: int = 8265
    dashboard_host: str = Field("127.0.0.1", description="loopback: the laptop comes in through an SSH tunnel")
    metrics_export_port: int = Field(8080, description="each node's Prometheus endpoint")
    token_auth: bool = True
    run_slots: int = Field(4, ge=1, description="runs whose drivers run on the head at once; more wait, PENDING, "
                                                "in Ray's queue (each driver holds torch in memory)")


class Monitoring(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_exporter: bool = True
    node_exporter_port: int = 9100
    dcgm_exporter: bool = True
    dcgm_exporter_port: int = 9400
    prometheus_url: str | None = None
    pushgateway_url: str | None = None


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    known_hosts: str = "~/.ssh/known_hosts"
    defaults: HostDefaults = Field(default_factory=HostDefaults)
    hosts: list[Host] = Field(min_length=1)
    node_env: NodeEnv = Field(default_factory=NodeEnv)
    ray: RaySettings = Field(default_factory=RaySettings)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    store: StoreConfig
    price_per_gpu_hour: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("hosts"), list):
            defaults = data.get("defaults") or {}
            if isinstance(defaults, dict):
                data = {**data, "hosts": [{**defaults, **h} if isinstance(h, dict) else h for h in data["hosts"]]}
        return data

    @model_validator(mode="after")
    def _check_roles(self) -> Inventory:
        heads = [h.name for h in self.hosts if h.role == "head"]
        if len(heads) != 1:
            raise ValueError(f"exactly one host must have role: head (found {len(heads)})")
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError("host names must be unique")
        for h in self.hosts:
            if h.proxy_jump is not None and (h.proxy_jump not in names or h.proxy_jump == h.name):
                raise ValueError(f"host {h.name}: proxy_jump {h.proxy_jump!r} is not another host of this inventory")
        return self

    @property
    def head(self) -> Host:
        return next(h for h in self.hosts if h.role == "head")

    @property
    def workers(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "worker"]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


def load(path: Path) -> Inventory:
    """Read and check an inventory; any problem is one line naming the file and the field."""
    if not path.is_file():
        raise LatheError(f"{path}: no such inventory file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LatheError(f"{path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise LatheError(f"{path}: expected a mapping with name, hosts and store")
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        raise LatheError(one_line(exc, str(path), default="inventory")) from None
