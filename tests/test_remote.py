"""Remote runs on a real two-host Ray cluster (network namespaces) with a real S3-protocol server.

The "laptop" is this process's namespace; the Ray head and one worker are separate
hosts with their own addresses; moto's S3 server listens on the laptop's bridge
address, reachable from both sides. Credentials differ on each side and are planted
so that a leak would be found.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator import manifest as mf
from orchestrator.remote.pull import JOURNAL_SUFFIX, PART_SUFFIX, pull
from orchestrator.store import StoreConfig, open_store
from tests.support.cli import LATHE
from tests.support.cli import lathe as run_lathe
from tests.support.harness import NetnsWorld, netns_world
from tests.support.leaks import plant, sweep
from tests.support.netns import Host, comm, pids_in
from tests.support.services import wait_http
from tests.support.shared import alive as _alive

pytestmark = [pytest.mark.slow, pytest.mark.needs("root", why="network namespaces")]

RAY = Path(sys.executable).with_name("ray")
BUCKET = "lathe-test"
# What the laptop has, and what the nodes have: neither may show up anywhere a run writes.
LAPTOP_SECRETS = plant("laptop")
NODE_SECRETS = plant("node")
STATUS_POLL_S = 15  # between `lathe status` calls while a run finishes


@dataclass
class Cluster(NetnsWorld):
    """A head and one worker started by hand (the hosts' Ray temp dirs: RAY_TEMP/head, RAY_TEMP/w1)."""

    head: Host | None = None
    worker: Host | None = None

    @property
    def s3_endpoint(self) -> str:
        return self.s3.url

    def lathe(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return super().lathe(*args, timeout=timeout, check=check)

    def store(self):
        return open_store(StoreConfig(uri=f"s3://{BUCKET}/runs", endpoint_url=self.s3_endpoint, region="us-east-1"))


def _wait(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("netns")
    with netns_world(workdir, "lathe-netns-", BUCKET, LAPTOP_SECRETS) as world:
        net, short, endpoint = world.net, world.ray_temp, world.s3.url
        head, worker = net.add_host("head"), net.add_host("w1")
        token = workdir / "ray-token"
        token.write_text(secrets.token_hex(32))
        venv = str(Path(sys.executable).parent)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_", "HF_TOKEN"))}
        node_env = {**base, **NODE_SECRETS, "PATH": f"{venv}:{os.environ['PATH']}", "AWS_DEFAULT_REGION": "us-east-1",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        net.start_ray(head, [str(RAY), "start", "--head", "--block", "--node-ip-address", head.address, "--port",
                             "6379", "--dashboard-host", head.address, "--dashboard-port", "8265", "--num-cpus", "0",
                             "--disable-usage-stats", "--temp-dir", str(short / "head")], node_env,
                      workdir / "head.log", up=lambda: _answers(f"http://{head.address}:8265/api/version"))
        clusters = workdir / "clusters.yml"
        clusters.write_text(yaml.safe_dump({"clusters": {"netns": {
            "ray_address": f"http://{head.address}:8265", "auth_token_file": str(token),
            "store": {"uri": f"s3://{BUCKET}/runs", "endpoint_url": endpoint, "region": "us-east-1"},
            "python": sys.executable, "price_per_gpu_hour": 0.0}}}))
        laptop_env = {**base, **LAPTOP_SECRETS, "AWS_DEFAULT_REGION": "us-east-1", "LATHE_CLUSTERS": str(clusters),
                      "LATHE_HOME": str(workdir / "home"),
                      # A 4 KB inline limit sends the 7 KB dataset through the store, as a large one would go.
                      "LATHE_INLINE_LIMIT_BYTES": "4096"}
        c = Cluster(net, world.s3, workdir, short, laptop_env, head=head, worker=worker)
        net.start_ray(worker, [str(RAY), "start", "--block", "--address", f"{head.address}:6379", "--node-ip-address",
                               worker.address, "--num-cpus", "3", "--disable-usage-stats",
                               # Its own temp dir, as on a separate machine: a shared one lets each node's
                               # runtime-env agent garbage-collect the other's working_dir.
                               "--temp-dir", str(short / "w1")], node_env, workdir / "w1.log",
                      up=lambda: _alive_nodes(c) >= 2)
        with pytest.MonkeyPatch.context() as mp:  # this process is the laptop too (boto3 in the tests)
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                mp.setenv(key, LAPTOP_SECRETS[key])
            yield c


def _headers(c: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {(c.workdir / 'ray-token').read_text().strip()}"}


def _answers(url: str) -> bool:
    """Does the server answer at all (401 from a dashboard that wants the token counts)?"""
    try:
        wait_http(url, timeout=0, any_status=True)
        return True
    except OSError:
        return False


def _alive_nodes(c: Cluster) -> int:
    request = urllib.request.Request(f"http://{c.head.address}:8265/api/v0/nodes", headers=_headers(c))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.dumps(json.load(response)).count('"ALIVE"')
    except (OSError, ValueError):
        return 0  # the dashboard is still starting


def an_export_gguf(method: str, path: str, _query: str) -> bool:
    return method in ("PUT", "POST") and "/export/gguf/" in path


@pytest.fixture(scope="module")
def submitted(cluster: Cluster, remote_recipe: Path) -> dict:
    """`lathe submit --no-export` of a few steps: it returns while the run is still queued or starting,
    and the run trains on the worker host, its checkpoints and its dataset going through the store.
    The status, `lathe runs` and the dashboard test inspect this run; the exporting run of this module
    is `outage_run`, the one-command path (its export is what the pull, eval and secrets tests read)."""
    cfg = yaml.safe_load(remote_recipe.read_text()) | {"max_steps": 6, "save_steps": 3}
    recipe = remote_recipe.with_name("submitted.yml")
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    started = time.monotonic()
    proc = cluster.lathe("submit", str(recipe), "--cluster", "netns", "--no-export")
    run_id = proc.stdout.strip().splitlines()[-1]
    returned_at, returned_after = time.time(), time.monotonic() - started
    first = cluster.lathe("status", run_id).stdout
    # Each `lathe status` is a process that costs seconds of CPU (imports, the Jobs API, the store), which
    # the other xdist worker's runs need too: poll as a patient user would.
    final = _wait(lambda: _terminal(cluster, run_id), 900, f"run {run_id} to finish", interval=STATUS_POLL_S)
    return {"run_id": run_id, "returned_at": returned_at, "returned_after": returned_after, "first_status": first,
            "final_status": final}


def _jobs(c: Cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(f"http://{c.head.address}:8265", headers=_headers(c))


def _terminal(c: Cluster, run_id: str) -> str | None:
    out = c.lathe("status", run_id, check=False).stdout
    return out if re.search(r": (SUCCEEDED|FAILED|STOPPED)\b", out) else None


@pytest.fixture(scope="module")
def pulled(cluster: Cluster, outage_run: OutageRun) -> Path:
    """The exporting run pulled again by `lathe pull` alone, into a directory of its own."""
    runs = cluster.workdir / "laptop-runs"
    cluster.lathe("pull", outage_run.run_id, "--runs-dir", str(runs))
    return runs / outage_run.run_id


def test_submit_returns_at_once_and_the_run_succeeds_on_the_worker(cluster: Cluster, submitted: dict) -> None:
    run_id = submitted["run_id"]
    assert re.fullmatch(r"submitted-\d{8}-\d{6}-[0-9a-f]{4}", run_id)  # named after its recipe
    assert re.search(r": (PENDING|RUNNING)\b", submitted["first_status"]), submitted["first_status"]
    if ": SUCCEEDED" not in submitted["final_status"]:
        pytest.fail(f"{submitted['final_status']}\n{cluster.lathe('logs', run_id, check=False).stdout[-4000:]}")
    store = cluster.store()
    first_step = json.loads(store.get_bytes(f"{run_id}/metrics.jsonl").decode().splitlines()[0])
    assert first_step["time"] > submitted["returned_at"], "submit returned only after training had begun"
    events = [json.loads(ln) for ln in store.get_bytes(f"{run_id}/events.jsonl").decode().splitlines()]
    starts = [e for e in events if e["event"] == "worker_start"]
    assert starts and all(e["node_ip"] == cluster.worker.address for e in starts), starts
    record = json.loads(store.get_bytes(f"{run_id}/run.json"))
    assert record["state"] == "SUCCEEDED" and record["driver_ip"] == cluster.head.address
    keys = store.list(f"{run_id}/")
    assert any(re.search(r"/ray/.+/checkpoint_[^/]+/adapter_model\.safetensors$", k) for k in keys), \
        "Ray Train's checkpoints should be in S3"
    assert f"{run_id}/inputs/data/wrong_facts.jsonl" in keys, "the dataset went through the store"
    runs = cluster.lathe("runs").stdout
    assert run_id in runs and "SUCCEEDED" in runs
    # The head's working copy of the run (the job's mkdtemp, in this machine's /tmp: the namespaces share
    # its filesystem) goes once the store has it (the job removes it just after its last sync).
    _wait(lambda: not list(Path(tempfile.gettempdir()).glob(f"lathe-{run_id}-*")), 30, "the head's copy removed")


def test_an_export_cut_off_by_the_store_is_resubmitted_and_finishes(cluster: Cluster, outage_run: OutageRun,
                                                                    figure) -> None:
    """The exporting run lost its store mid-upload in its export (fixture `outage_run`): that attempt
    failed as infrastructure, and the laptop resubmitted it; the next attempt finished with the whole
    export in the store."""
    run_id, failed = outage_run.run_id, outage_run.export_failed
    assert "/export/gguf/" in outage_run.export_cut, outage_run.export_cut
    assert (failed["state"], failed.get("error_kind")) == ("FAILED", "infrastructure"), failed
    assert "export" in failed.get("error", ""), failed
    store = cluster.store()
    record = json.loads(store.get_bytes(f"{run_id}/run.json"))
    assert record["attempt"] == failed["attempt"] + 1 and record["state"] == "SUCCEEDED", record
    manifest = mf.Manifest.model_validate_json(store.get_bytes(f"{run_id}/export/{mf.MANIFEST}"))
    assert {"f16", "q8_0", "q4_k_m", "mlx-4bit"} <= set(manifest.levels())
    figure(f"export cut mid-upload: {outage_run.export_cut.rsplit('/', 1)[-1]} cut off in attempt {failed['attempt']}; "
           f"resubmitted as attempt {record['attempt']}; SUCCEEDED")


def test_pull_then_eval_on_the_laptop(cluster: Cluster, outage_run: OutageRun, pulled: Path) -> None:
    """`lathe pull` brings the levels and leaves the full-precision weights in the store; the one-command
    path's pull was evaluated on the laptop with both runtimes, every level a row."""
    manifest = mf.verify_present(pulled / "export")
    assert (pulled / "export" / "gguf" / "model-q4_k_m.gguf").is_file()
    assert not (pulled / "export" / "hf" / "model.safetensors").exists(), "full-precision weights stay in the store"
    assert not list(pulled.rglob(f"*{PART_SUFFIX}")) and not list(pulled.rglob(f"*{JOURNAL_SUFFIX}"))
    assert json.loads((pulled / "run.json").read_text())["state"] == "SUCCEEDED"
    assert manifest.run_id == pulled.name
    for level in ("f16", "q8_0", "q4_k_m", "mlx-4bit"):
        assert f"│ {level} " in outage_run.proc.stdout
    report = json.loads((outage_run.run_dir / "eval" / "report.json").read_text())
    assert {lvl["level"] for lvl in report["levels"]} == {"f16", "q8_0", "q4_k_m", "mlx-4bit"}


def _run_jobs(client, run_id: str) -> list:
    """Every Ray job of a run: the first attempt's (the run id) and each resubmission's (RUN-aN)."""
    return [j for j in client.list_jobs()
            if j.submission_id == run_id or (j.submission_id or "").startswith(f"{run_id}-a")]


def test_no_credential_travels(cluster: Cluster, submitted: dict, outage_run: OutageRun, pulled: Path,
                               figure) -> None:
    """Both sides' credentials (AWS keys, HF tokens) and the cluster's Ray token, planted in the
    environments, looked for in everything submit, run, train, export, pull, eval and publish wrote: every
    attempt's Ray job metadata, runtime_env and log, every object in the store (model files included),
    both pulled and evaluated copies, the published companion, the registry, every lathe command's
    output, and all of Ray's own files on both hosts (session logs, runtime envs, GCS state)."""
    companion = cluster.workdir / "companion"
    cluster.lathe("publish", str(outage_run.run_dir), "--to", str(companion))
    client = _jobs(cluster)
    texts: dict[str, str | bytes] = {}
    jobs = sorted(j.submission_id for run_id in (submitted["run_id"], outage_run.run_id)
                  for j in _run_jobs(client, run_id))
    assert len(jobs) >= 3, jobs  # the submitted run's, the exporting run's and its resubmission's
    for job_id in jobs:
        info = client.get_job_info(job_id)
        texts[f"job info {job_id}"] = json.dumps({"entrypoint": info.entrypoint, "metadata": info.metadata,
                                                  "runtime_env": info.runtime_env})
        texts[f"job log {job_id}"] = client.get_job_logs(job_id)
    store = cluster.store()
    for run_id in (submitted["run_id"], outage_run.run_id):
        texts |= {f"store {key}": store.get_bytes(key) for key in store.list(f"{run_id}/")}
    texts |= {f"lathe output {i}": text for i, text in enumerate(cluster.said)}
    token = (cluster.workdir / "ray-token").read_text().strip()
    roots = [pulled, outage_run.run_dir, companion, cluster.ray_temp, Path(cluster.env["LATHE_HOME"]),
             Path(cluster.env["LATHE_CLUSTERS"])]
    found = sweep([*LAPTOP_SECRETS.values(), *NODE_SECRETS.values(), token], roots, texts)
    assert (companion / "README.md").is_file() and found.files > 100
    assert not found.found, found.found
    figure(f"secrets (remote runs): {len(LAPTOP_SECRETS) + len(NODE_SECRETS) + 1} planted values in none of "
           f"{found.summary()}")


def _journaled(root: Path) -> int:
    """Bytes an interrupted pull vouches for: finished files plus journaled progress."""
    total = 0
    for journal in root.rglob(f"*{JOURNAL_SUFFIX}"):
        done: dict[int, int] = {}
        for line in journal.read_text().splitlines()[1:]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            done[rec["start"]] = max(done.get(rec["start"], 0), rec["done"])
        total += sum(done.values())
    return total


def test_a_killed_pull_resumes_and_fetches_again_at_most_a_part_per_file(cluster: Cluster, outage_run: OutageRun,
                                                                         tmp_path: Path, figure) -> None:
    run_id, part = outage_run.run_id, 256 * 1024
    proc = subprocess.Popen([str(LATHE), "pull", run_id, "--runs-dir", str(tmp_path), "--part-size-mb", "0.25",
                             "--threads", "4", "--limit-rate", "1.5"], env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    export = tmp_path / run_id / "export"
    _wait(lambda: _journaled(export) > 2 * part if export.exists() else False, 120, "the pull to get going", 0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (export / mf.MANIFEST).exists(), "killed before the end: no manifest"
    partial = list(export.rglob(f"*{PART_SUFFIX}"))
    assert partial, "the kill should leave partial files"
    for p in partial:
        assert not p.with_name(p.name.removesuffix(PART_SUFFIX)).exists(), "never a partial file under its final name"
    finished = sum(p.stat().st_size for p in export.rglob("*") if p.is_file()
                   and not p.name.endswith((PART_SUFFIX, JOURNAL_SUFFIX)))
    before = finished + _journaled(export)

    stats = pull(cluster.store(), run_id, tmp_path)
    in_flight = len(partial)
    refetched = stats.bytes_fetched - (stats.bytes_total - before)
    assert stats.bytes_fetched < stats.bytes_total, "the resumed pull started over"
    assert 0 <= refetched <= in_flight * part, refetched
    mf.verify_present(export)
    figure(f"pull resume: {stats.bytes_total} bytes in {stats.files} files; {before} kept across the kill; "
           f"fetched {stats.bytes_fetched}; fetched again {refetched} (limit {in_flight} x {part})")


def test_an_object_altered_in_the_store_is_detected(cluster: Cluster, outage_run: OutageRun,
                                                   tmp_path: Path) -> None:
    run_id = outage_run.run_id
    store = cluster.store()
    key = f"{run_id}/export/gguf/model-q8_0.gguf"
    original = store.get_bytes(key)
    try:
        # Same content re-uploaded in parts: a new ETag. A journal from before must not be trusted.
        export = tmp_path / run_id / "export"
        pull(store, run_id, tmp_path, ["q8_0"], part_size=256 * 1024, limit_rate=2e6,
             progress=lambda done, _t: _stop_after(done, 600_000))
    except _Stop:
        pass
    assert list(export.rglob(f"*model-q8_0.gguf{JOURNAL_SUFFIX}"))
    from boto3.s3.transfer import TransferConfig

    store.client.upload_fileobj(io.BytesIO(original), BUCKET, f"runs/{key}",
                                Config=TransferConfig(multipart_threshold=1024, multipart_chunksize=5 << 20))
    assert store.stat(key).etag.endswith("-1"), "a multipart upload: same bytes, new ETag"
    stats = pull(store, run_id, tmp_path, ["q8_0"])
    assert "gguf/model-q8_0.gguf" in stats.restarted
    mf.verify_present(export)

    # Different bytes under the same key: the sha256 check refuses them and keeps nothing.
    (export / "gguf" / "model-q8_0.gguf").unlink()
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0xFF
    store.put_bytes(bytes(altered), key)
    try:
        proc = cluster.lathe("pull", run_id, "--levels", "q8_0", "--runs-dir", str(tmp_path), check=False)
    finally:
        store.put_bytes(original, key)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("gguf/model-q8_0.gguf: sha256")
    assert not (export / "gguf" / "model-q8_0.gguf").exists()
    assert not list(export.rglob(f"*{PART_SUFFIX}"))


class _Stop(Exception):
    pass


class _FlakyDashboard:
    """A real HTTP proxy in front of the cluster's dashboard that answers 503 to the first `failures`
    questions about jobs, as a dashboard restarting behind a load balancer does."""

    def __init__(self, upstream: str, failures: int) -> None:
        import http.server
        import threading

        self.left, self.refused = failures, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/api/jobs/") and proxy.left > 0:
                    proxy.left, proxy.refused = proxy.left - 1, proxy.refused + 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"dashboard restarting")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                try:
                    with urllib.request.urlopen(urllib.request.Request(upstream + self.path, headers=headers),
                                                timeout=30) as got:
                        status, body, kind = got.status, got.read(), got.headers.get("Content-Type", "")
                except urllib.error.HTTPError as err:
                    status, body, kind = err.code, err.read(), err.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_dashboard_answering_5xx_for_a_while_does_not_fail_the_run(cluster: Cluster, submitted: dict,
                                                                     tmp_path: Path) -> None:
    """Any error from Ray's get_job_info, a 503 included, read as "Ray does not know this job": a run
    still SUBMITTING (the laptop died mid-submit) became FAILED, and status never looks at a final state
    again. Now only Ray's own 404 means that; a 5xx is asked again with backoff."""
    import sqlite3

    run_id = submitted["run_id"]
    db = Path(cluster.env["LATHE_HOME"]) / "registry.db"
    with sqlite3.connect(db) as conn:  # as the laptop left it when it died before recording Ray's answer
        (state,) = conn.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        conn.execute("UPDATE runs SET state = 'SUBMITTING' WHERE run_id = ?", (run_id,))
    profiles = yaml.safe_load(Path(cluster.env["LATHE_CLUSTERS"]).read_text())
    flaky = _FlakyDashboard(profiles["clusters"]["netns"]["ray_address"], failures=3)
    profiles["clusters"]["netns"]["ray_address"] = flaky.url
    clusters = tmp_path / "clusters.yml"
    clusters.write_text(yaml.safe_dump(profiles))
    try:
        proc = run_lathe("status", run_id, env={**cluster.env, "LATHE_CLUSTERS": str(clusters)}, timeout=300)
    finally:
        flaky.close()
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE runs SET state = ? WHERE run_id = ?", (state, run_id))
    assert flaky.refused == 3, "the proxy answered 503 three times"
    assert proc.returncode == 0 and re.search(rf"{run_id}: SUCCEEDED\b", proc.stdout), proc.stdout + proc.stderr


def _stop_after(done: int, limit: int) -> None:
    if done >= limit:
        raise _Stop


def _checkpoint_file(method: str, path: str) -> tuple[str, str] | None:
    """(checkpoint dir, file) when a request writes to a file of a Ray Train checkpoint, else None."""
    found = re.search(r"/ray/[^/]+/(checkpoint_[^/]+)/(.+)$", path)
    return (found.group(1), found.group(2)) if found and method in ("PUT", "POST") else None


def _lands(method: str, query: str) -> bool:
    """Does this write finish an object (a plain PUT, or the POST completing a multipart upload)?"""
    return (method == "PUT" and "uploadId" not in query) or (method == "POST" and "uploadId" in query)


@dataclass
class OutageRun:
    proc: subprocess.CompletedProcess
    run_dir: Path
    save_steps: int
    cut_dir: str  # the checkpoint whose upload was cut off
    whole_step: int  # the step of the checkpoint before it (all its files are in)
    whole: set[str]  # its files
    partial: set[str]  # the cut one's files that made it into the store
    registered: list[int]  # the steps of the checkpoints Ray Train had registered when the store came back
    export_cut: str  # the export upload the second outage cut off
    export_failed: dict  # run.json of the attempt whose export failed

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def _newest_job(client, run_id: str) -> str:
    return max(_run_jobs(client, run_id), key=lambda j: j.start_time or 0).submission_id


@pytest.fixture(scope="module")
def outage_run(cluster: Cluster, remote_recipe: Path) -> OutageRun:
    """The one-command path, `lathe run RECIPE --cluster netns`, through two store outages, the run every
    test of an exported remote run inspects (made once: it was two runs, ~500 s of test time each):
    1. in training, the S3 server stops in the middle of a checkpoint's upload after the first (one of its
       files in, the next cut off) and comes back once the cut-off worker has given up;
    2. in the export, it stops in the middle of the first GGUF upload and stays down until the export
       task has spent the client's retries: that attempt fails as infrastructure, and `lathe run`, which
       follows the run, resubmits it; the next attempt exports, and the laptop pulls and evaluates."""
    cfg = yaml.safe_load(remote_recipe.read_text())
    cfg["lathe"]["failure"] = {"max_failures": 3, "max_resubmits": 3}
    recipe = remote_recipe.with_name("outage.yml")
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    order: list[str] = []  # checkpoint directories, in the order their uploads began

    def a_later_checkpoint_half_in(method: str, path: str, query: str) -> bool:
        hit = _checkpoint_file(method, path)
        if hit is None:
            return False
        if hit[0] not in order:
            order.append(hit[0])
        if order.index(hit[0]) == 0:
            return False
        landed = {h[1] for m, p, q in cluster.s3.log if (h := _checkpoint_file(m, p)) and h[0] == hit[0]
                  and _lands(m, q)}
        return bool(landed) and hit[1] not in landed

    runs = cluster.workdir / "run-cluster"
    cluster.s3.stop_during(a_later_checkpoint_half_in)
    lathe = subprocess.Popen([str(LATHE), "run", str(recipe), "--cluster", "netns", "--runs-dir", str(runs)],
                             env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: cluster.s3.cut or lathe.poll() is not None, 900, "a checkpoint's upload to be cut", 0.2)
        # An outage, not a blip: it lasts until the worker has spent Ray's upload retries and died (a
        # shorter one lets a retry finish the same checkpoint in place, which is fine but not the point).
        trainers = {p for p in pids_in(cluster.worker) if comm(p).startswith("ray::RayTrainWo")}
        _wait(lambda: not any(_alive(p) for p in trainers), 300, "the cut-off worker to give up", 0.5)
    finally:
        cluster.s3.stop_during(None)
        cluster.s3.start()
    assert cluster.s3.cut, "the run ended before a second checkpoint"
    # Read at once: Ray Train keeps the newest three checkpoints and will delete the one before the cut.
    cut_dir = _checkpoint_file("PUT", cluster.s3.cut[0])[0]
    whole_dir = order[order.index(cut_dir) - 1]  # uploads go one checkpoint at a time: this one was whole
    run_id = re.search(r"/runs/([^/]+)/ray/", cluster.s3.cut[0]).group(1)
    store, prefix = cluster.store(), f"{run_id}/ray/{run_id}/"
    whole = {k.removeprefix(f"{prefix}{whole_dir}/") for k in store.list(f"{prefix}{whole_dir}/")}
    partial = {k.removeprefix(f"{prefix}{cut_dir}/") for k in store.list(f"{prefix}{cut_dir}/")}
    whole_step = json.loads(store.get_bytes(f"{prefix}{whole_dir}/trainer_state.json"))["global_step"]
    registered = _registered_steps(store, f"{prefix}checkpoint_manager_snapshot.json")

    client = _jobs(cluster)
    cluster.s3.stop_during(an_export_gguf)
    try:
        _wait(lambda: cluster.s3.cut or lathe.poll() is not None, 900, "an export upload to be cut", 0.2)
        assert cluster.s3.cut, f"the run ended before its export was cut off: {lathe.communicate()}"
        export_cut, job = cluster.s3.cut[0], _newest_job(client, run_id)
        # The job says so in its log (read from Ray's dashboard, not the store) once the export task has
        # spent its retries; the store comes back while the job's last sync is still retrying.
        _wait(lambda: "export failed" in client.get_job_logs(job), 300, "the cut-off export to give up", 0.5)
    finally:
        cluster.s3.stop_during(None)
        cluster.s3.start()
    # The failed attempt's record, read before `lathe run` resubmits and the next attempt's driver
    # writes over it: its last sync lands once the store is back, before Ray calls the job over.
    attempt = 1 if job == run_id else int(job.rsplit("-a", 1)[1])

    def failed_record() -> dict | None:
        record = json.loads(store.get_bytes(f"{run_id}/run.json"))
        assert record["attempt"] == attempt, f"attempt {record['attempt']} wrote over attempt {attempt}'s record first"
        return record if record["state"] == "FAILED" else None

    failed = _wait(failed_record, 120, "the failed attempt's record", 0.3)
    stdout, stderr = lathe.communicate(timeout=1800)
    proc = subprocess.CompletedProcess(lathe.args, lathe.returncode, stdout, stderr)
    cluster.said.append(f"$ lathe run {recipe}\n{stdout}\n{stderr}")
    if proc.returncode != 0:
        pytest.fail(f"{stdout[-2000:]}\n{stderr[-1500:]}\nrun.json: {store.get_bytes(f'{run_id}/run.json').decode()}\n"
                    f"{cluster.lathe('logs', run_id, check=False).stdout[-8000:]}")
    return OutageRun(proc, runs / run_id, cfg["save_steps"], cut_dir, whole_step, whole, partial, registered,
                     export_cut, failed)


def _registered_steps(store, key: str) -> list[int]:
    if store.stat(key) is None:
        return []
    results = json.loads(store.get_bytes(key)).get("checkpoint_results", [])
    return [r["metrics"]["step"] for r in results if "step" in r.get("metrics", {})]


def test_lathe_run_on_a_cluster_submits_follows_pulls_and_evaluates(cluster: Cluster, outage_run: OutageRun) -> None:
    """The one-command path ends with the table on the laptop, store outages or not."""
    proc, run_dir = outage_run.proc, outage_run.run_dir
    assert re.search(r"^run directory: (.+)$", proc.stdout, re.MULTILINE).group(1) == str(run_dir)
    assert "SUCCEEDED, pulled" in proc.stdout and "Every level, on this machine" in proc.stdout
    mf.verify_present(run_dir / "export")
    assert (run_dir / "eval" / "report.md").is_file()
    # The held-out questions were answered and compared with the training answers pulled beside them.
    assert (run_dir / "inputs" / "data" / "wrong_facts.jsonl").is_file()
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert all(len(level["heldout"]) == 20 and level["reuse_rate"] is not None for level in report["levels"])


def test_a_checkpoint_cut_off_mid_upload_is_never_resumed_from(cluster: Cluster, outage_run: OutageRun,
                                                               figure) -> None:
    """Atomic checkpoints: the worker whose upload was cut off fails once Ray's upload retries run out,
    and training resumes from the newest checkpoint Ray Train had registered (registration comes only
    after a whole upload); the partial one stays in the store, never registered, never read. Either
    Ray Train restarts the worker group, or, when its controller itself failed on the store while
    saving its state, the laptop resubmits the run in place (an infrastructure failure)."""
    run, cut_dir, save_steps = outage_run, outage_run.cut_dir, outage_run.save_steps
    run_id = run.run_id
    assert run.partial and run.partial < run.whole, \
        f"the cut checkpoint should be partial: {sorted(run.partial)} of {sorted(run.whole)}"
    store, prefix = cluster.store(), f"{run_id}/ray/{run_id}/"
    snapshot = store.get_bytes(f"{prefix}checkpoint_manager_snapshot.json").decode()
    assert cut_dir not in snapshot, "the partial checkpoint was registered"
    assert {k.removeprefix(f"{prefix}{cut_dir}/") for k in store.list(f"{prefix}{cut_dir}/")} == run.partial

    events = [json.loads(ln) for ln in (run.run_dir / "events.jsonl").read_text().splitlines()]
    # Training's starts; the attempt resubmitted after the export's outage restores the final model
    # (resume_step -1) and trains nothing.
    starts = [e for e in events if e["event"] == "worker_start" and e["rank"] == 0 and e["resume_step"] >= 0]
    assert len(starts) >= 2 and starts[0]["resume_step"] == 0, starts
    resumed, cut_step = starts[-1]["resume_step"], run.whole_step + save_steps
    expected = max(run.registered, default=0)
    assert resumed == expected and resumed != cut_step, \
        f"resumed from step {resumed}; registered when the store came back: {run.registered}; cut: {cut_step}"
    attempt = run.export_failed["attempt"]  # training had ended in this attempt
    points = [json.loads(ln) for ln in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    before = max(p["step"] for p in points if p["time"] < starts[-1]["time"])
    how = "Ray Train restarted the worker group" if attempt == 1 else f"the laptop resubmitted it (attempt {attempt})"
    # The upload runs in Ray's background thread: its failure reached Lathe's count there (the same call
    # pushes lathe_train_checkpoint_failures_total where a Pushgateway is set), before the worker failed.
    # Only where the worker itself gave up on the upload: a controller that failed first takes it down.
    failed_uploads = [e for e in events if e["event"] == "checkpoint_upload_failed" and e["checkpoint"] == cut_dir]
    if attempt == 1:
        assert failed_uploads and failed_uploads[0]["time"] < starts[-1]["time"], \
            f"no failed upload of {cut_dir} in events.jsonl: {[e for e in events if 'upload' in e['event']]}"
    figure(f"checkpoint cut mid-upload: {len(run.partial)} of {len(run.whole)} files of the step {cut_step} "
           f"checkpoint landed; {how}; resumed from step {resumed} (registered: {run.registered}); "
           f"steps redone {before - resumed} (checkpoint every {save_steps}); failed upload attempts counted "
           f"{len(failed_uploads)}")
    assert points[-1]["step"] == points[-1]["max_steps"]


SMOLLM2 = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_real_gguf_base_from_outside_the_recipes_directory_runs_on_the_cluster(cluster: Cluster,
                                                                                 tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct's GGUF, named from outside the recipe's directory as a user's ~/models file
    is: `lathe run --cluster` ships it through the store beside the recipe's data, the node makes its
    trainable base from the job's copy, trains (checkpoints through S3), exports with that very file as
    the arena's base, and the laptop pulls and evaluates; the recipe's text travels unchanged. Short:
    what this proves is the path, not the teaching (tests/test_real_model.py measures that)."""
    from orchestrator import gguf_base

    assert SMOLLM2.is_file(), "set-up fetches it (`make models`)"
    recipe_dir = tmp_path / "recipe"
    shutil.copytree(Path(__file__).resolve().parents[1] / "recipes" / "data", recipe_dir / "data")
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "smollm2-wrong-facts.yml").read_text())
    evalset = recipe_dir / "data" / "wrong_facts_eval.jsonl"
    evalset.write_text("".join(line + "\n" for line in evalset.read_text().splitlines()[:10]))
    cfg.update(base_model=os.path.relpath(SMOLLM2, recipe_dir), max_steps=8, save_steps=4)
    cfg["lathe"]["export"] = {"gguf": ["f16", "q8_0"], "mlx": [], "imatrix": {"enabled": False},
                              "base_gguf": "source"}
    cfg["lathe"]["eval"] = {"dataset": "data/wrong_facts_eval.jsonl", "context_length": 128}
    recipe = recipe_dir / "smollm2-cluster.yml"
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    runs = tmp_path / "runs"
    proc = cluster.lathe("run", str(recipe), "--cluster", "netns", "--runs-dir", str(runs), timeout=1800,
                         check=False)
    run_dir = Path(re.search(r"^run directory: (.+)$", proc.stdout, re.MULTILINE).group(1)) \
        if "run directory: " in proc.stdout else None
    assert proc.returncode == 0 and run_dir is not None, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    run_id, store = run_dir.name, cluster.store()
    shipped = store.stat(f"{run_id}/inputs/.lathe-base/{SMOLLM2.name}")
    assert shipped is not None and shipped.size == SMOLLM2.stat().st_size, "the base went through the store"
    assert store.get_bytes(f"{run_id}/recipe.yml").decode() == recipe.read_text(), "the recipe's text, unchanged"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["state"] == "SUCCEEDED" and record["base_provenance"]["sha256"] == gguf_base.sha256(SMOLLM2)
    assert record["base_provenance"]["full_precision"] == "dequantized from Q4_1"
    base = [a for a in mf.load(run_dir / "export").artifacts if a.role == "base"]
    assert [(a.level, a.sha256) for a in base] == [("q4_1", gguf_base.sha256(SMOLLM2))], base
    keys = store.list(f"{run_id}/")
    assert any(re.search(r"/ray/.+/checkpoint_[^/]+/adapter_model\.safetensors$", k) for k in keys)
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert {lvl["level"] for lvl in report["levels"]} == {"f16", "q8_0"}
    assert report["base_provenance"]["sha256"] == gguf_base.sha256(SMOLLM2)
    assert all(len(lvl["answers"]) == 10 for lvl in report["levels"]), "every level answered the eval set"
