"""Submit to first training step on a cluster that is already up: the network-namespace cluster of
the tests (a Ray head and a worker host, an S3 server on the bridge), the quickstart cut to a few
steps, submitted twice in a row: the first job after the cluster came up, then the second (the
"warm" one: nodes up, page cache hot). Prints where each job's time went, from run.json's marks and
the workers' events in the store. Needs root (network namespaces). Asserts nothing.

    sudo .venv/bin/python bench/warm_start.py
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.run import timeline
from orchestrator.run.stored import StoredRun
from orchestrator.store import StoreConfig, open_store
from tests.support.harness import netns_world
from tests.support.services import wait_http

BIN = Path(sys.executable).parent
BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
GOAL_S = 10.0


def short_quickstart(work: Path) -> Path:
    """The quickstart, 10 steps, no export: the part before the first step is what is measured."""
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yml").read_text())
    recipe.update(num_epochs=1, max_steps=10, save_steps=5)
    recipe["datasets"][0]["path"] = str(REPO / "recipes" / recipe["datasets"][0]["path"])
    recipe["lathe"] = {"resources": recipe["lathe"]["resources"]}
    path = work / "warm.yml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def first_step(stored: StoredRun, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        points = stored.metrics()
        if points:
            return float(points[0]["time"])
        time.sleep(0.5)
    raise SystemExit(f"{stored.run_id}: no training step in {timeout:.0f} s")


def main() -> None:
    if os.geteuid() != 0:
        print("warm start: not measured: it needs root (the cluster's hosts are network namespaces)")
        return
    work = Path(tempfile.mkdtemp(prefix="lathe-bench-warm-"))
    atexit.register(shutil.rmtree, work, True)  # after the cluster is down (netns_world's exit)
    os.environ.update(CREDENTIALS)
    with netns_world(work, "lathe-bw-", BUCKET, CREDENTIALS) as world:
        net, short = world.net, world.ray_temp
        head, worker = net.add_host("head"), net.add_host("w1")
        token = work / "ray-token"
        token.write_text(secrets.token_hex(32))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HF_TOKEN"))}
        env = {**base, "PATH": f"{BIN}:{os.environ['PATH']}", "AWS_DEFAULT_REGION": "us-east-1",
               "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        net.start(head, [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", head.address,
                         "--port", "6379", "--dashboard-host", head.address, "--dashboard-port", "8265",
                         "--num-cpus", "0", "--disable-usage-stats", "--temp-dir", str(short / "head")],
                  env, work / "head.log")
        wait_http(f"http://{head.address}:8265/api/version", timeout=240, any_status=True)
        net.start(worker, [str(BIN / "ray"), "start", "--block", "--address", f"{head.address}:6379",
                           "--node-ip-address", worker.address, "--num-cpus", "3", "--disable-usage-stats",
                           "--temp-dir", str(short / "w1")], env, work / "w1.log")
        request = urllib.request.Request(f"http://{head.address}:8265/api/v0/nodes",
                                         headers={"Authorization": f"Bearer {token.read_text().strip()}"})
        deadline = time.monotonic() + 240
        while json.dumps(json.load(urllib.request.urlopen(request, timeout=5))).count('"ALIVE"') < 2:
            if time.monotonic() > deadline:
                sys.exit("the worker did not join the head")
            time.sleep(1)
        store_config = {"uri": f"s3://{BUCKET}/runs", "endpoint_url": world.s3.url, "region": "us-east-1"}
        clusters = work / "clusters.yml"
        clusters.write_text(yaml.safe_dump({"clusters": {"netns": {
            "ray_address": f"http://{head.address}:8265", "auth_token_file": str(token), "store": store_config,
            "python": sys.executable, "price_per_gpu_hour": 0.0}}}))
        laptop = {**base, "AWS_DEFAULT_REGION": "us-east-1", "LATHE_CLUSTERS": str(clusters),
                  "LATHE_HOME": str(work / "home")}
        store = open_store(StoreConfig(**store_config))
        recipe = short_quickstart(work)
        print(f"cluster up (head + 1 worker host, {os.cpu_count()} cores in all); submitting twice")
        for attempt in ("first job", "second job (warm)"):
            submitted = time.time()
            done = subprocess.run([str(BIN / "lathe"), "submit", str(recipe), "--cluster", "netns", "--no-export"],
                                  env=laptop, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"lathe submit failed:\n{done.stderr[-2000:]}")
            run_id = done.stdout.strip().splitlines()[-1]
            stored = StoredRun(store, run_id)
            step = first_step(stored)
            marks = stored.record().marks
            events = [json.loads(line) for line in (stored.read("events.jsonl") or b"").decode().splitlines() if line]
            worker_start = next((e["time"] for e in events if e.get("event") == "worker_start"), None)
            print(f"{attempt}: submit to first step {step - submitted:.1f} s (goal {GOAL_S:.0f} s)")
            bounds = [("job driver started", submitted, marks.get(timeline.STARTED)),
                      ("to the trainer's start", marks.get(timeline.STARTED), marks.get(timeline.FIT_STARTED)),
                      ("start the workers", marks.get(timeline.FIT_STARTED), worker_start),
                      ("to the first step", worker_start, step)]
            for name, a, b in bounds:
                if a is not None and b is not None:
                    print(f"  {name:26}{b - a:7.1f} s")
            deadline = time.monotonic() + 300
            while stored.record().state not in ("SUCCEEDED", "FAILED", "STOPPED") and time.monotonic() < deadline:
                time.sleep(1)


if __name__ == "__main__":
    main()
