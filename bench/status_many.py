"""`lathe status` of many active runs: one store client and one listing of Ray's jobs, against a client
and a question per run.

Starts a real Ray head (its dashboard answers the Jobs API) and an S3-protocol server (moto) on
127.0.0.1, submits N trivial jobs, writes N runs into the store (run.json and a metrics.jsonl of 200
steps each) and into a fresh registry as active, then times, alternately and several times each:

  per run   `remote.status.status(entry, profile, client)` for each run: a store client per run and a
            Jobs API question per run (what `lathe status` did)
  shared    the same with one store and Ray's jobs listed once (what it does now)
  lathe     the `lathe status` command itself, end to end (a process: imports included)

The registry is put back to RUNNING before each round, so every round asks about all N runs. Prints
the medians and the speed-up; goal: `lathe status` of 20 runs under 5 s. Nothing is asserted.

    .venv/bin/python bench/status_many.py [--runs 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import yaml

BUCKET = "status-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lathe-status-bench-"))
    atexit.register(shutil.rmtree, work, True)
    os.environ |= {"LATHE_HOME": str(work / "home"), "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                   "AWS_DEFAULT_REGION": "us-east-1", "RAY_USAGE_STATS_ENABLED": "0",
                   # Ray 2.60 turns token auth on by itself when ~/.ray/auth_token exists (a `ray` command
                   # once made one): the bench's head and its clients are this process's, on loopback.
                   "RAY_AUTH_MODE": "disabled"}
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    s3_port, dash_port = _free_port(), _free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    s3.start()
    ray_bin = Path(sys.executable).with_name("ray")
    # Every port Ray would otherwise take by default, free ones: another Ray on this machine (a test run's)
    # holding the dashboard agent's 52365 killed this head's agent at start ("one Ray agent failed").
    agent_ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port", "ray-client-server-port")]
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--port", str(_free_port()),
                             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port), "--num-cpus", "1",
                             *agent_ports, "--temp-dir", str(work / "ray")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{dash_port}/api/version")
        _measure(args, work, f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{dash_port}")
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and what it started, by our own pid
        head.wait(timeout=60)
        s3.stop()


def _measure(args: argparse.Namespace, work: Path, s3_url: str, dashboard: str) -> None:
    from ray.job_submission import JobSubmissionClient

    from orchestrator import profiles, registry
    from orchestrator.remote.status import listed_jobs, status
    from orchestrator.store import open_store

    client = boto3.client("s3", endpoint_url=s3_url)
    client.create_bucket(Bucket=BUCKET)
    jobs = JobSubmissionClient(dashboard)
    clusters = work / "clusters.yml"
    clusters.write_text(yaml.safe_dump({"clusters": {"bench": {
        "ray_address": dashboard, "store": {"uri": f"s3://{BUCKET}/runs", "endpoint_url": s3_url,
                                            "region": "us-east-1"}}}}))
    os.environ["LATHE_CLUSTERS"] = str(clusters)
    steps = "".join(json.dumps({"time": 0, "step": n, "max_steps": 200, "loss": 1.0}) + "\n" for n in range(1, 201))
    run_ids = []
    for n in range(args.runs):
        run_id = f"bench-{n:02d}"
        job_id = jobs.submit_job(entrypoint="true", submission_id=run_id)
        client.put_object(Bucket=BUCKET, Key=f"runs/{run_id}/run.json",
                          Body=json.dumps({"run_id": run_id, "state": "SUCCEEDED"}).encode())
        client.put_object(Bucket=BUCKET, Key=f"runs/{run_id}/metrics.jsonl", Body=steps.encode())
        registry.add(run_id, "bench", job_id, f"s3://{BUCKET}/runs/{run_id}", str(work / "r.yml"), "RUNNING")
        run_ids.append(run_id)
    deadline = time.monotonic() + 300
    while any(str(jobs.get_job_status(r)) not in ("SUCCEEDED", "FAILED") for r in run_ids):
        if time.monotonic() > deadline:
            raise SystemExit("the trivial jobs did not finish in 300 s")
        time.sleep(1)
    profile = profiles.get("bench")

    def active() -> list:
        for r in run_ids:
            registry.update(r, "RUNNING")
        return [registry.get(r) for r in run_ids]

    def per_run() -> None:
        for e in active():
            status(e, profile, jobs)

    def shared() -> None:
        store, known = open_store(profile.store), listed_jobs(jobs)
        for e in active():
            status(e, profile, jobs, store, known)

    def command() -> None:
        active()
        proc = subprocess.run([str(Path(sys.executable).with_name("lathe")), "status"], capture_output=True, text=True,
                              check=False)
        if proc.stdout.count(": SUCCEEDED") != args.runs:
            raise SystemExit(f"lathe status did not report every run: {proc.stdout[-500:]}{proc.stderr[-500:]}")

    times: dict[str, list[float]] = {"per run": [], "shared": [], "lathe": []}
    for _ in range(args.repeats):
        for name, fn in (("per run", per_run), ("shared", shared), ("lathe", command)):
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.runs} active runs, Ray {dashboard}, moto S3, {args.repeats} rounds each (median):")
    for name, t in med.items():
        print(f"  {name:8s} {t:6.2f} s")
    print(f"speed-up, shared over per run: {med['per run'] / med['shared']:.1f}x; `lathe status` in all: "
          f"{med['lathe']:.1f} s (goal: under 5 s for 20 runs)")


if __name__ == "__main__":
    main()
