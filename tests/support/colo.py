"""The colocated-cluster harness for tests/test_cluster.py: four network-namespace hosts that are
bare boxes (only sshd and a Python 3.12 with nothing installed), the wheelhouse their venv is
installed from, served over HTTP on the test bridge, S3 (moto) on the laptop's bridge address, and
what the tests ask of the cluster (the profile, the store, Ray's registered checkpoints, sockets)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from orchestrator.remote.connect import jobs_client
from scripts.node_wheelhouse import project_wheel
from tests.support.harness import NetnsWorld, netns_world
from tests.support.leaks import plant, sweep
from tests.support.netns import Host, comm, keygen, pids_in, start_sshd
from tests.support.wheelhouse import node_wheelhouse, served

BUCKET = "lathe-colo"
RUN_SLOTS = 3  # run drivers at once on the head: enough to fill each other's idle waits on 2 cores
# The nodes' store credentials (in env files on the nodes) and the laptop's: neither may show up
# anywhere a run or `lathe cluster` writes.
NODE_SECRETS = plant("colo")
LAPTOP_SECRETS = plant("laptop")
# A bare box's interpreter: the Python 3.12 this venv was made from, with no packages of ours.
BARE_PYTHON = sys._base_executable
LATHE_VERSION = metadata.version("lathe")
# A host's programs of its own (h4's nvidia-smi), on the PATH its SSH logins get.
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Colo(NetnsWorld):
    """Three hosts with only sshd running, for `lathe cluster up` (Ray temp dirs: RAY_TEMP/<host>)."""

    hosts: dict[str, Host] = field(default_factory=dict)
    sshd_pids: dict[str, set[int]] = field(default_factory=dict)
    base: dict = field(default_factory=dict)  # the inventory, as a dict to vary per test

    def inventory(self, name: str, **changes) -> Path:
        data = json.loads(json.dumps(self.base))
        for host in data["hosts"]:
            host.update(changes.pop(host["name"], {}))
        data.update(changes)
        path = self.workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def leftovers(self, names: list[str], wait: float = 15) -> dict[str, set[int]]:
        """Processes in these hosts other than their sshd (and its per-login children, given time to end)."""
        deadline = time.monotonic() + wait
        while True:
            extra = {n: pids_in(self.hosts[n]) - self.sshd_pids[n] for n in names}
            extra = {n: {p for p in pids if comm(p) != "sshd"} for n, pids in extra.items()}
            if not any(extra.values()) or time.monotonic() > deadline:
                return {n: p for n, p in extra.items() if p}
            time.sleep(0.5)


def process_state(pid: int) -> str:
    """The process's state letter (R, S, Z, ...), or "" once it is gone."""
    try:
        line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:"))
        return line.split()[1]
    except (OSError, StopIteration):
        return ""


def build_wheelhouse(out: Path) -> Path:
    """lathe's wheel from this tree, the two wheels `make setup` built, the rest of lathe[node] re-packed
    from this venv (tests/support/wheelhouse.py says why and when), and an older release's leftovers."""
    started = time.monotonic()
    lathe = project_wheel(out / "project")
    node_wheelhouse(out, lathe)
    (out / "last-release").mkdir()  # a wheelhouse left from an older lathe
    shutil.copy(lathe, out / "last-release" / lathe.name.replace(f"-{LATHE_VERSION}-", "-0.0.9-"))
    print(f"\nwheelhouse: {len(list(out.glob('*.whl')))} wheels ready in {time.monotonic() - started:.0f} s")
    return out


@contextmanager
def colo_world(workdir: Path, wheelhouse: Path) -> Iterator[Colo]:
    """Four bare hosts with their sshds, the wheelhouse served on the bridge, S3 on it, and the base
    inventory (h1 head, h2 and h3 workers; h4 is only for preflight's GPU check)."""
    with netns_world(workdir, "lathe-colo-", BUCKET, LAPTOP_SECRETS) as world, \
            served(wheelhouse, world.net.gateway) as wheelhouse_url:
        net, short, endpoint = world.net, world.ray_temp, world.s3.url
        hosts = {name: net.add_host(name) for name in ("h1", "h2", "h3", "h4")}
        laptop_key = workdir / "id_ed25519"
        (workdir / "authorized_keys").write_text(keygen(laptop_key) + "\n")
        # h4 is a GPU box whose driver is older than the locked torch's CUDA 13 needs (a stand-in
        # nvidia-smi: there is no GPU here).
        gpu_bin = workdir / "h4-bin"
        gpu_bin.mkdir()
        (gpu_bin / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 535.104.05'\n")
        (gpu_bin / "nvidia-smi").chmod(0o755)
        known, sshd_pids = [], {}
        for name, host in hosts.items():
            extra = (f"SetEnv PATH={gpu_bin}:{HOST_PATH}",) if name == "h4" else ()
            proc, host_pub = start_sshd(net, host, workdir, workdir / "authorized_keys", extra)
            sshd_pids[name] = {proc.pid, *pids_in(host)}
            # h3's entry is a key the host does not have: an address taken over, as far as SSH can tell.
            offered = keygen(workdir / "impostor") if name == "h3" else host_pub
            known.append(f"{host.address} {' '.join(offered.split()[:2])}")
        (workdir / "known_hosts").write_text("\n".join(known) + "\n")
        # The nodes' credentials live on the nodes, in env files the services read; never in the inventory.
        for name in hosts:
            (workdir / f"{name}.env").write_text(
                "".join(f"{k}={v}\n" for k, v in NODE_SECRETS.items()) + "AWS_DEFAULT_REGION=us-east-1\n")
        base = {
            "name": "colo",
            "known_hosts": str(workdir / "known_hosts"),
            "defaults": {"user": "root", "key": str(laptop_key), "python": BARE_PYTHON, "min_free_disk_gb": 1},
            "hosts": [
                # Separate state and Ray temp dirs: these "hosts" share one filesystem, real ones do not.
                {"name": n, "address": hosts[n].address, "role": "head" if n == "h1" else "worker",
                 "cpus": 0 if n == "h1" else 3, "state_dir": str(workdir / f"state-{n}"),
                 "ray_temp_dir": str(short / n), "env_file": str(workdir / f"{n}.env")}
                for n in ("h1", "h2", "h3")],
            # One venv path for all: the hosts share a filesystem (one installs, the others wait for it).
            "node_env": {"kind": "venv", "venv": str(workdir / "node-venv"), "wheelhouse": wheelhouse_url,
                         "min_free_disk_gb": 10},
            "store": {"uri": f"s3://{BUCKET}/runs", "endpoint_url": endpoint, "region": "us-east-1"},
            "monitoring": {"dcgm_exporter": False},
            "ray": {"run_slots": RUN_SLOTS},
            "price_per_gpu_hour": 0.5,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_", "HF_TOKEN"))}
        env |= {"LATHE_CLUSTERS": str(workdir / "clusters.yml"), "XDG_CONFIG_HOME": str(workdir / "config"),
                "LATHE_HOME": str(workdir / "home"), **LAPTOP_SECRETS, "AWS_DEFAULT_REGION": "us-east-1"}
        yield Colo(net, world.s3, workdir, short, env, hosts=hosts, sshd_pids=sshd_pids, base=base)
        shutil.rmtree(workdir / "node-venv", ignore_errors=True)  # ~7 GB


def other_python() -> str:
    """An interpreter that is not 3.12 (Debian 12's own python3 is 3.11)."""
    for candidate in ("/usr/bin/python3", "/usr/bin/python3.11", "/usr/bin/python3.13"):
        exits_1_on_312 = "import sys; sys.exit(sys.version_info[:2] == (3, 12))"
        if Path(candidate).is_file() and subprocess.run([candidate, "-c", exits_1_on_312], check=False).returncode == 0:
            return candidate
    raise AssertionError("no Python other than 3.12 on this machine for the wrong-Python preflight check")


def two_hosts(colo: Colo, name: str, **changes) -> Path:
    path = colo.inventory(name, **changes)
    data = yaml.safe_load(path.read_text())
    data["hosts"] = [h for h in data["hosts"] if h["name"] != "h3"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def listeners(host: Host) -> dict[tuple[str, int], str]:
    """(address, port) -> program, for every TCP socket listening in a host."""
    out = subprocess.run(["ip", "netns", "exec", host.name, "ss", "-ltnpH"], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        local, users = line.split()[3], line.split()[-1]
        address, port = local.rsplit(":", 1)
        name = re.search(r'\(\("([^"]+)"', users)
        found[(address.strip("[]").removeprefix("::ffff:"), int(port))] = name.group(1) if name else "?"
    return found


def http_probe(method: str, url: str) -> tuple[int | str, str]:
    """(status, start of the body) for a request without credentials. A port that answers in another
    protocol gives "not http" (gRPC: Ray's token covers it, as the GCS check below shows); one that says
    nothing in time gives "silent", and one that drops the connection "reset": neither is taken as safe."""
    try:
        data = json.dumps({"entrypoint": "true"}).encode() if method == "POST" else None
        request = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(200).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (http.client.BadStatusLine, http.client.RemoteDisconnected) as exc:
        # Bytes that are not an HTTP/1.x status line, or a close before any: how gRPC meets HTTP/1.1.
        return ("reset" if isinstance(exc, http.client.RemoteDisconnected) else "not http"), ""
    except TimeoutError:
        return "silent", ""
    except urllib.error.URLError as exc:
        return ("silent" if isinstance(exc.reason, TimeoutError) else "reset"), ""
    except ConnectionError:
        return "reset", ""


def no_secret_anywhere(colo: Colo, run_id: str, laptop_roots: list[Path], figure) -> None:
    """Both sides' credentials and the cluster's Ray token, looked for in everything the run and Lathe wrote:
    the Ray job's metadata, runtime_env and log, every object in the store, the pulled run, the laptop's
    registry, profile and scrape targets, every lathe command's output, the hosts' service logs and all of
    Ray's own files on both hosts (session logs, runtime envs). Only the files made to hold them are spared."""
    profile = cluster_profile(colo)
    token = Path(profile.auth_token_file).read_text().strip()
    texts: dict[str, str | bytes] = {}
    with jobs_client(profile) as client:  # every attempt's job (a resubmitted run has one per attempt)
        for info in (j for j in client.list_jobs() if (j.metadata or {}).get("lathe_run_id") == run_id):
            texts[f"job info {info.submission_id}"] = json.dumps({"entrypoint": info.entrypoint, "metadata": info.metadata,
                                                                  "runtime_env": info.runtime_env})
            texts[f"job log {info.submission_id}"] = client.get_job_logs(info.submission_id)
    assert texts, f"Ray has no job for {run_id}"
    s3 = s3_client(colo)
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{run_id}/").get("Contents", []):
        texts[f"s3://{BUCKET}/{obj['Key']}"] = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    texts |= {f"lathe output {i}": text for i, text in enumerate(colo.said)}
    roots = [*laptop_roots, Path(colo.env["LATHE_HOME"]), Path(colo.env["LATHE_CLUSTERS"]),
             colo.workdir / "config" / "lathe" / "prometheus", colo.ray_temp,
             *(colo.workdir / f"state-{n}" / "logs" for n in ("h1", "h2"))]
    found = sweep([*NODE_SECRETS.values(), *LAPTOP_SECRETS.values(), token], roots, texts)
    assert not found.found, found.found
    figure(f"secrets (cluster): {len(NODE_SECRETS) + len(LAPTOP_SECRETS) + 1} planted values in none of "
           f"{found.summary()}")


def cluster_profile(colo: Colo):
    from orchestrator import profiles

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATHE_CLUSTERS", colo.env["LATHE_CLUSTERS"])
        return profiles.get("colo")


def s3_client(colo: Colo):
    import boto3

    return boto3.client("s3", endpoint_url=colo.base["store"]["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id=LAPTOP_SECRETS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=LAPTOP_SECRETS["AWS_SECRET_ACCESS_KEY"])


def registered_steps(colo: Colo, run_id: str) -> list[int]:
    """Checkpoint steps Ray Train's controller has registered in the store (not merely uploaded)."""
    s3 = s3_client(colo)
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{run_id}/ray/").get("Contents", [])
    for obj in listing:
        if obj["Key"].endswith("/checkpoint_manager_snapshot.json"):
            try:
                body = json.loads(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
                return [r["metrics"]["step"] for r in body["checkpoint_results"] if "step" in r.get("metrics", {})]
            except (json.JSONDecodeError, KeyError):
                return []
    return []


# Between `lathe status` calls while a run finishes: each call is a process that costs seconds of CPU
# (imports, an SSH tunnel, the Jobs API, the store) that the runs under test need too.
STATUS_POLL_S = 15


def wait_terminal(colo: Colo, run_id: str, timeout: float = 1500, poll: float = STATUS_POLL_S) -> str:
    deadline, out = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        out = colo.lathe("status", run_id).stdout
        if re.search(r": (SUCCEEDED|FAILED|STOPPED)\b", out):
            break
        time.sleep(poll)
    return out


def store_steps(colo: Colo, run_id: str) -> list[int]:
    s3 = s3_client(colo)
    try:
        body = s3.get_object(Bucket=BUCKET, Key=f"runs/{run_id}/metrics.jsonl")["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return []
    return [json.loads(ln)["step"] for ln in body.splitlines() if ln.strip() and '"step"' in ln]


def driver_pid(run_id: str) -> int | None:
    """The pid of a run's job driver (orchestrator.cluster.job), on any host: they share /proc here."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"orchestrator.cluster.job" in argv and run_id.encode() in argv:
            return int(proc.name)
    return None


def ray_pids(colo: Colo) -> dict[str, str]:
    return {n: (colo.workdir / f"state-{n}" / "ray.pid").read_text().strip() for n in ("h1", "h2")}


def slow_checkpoints(remote_recipe: Path, name: str, whole_export: bool = False) -> tuple[dict, Path]:
    """Checkpoints far apart (about 18 s) next to the lag of Ray Train's controller in registering one
    (up to ~8 s here): on this tiny model a step takes 70 ms; real checkpoint intervals are minutes.
    The export is one level unless `whole_export` keeps the remote recipe's (calibrated q4_k_m among them)."""
    cfg = yaml.safe_load(remote_recipe.read_text()) | {"num_epochs": 20, "gradient_accumulation_steps": 5,
                                                       "save_steps": 50}
    if not whole_export:
        cfg["lathe"]["export"] = {"gguf": ["q8_0"], "mlx": []}  # resuming is under test; the export, elsewhere
    recipe = remote_recipe.with_name(f"{name}.yml")
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg, recipe


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most [start, end) intervals that hold at one instant."""
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)


def iso_stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
