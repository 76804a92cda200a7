"""`lathe cluster up/status/down` on four network-namespace hosts that are bare boxes (harness:
tests/support/colo.py). Preflight refuses bad hosts and changes nothing; `up` installs lathe[node]
into their shared venv from a wheelhouse on the test bridge and starts Ray over SSH (host keys
checked); the quickstart and the faults run across head and worker; `down` leaves only the sshds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator import manifest as mf
from orchestrator.remote.connect import jobs_client
from tests.support import colo as harness
from tests.support.cli import LATHE
from tests.support.netns import comm, pids_in

pytestmark = [pytest.mark.slow, pytest.mark.needs("root", why="network namespaces")]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="module")
def colo(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path):
    with harness.colo_world(tmp_path_factory.mktemp("colo"), wheelhouse) as world:
        yield world


def test_preflight_names_the_bad_host_and_starts_nothing(colo: harness.Colo) -> None:
    changed_key = colo.lathe("cluster", "up", str(colo.inventory("three")))
    assert changed_key.returncode == 6, changed_key.stdout + changed_key.stderr
    assert "preflight failed on 1 of 3 hosts; nothing was changed" in changed_key.stderr
    assert re.search(r"h3 \(\S+\): host key does not match", changed_key.stderr), changed_key.stderr

    nopython = harness.two_hosts(colo, "nopython", h2={"python": "/opt/none/python3"})
    no_python = colo.lathe("cluster", "up", str(nopython))
    assert no_python.returncode == 6
    assert "h2 (" in no_python.stderr and "python /opt/none/python3: not found" in no_python.stderr

    # A bare box with the wrong Python, and a GPU box whose driver is too old for the locked CUDA build.
    other = harness.other_python()
    hosts = harness.two_hosts(colo, "wrongboxes", h2={"python": other})
    data = yaml.safe_load(hosts.read_text())
    data["hosts"].append({**data["hosts"][1], "name": "h4", "address": colo.hosts["h4"].address, "gpus": 1,
                          "python": harness.BARE_PYTHON, "state_dir": str(colo.workdir / "state-h4"),
                          "ray_temp_dir": str(colo.ray_temp / "h4")})
    hosts.write_text(yaml.safe_dump(data, sort_keys=False))
    boxes = colo.lathe("cluster", "up", str(hosts))
    assert boxes.returncode == 6 and "preflight failed on 2 of 3 hosts" in boxes.stderr, boxes.stderr
    version = subprocess.run([other, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert re.search(rf"h2 \(\S+\): python {re.escape(other)}: Python {re.escape(version)}, the node stack is "
                     r"locked for 3\.12", boxes.stderr), boxes.stderr
    assert re.search(r"h4 \(\S+\): NVIDIA driver 535\.104\.05, 580\.65\.06 or newer wanted", boxes.stderr)

    # No room for the venv; then a wheelhouse that does not have this laptop's lathe.
    full = colo.lathe("cluster", "up", str(harness.two_hosts(colo, "nodisk", node_env={
        **colo.base["node_env"], "min_free_disk_gb": 1e6})))
    assert full.returncode == 6 and full.stderr.count("GB free where the venv goes") == 2, full.stderr
    assert "1e+06 GB wanted (node_env.min_free_disk_gb)" in full.stderr
    stale = colo.lathe("cluster", "up", str(harness.two_hosts(colo, "stale", node_env={
        **colo.base["node_env"], "wheelhouse": colo.base["node_env"]["wheelhouse"] + "last-release/"})))
    assert stale.returncode == 6 and stale.stderr.count(
        f"has no lathe {harness.LATHE_VERSION} wheel (this laptop's version; it has 0.0.9)") == 2, stale.stderr
    gone = colo.lathe("cluster", "up", str(harness.two_hosts(colo, "gone", node_env={
        **colo.base["node_env"], "wheelhouse": colo.base["node_env"]["wheelhouse"] + "nowhere/"})))
    assert gone.returncode == 6 and gone.stderr.count("cannot be read from the host (File not found)") == 2, gone.stderr

    # Two hosts whose state_dir is one folder, as with the default ~/.lathe-node in an NFS home (the netns
    # hosts share this machine's filesystem: the same path is the same folder, seen from both).
    h1_state = next(h["state_dir"] for h in colo.base["hosts"] if h["name"] == "h1")
    shared = colo.lathe("cluster", "up", str(harness.two_hosts(colo, "sharedhome", h2={"state_dir": h1_state})))
    assert shared.returncode == 6 and "preflight failed on 2 of 2 hosts" in shared.stderr, shared.stderr
    for host, other in (("h1", "h2"), ("h2", "h1")):
        assert re.search(rf"{host} \(\S+\): state_dir {re.escape(h1_state)} is the same folder on {other} "
                         r"\(a shared home\?\)", shared.stderr), shared.stderr
    assert not list(colo.workdir.glob(".lathe-preflight-*")), "the markers go again"

    unknown = colo.inventory("unknown", known_hosts=str(colo.workdir / "empty_known_hosts"))
    (colo.workdir / "empty_known_hosts").write_text("")
    refused = colo.lathe("cluster", "up", str(unknown))
    assert refused.returncode == 6 and refused.stderr.count("host key not in") == 3, refused.stderr

    assert colo.leftovers(["h1", "h2", "h3", "h4"]) == {}, "a failed preflight must start nothing anywhere"
    assert not any((colo.workdir / f"state-{n}").exists() for n in ("h1", "h2", "h3", "h4"))
    assert not (colo.workdir / "node-venv").exists(), "nor install anything"
    assert not (colo.workdir / "clusters.yml").exists()


@pytest.fixture(scope="module")
def provisioned(colo: harness.Colo):
    inventory = harness.two_hosts(colo, "colo")
    try:
        first = colo.lathe("cluster", "up", str(inventory))
        assert first.returncode == 0, first.stdout + first.stderr
        yield inventory, first
    finally:
        colo.lathe("cluster", "down", str(inventory))  # if up or a test failed halfway; a no-op otherwise


def test_up_starts_ray_and_exporters_and_a_second_up_changes_nothing(colo: harness.Colo, provisioned) -> None:
    inventory, first = provisioned
    assert "no changes" not in first.stdout
    rows = [ln for ln in first.stdout.splitlines() if re.search(r"\bh[12]\b", ln)]
    assert len(rows) >= 2 and all("ALIVE" in ln for ln in rows[:2]), first.stdout
    profile = yaml.safe_load((colo.workdir / "clusters.yml").read_text())["clusters"]["colo"]
    assert profile["ssh_tunnel"]["host"] == colo.hosts["h1"].address, "the dashboard stays on the head's loopback"
    assert profile["price_per_gpu_hour"] == 0.5 and "key" not in json.dumps(profile["store"]).lower()
    token = Path(profile["auth_token_file"])
    assert token.stat().st_mode & 0o077 == 0, "the cluster token is private to the user"

    # The bare boxes' venv: lathe installed from the wheelhouse's wheel at this laptop's version (not
    # this source tree), llama.cpp's tools with it, and Ray on both hosts running from it.
    venv = colo.workdir / "node-venv"
    assert profile["python"] == f"{venv}/bin/python"
    site = venv / "lib" / "python3.12" / "site-packages"
    assert (site / f"lathe-{harness.LATHE_VERSION}.dist-info").is_dir() and (site / "orchestrator" / "cli").is_dir()
    assert os.access(venv / "share" / "lathe" / "llama.cpp" / "bin" / "llama-quantize", os.X_OK)
    for name in ("h1", "h2"):
        raylets = [p for p in pids_in(colo.hosts[name]) if comm(p) == "raylet"]
        assert raylets and all(os.readlink(f"/proc/{p}/exe").startswith(str(site)) for p in raylets), name

    pids = harness.ray_pids(colo)
    again = colo.lathe("cluster", "up", str(inventory))
    assert again.returncode == 0 and again.stdout.strip().endswith("no changes"), again.stdout + again.stderr
    assert harness.ray_pids(colo) == pids, "a second up restarts nothing"

    h2 = colo.hosts["h2"].address
    with urllib.request.urlopen(f"http://{h2}:9100/metrics", timeout=10) as response:
        assert b"node_cpu_seconds_total" in response.read(), "node_exporter serves host metrics on the worker"
    targets = json.loads((colo.workdir / "config" / "lathe" / "prometheus" / "colo-nodes.json").read_text())
    assert {t["targets"][0] for t in targets} == {f"{colo.hosts[n].address}:9100" for n in ("h1", "h2")}
    import socket

    with pytest.raises(OSError):  # the dashboard listens on the head's loopback: only the tunnel reaches it
        socket.create_connection((colo.hosts["h1"].address, 8265), timeout=3).close()
    status = colo.lathe("cluster", "status", str(inventory))
    assert status.returncode == 0 and status.stdout.strip().endswith("healthy"), status.stdout


def test_every_port_off_loopback_wants_the_cluster_token_or_serves_only_metrics(colo: harness.Colo,
                                                                              provisioned) -> None:
    """What a host on the same network can reach without the cluster's token: the dashboard (and its Jobs
    API) only on the head's loopback; every other HTTP endpoint a node opens answers 401, or is a
    Prometheus metrics page; the GCS, which workers must reach, refuses a client without the token."""
    gcs = colo.hosts["h1"].address
    for name in ("h1", "h2"):
        host = colo.hosts[name]
        listening = harness.listeners(host)
        assert [a for a, p in listening if p == 8265] == (["127.0.0.1"] if name == "h1" else [])
        exposed = {(a, p): prog for (a, p), prog in listening.items()
                   if not a.startswith("127.") and a != "::1" and prog != "sshd"}
        if name == "h1":
            assert any(p == 6379 for _, p in exposed), "the GCS must be reachable from the workers"
        for (address, port), program in exposed.items():
            base = f"http://{host.address if address in ('*', '0.0.0.0', '::') else address}:{port}"
            status, _ = harness.http_probe("GET", f"{base}/")
            if status in ("not http", 401):
                continue
            assert status not in ("silent", "reset"), f"{name}: {program} on {base} is {status}: unknown, not safe"
            metrics, body = harness.http_probe("GET", f"{base}/metrics")
            assert metrics == 200 and body.startswith("# HELP"), f"{name}: {program} on {base} answers {status}"
            _, answer = harness.http_probe("POST", f"{base}/api/jobs/")  # a Jobs API beside the metrics?
            assert "submission_id" not in answer and "job_id" not in answer, f"{name}: {program} on {base} takes jobs"

    probe = ("from ray._raylet import GcsClient\nimport sys\ntry:\n"
             f"    GcsClient(address='{gcs}:6379').internal_kv_keys(b'', namespace=None, timeout=10)\n"
             "    print('ANSWERED')\nexcept Exception as exc:\n    print(type(exc).__name__)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    refused = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                             check=False)
    assert refused.stdout.strip() == "AuthenticationError", refused.stdout + refused.stderr[-500:]
    token = Path(yaml.safe_load(Path(colo.env["LATHE_CLUSTERS"]).read_text())["clusters"]["colo"]["auth_token_file"])
    allowed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             check=False, env=env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    assert allowed.stdout.strip() == "ANSWERED", "with the token the same client gets in: the refusal was the token's"


def test_an_interrupted_submit_is_resolved_by_status(colo: harness.Colo, provisioned, remote_recipe: Path) -> None:
    """A submit cut off after (or before) Ray accepted the job leaves a SUBMITTING entry; status settles it."""
    import sqlite3

    db = Path(colo.env["LATHE_HOME"]) / "registry.db"
    accepted = colo.lathe("submit", str(remote_recipe), "--cluster", "colo").stdout.strip().splitlines()[-1]
    never = "remote-20261122-000000-dead"
    with sqlite3.connect(db) as conn:  # the laptop died before it could record what Ray answered
        conn.execute("UPDATE runs SET state = 'SUBMITTING' WHERE run_id = ?", (accepted,))
        conn.execute("INSERT INTO runs VALUES (?, 'colo', ?, 's3://x', 'remote.yml', 'SUBMITTING', "
                     "'submit interrupted: ConnectionError', 0, 0)", (never, never))
    try:
        resolved = colo.lathe("status", accepted)
        assert resolved.returncode == 0 and re.search(rf"{accepted}: (PENDING|RUNNING)\b", resolved.stdout), \
            resolved.stdout + resolved.stderr
        lost = colo.lathe("status", never)
        assert f"{never}: FAILED" in lost.stdout and "never accepted" in lost.stdout, lost.stdout + lost.stderr
        runs = colo.lathe("runs").stdout
        assert "SUBMITTING" not in runs, runs
    finally:
        colo.lathe("stop", accepted)
    assert re.search(rf"{accepted}: STOPPED\b", harness.wait_terminal(colo, accepted, timeout=120))


def test_a_lost_worker_host_comes_back_with_up_and_training_resumes(colo: harness.Colo, provisioned,
                                                                   remote_recipe: Path, figure) -> None:
    """Node loss: the worker's Ray dies with its supervisor (nothing restarts it); `up` brings it back."""
    inventory, _ = provisioned
    cfg, recipe = harness.slow_checkpoints(remote_recipe, "node-loss")
    save_steps = cfg["save_steps"]
    submit = colo.lathe("submit", str(recipe), "--cluster", "colo")
    assert submit.returncode == 0, submit.stderr
    run_id = submit.stdout.strip().splitlines()[-1]
    deadline, steps = time.monotonic() + 900, []
    while not steps and time.monotonic() < deadline:
        time.sleep(0.3)
        steps = harness.registered_steps(colo, run_id)
    assert steps, "training never registered a checkpoint"
    supervisor = int((colo.workdir / "state-h2" / "ray.pid").read_text())
    os.killpg(supervisor, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while harness.process_state(supervisor) not in ("", "Z") and time.monotonic() < deadline:
        time.sleep(0.1)  # dying: `up` must find it gone

    back = colo.lathe("cluster", "up", str(inventory))
    assert back.returncode == 0, back.stdout + back.stderr
    h2_row = next(ln for ln in back.stdout.splitlines() if re.search(r"\bh2\b", ln))
    assert "ray started" in h2_row and "ALIVE" in h2_row, back.stdout
    final = harness.wait_terminal(colo, run_id)
    assert ": SUCCEEDED" in final, final + colo.lathe("logs", run_id).stdout[-3000:]

    runs = colo.workdir / "pulled"
    assert colo.lathe("pull", run_id, "--runs-dir", str(runs)).returncode == 0
    run = runs / run_id
    mf.verify_present(run / "export")
    starts = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]
    starts = [e for e in starts if e["event"] == "worker_start"]
    assert len(starts) >= 2 and starts[0]["resume_step"] == 0, starts
    resumed_from = starts[-1]["resume_step"]
    assert resumed_from >= steps[0], "the new worker group began before the registered checkpoint"
    points = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    before = max(p["step"] for p in points if p["time"] < starts[-1]["time"] and "step" in p)
    redone = before - resumed_from
    figure(f"node loss: last step before the loss {before}, resumed from {resumed_from}, "
          f"steps redone {redone} (checkpoint every {save_steps})")
    assert 0 <= redone <= save_steps, "more than one checkpoint interval was trained again"
    assert points[-1]["step"] == points[-1]["max_steps"]


@pytest.fixture(scope="module")
def driver_lost(colo: harness.Colo, provisioned, remote_recipe: Path) -> dict:
    """The quickstart across the provisioned hosts, through a driver loss: submitted to the head, trained
    on the worker, the job's entrypoint on the head killed after the first registered checkpoint; `lathe
    status` resubmits it under the same run id, training resumes from the store's last checkpoint, the
    export runs on the worker with the venv's llama.cpp tools, and the laptop pulls it. One run for both
    tests below (the plain quickstart run they once each paid for proved nothing this one does not)."""
    cfg, recipe = harness.slow_checkpoints(remote_recipe, "driver-loss", whole_export=True)
    run_id = colo.lathe("submit", str(recipe), "--cluster", "colo").stdout.strip().splitlines()[-1]
    deadline, steps = time.monotonic() + 900, []
    while not steps and time.monotonic() < deadline:
        time.sleep(0.3)
        steps = harness.registered_steps(colo, run_id)
    assert steps, "training never registered a checkpoint"
    # The store's copy of metrics.jsonl trails by a few seconds (synced every 5 s): wait until it shows
    # the checkpoint's step, so the steps redone can be counted from it afterwards.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and harness.store_steps(colo, run_id)[-1:] < steps[:1]:
        time.sleep(0.3)
    driver = harness.driver_pid(run_id)
    assert driver and driver in pids_in(colo.hosts["h1"]), "the job's driver runs on the head"
    os.kill(driver, signal.SIGKILL)

    deadline, seen = time.monotonic() + 1500, []
    while time.monotonic() < deadline:
        out = colo.lathe("status", run_id).stdout
        seen.append(out)
        if re.search(r": (SUCCEEDED|FAILED|STOPPED)\b", out):
            break
        time.sleep(10)  # `lathe status` notices the lost driver and resubmits; each call costs seconds of CPU
    assert ": SUCCEEDED" in seen[-1], "\n".join(seen[-3:]) + colo.lathe("logs", run_id).stdout[-3000:]
    runs = colo.workdir / "pulled"
    pulled = colo.lathe("pull", run_id, "--runs-dir", str(runs))
    assert pulled.returncode == 0, pulled.stderr
    return {"run_id": run_id, "cfg": cfg, "steps": steps, "seen": seen, "run": runs / run_id}


def test_the_quickstart_runs_across_the_provisioned_hosts(colo: harness.Colo, driver_lost: dict, figure) -> None:
    run_id, run = driver_lost["run_id"], driver_lost["run"]
    manifest = mf.verify_present(run / "export")
    assert {"f16", "q8_0", "q4_k_m", "mlx-4bit"} <= set(manifest.levels()), "the whole ladder, calibrated q4_k_m too"
    events = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "worker_start"]
    assert starts and all(e["node_ip"] == colo.hosts["h2"].address for e in starts), "trained on the worker"
    record = json.loads((run / "run.json").read_text())
    assert record["driver_ip"] == colo.hosts["h1"].address
    harness.no_secret_anywhere(colo, run_id, [run], figure)


def test_a_lost_job_driver_is_resubmitted_in_place_and_resumes(driver_lost: dict, figure) -> None:
    """Driver loss: the job's entrypoint on the head is killed; `lathe status` resubmits it under the
    same run id (bounded), and training resumes from the store's last checkpoint."""
    seen, steps, cfg, run = driver_lost["seen"], driver_lost["steps"], driver_lost["cfg"], driver_lost["run"]
    resubmitted = [o for o in seen if "resubmitted as attempt 2 of 3" in o]
    assert resubmitted and "job driver lost" in resubmitted[0], "\n".join(seen)
    mf.verify_present(run / "export")
    record = json.loads((run / "run.json").read_text())
    assert record["attempt"] == 2 and record["state"] == "SUCCEEDED"
    starts = [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
              if e["event"] == "worker_start"]
    assert starts[0]["resume_step"] == 0 and starts[-1]["resume_step"] >= steps[0], starts
    points = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    before = max(p["step"] for p in points if p["time"] < starts[-1]["time"] and "step" in p)
    redone = before - starts[-1]["resume_step"]
    figure(f"driver loss: last step before the loss {before}, resumed from {starts[-1]['resume_step']}, "
           f"steps redone {redone} (checkpoint every {cfg['save_steps']})")
    assert 0 <= redone <= cfg["save_steps"]


# Runs submitted at once by the load test: more than the run slots, so some of them queue. 5 in the
# suite (6 took ~6 of a 2-core machine's minutes, 10 took 8-11, 20 took 17); LATHE_TEST_LOAD_RUNS=20
# for the full load.
LOAD_RUNS = int(os.environ.get("LATHE_TEST_LOAD_RUNS", "5"))


def test_many_runs_submitted_at_once_queue_for_run_slots_and_all_finish(colo: harness.Colo, provisioned,
                                                                        remote_recipe: Path, figure) -> None:
    """Load: LOAD_RUNS `lathe submit --no-export`s at once (one recipe, so their ids race for the same second).
    The head runs harness.RUN_SLOTS drivers at a time and the rest wait in Ray's queue; every run must end
    SUCCEEDED or FAILED with a reason, and the registry, Ray and the store must agree on each one.
    Train only: each export costs a minute of CPU that 2 cores would spend 20 times over, and the
    queue, the drivers and the registry are what is under load (exports are tested in the tests above)."""
    import sqlite3

    cfg = yaml.safe_load(remote_recipe.read_text()) | {"max_steps": 3, "save_steps": 2}
    recipe = remote_recipe.with_name("load.yml")
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    started = time.monotonic()
    procs = [subprocess.Popen([str(LATHE), "submit", str(recipe), "--cluster", "colo", "--no-export"], env=colo.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(LOAD_RUNS)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for p, (_, err) in zip(procs, outs) if p.returncode]
    run_ids = [out.strip().splitlines()[-1] for out, _ in outs]
    assert len(set(run_ids)) == LOAD_RUNS, "every submit got a run id of its own"

    queued, seen_running = False, 0
    deadline, states = time.monotonic() + 2400, {}
    while time.monotonic() < deadline:
        out = colo.lathe("status", timeout=900).stdout  # every active run, as a user would poll
        lines = [ln for ln in out.splitlines() if ln.split(":")[0] in run_ids]
        seen_running = max(seen_running, sum(": RUNNING" in ln for ln in lines))
        queued |= any(f"queued for one of the cluster's {harness.RUN_SLOTS} run slots" in ln for ln in lines)
        with sqlite3.connect(Path(colo.env["LATHE_HOME"]) / "registry.db") as db:
            states = dict(db.execute(f"SELECT run_id, state FROM runs WHERE run_id IN ({','.join('?' * len(run_ids))})",
                                     run_ids).fetchall())
        if all(s in ("SUCCEEDED", "FAILED", "STOPPED") for s in states.values()) and len(states) == LOAD_RUNS:
            break
        time.sleep(30)  # each poll is a lathe process and a look at every run: the test's own load
    elapsed = time.monotonic() - started
    assert len(states) == LOAD_RUNS, "the registry has every run, once"
    assert queued, f"with {LOAD_RUNS} runs and {harness.RUN_SLOTS} slots, some must have waited in the queue"
    assert seen_running <= harness.RUN_SLOTS

    # A run's record turns SUCCEEDED in the store before its driver process has exited (it still syncs
    # and disconnects), and Ray calls the job RUNNING until it has: give Ray that moment to agree.
    settle = time.monotonic() + 180
    while True:
        with jobs_client(harness.cluster_profile(colo)) as client:
            in_ray = {job.submission_id: job.status.value for job in client.list_jobs()}
        if all(in_ray.get(r) in ("SUCCEEDED", "FAILED", "STOPPED") for r in run_ids) or time.monotonic() > settle:
            break
        time.sleep(5)
    spans, failed = [], []
    s3 = harness.s3_client(colo)
    for run_id in run_ids:
        state = states[run_id]
        assert state in ("SUCCEEDED", "FAILED"), f"{run_id}: {state} after {elapsed:.0f} s"
        assert in_ray[run_id] == state, f"{run_id}: Ray says {in_ray[run_id]}, the registry {state}"
        record = json.loads(s3.get_object(Bucket=harness.BUCKET, Key=f"runs/{run_id}/run.json")["Body"].read())
        assert record["state"] == state and record["export"] is False, (run_id, record)
        spans.append((harness.iso_stamp(record["created"]), harness.iso_stamp(record["ended"])))
        exported = "Contents" in s3.list_objects_v2(Bucket=harness.BUCKET, Prefix=f"runs/{run_id}/export/")
        assert not exported, f"{run_id}: train only, yet the store has an export"
        if state == "FAILED":
            failed.append(run_id)
            assert record.get("error"), record  # cleanly: a reason
            continue
        assert harness.store_steps(colo, run_id)[-1:] == [3], f"{run_id}: the store's metrics end short of step 3"
    overlap = harness.max_overlap(spans)
    listed = colo.lathe("runs").stdout
    rows = [ln for ln in listed.splitlines() if ln.startswith("│")]
    assert all(sum(ln.startswith(f"│ {r} ") for ln in rows) == 1 for r in run_ids), listed  # once each
    assert "SUBMITTING" not in listed
    figure(f"load: {LOAD_RUNS} runs submitted at once: {LOAD_RUNS - len(failed)} succeeded, {len(failed)} failed "
           f"cleanly, at most {overlap} drivers at once ({harness.RUN_SLOTS} slots), all done in {elapsed:.0f} s")
    assert overlap <= harness.RUN_SLOTS, "more drivers ran at once than the head has run slots"
    assert not failed, f"runs failed under load: {failed}"


def test_down_stops_everything_it_started(colo: harness.Colo, provisioned) -> None:
    inventory, _ = provisioned
    down = colo.lathe("cluster", "down", str(inventory))
    assert down.returncode == 0 and down.stdout.strip().endswith("stopped"), down.stdout + down.stderr
    assert colo.leftovers(["h1", "h2"], wait=30) == {}, "down must leave only the sshds"
    assert "colo" not in (yaml.safe_load((colo.workdir / "clusters.yml").read_text())["clusters"] or {})
    again = colo.lathe("cluster", "down", str(inventory))
    assert again.returncode == 0 and again.stdout.strip().endswith("nothing was running")
