"""Observability: Prometheus config and alert rules (promtool), the Grafana dashboard, `lathe watch`,
and the shared run's metrics in a real Prometheus fed by a real Pushgateway."""

from __future__ import annotations

import json
import math
import re
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster.metrics import MetricsSink
from orchestrator.run import RunDir
from tests.support.cli import LATHE
from tests.support.services import fetch

REPO = Path(__file__).resolve().parents[1]
PROM = REPO / "infra" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False, cwd=REPO)


def test_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (("check", "config", str(PROM / "prometheus.yml")),
                 ("check", "rules", str(PROM / "rules" / "lathe.rules.yml"))):
        proc = _promtool(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    push = next(j for j in config["scrape_configs"] if j["job_name"] == "pushgateway")
    assert push["honor_labels"] is True, "pushed run_id/job labels must survive the scrape"


def test_alert_rules_fire_in_promtool_unit_tests() -> None:
    """NaN/inf loss, no step progress, idle GPUs while RUNNING, failing checkpoint uploads."""
    proc = _promtool("test", "rules", str(PROM / "tests" / "lathe.rules.test.yml"))
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    rules = yaml.safe_load((PROM / "rules" / "lathe.rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = (PROM / "tests" / "lathe.rules.test.yml").read_text()
    assert all(f"alertname: {n}" in tested for n in names), "every alert has a unit test"


def _samples(text: str) -> list:
    """Every sample of a Prometheus text page, read by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_grafana_dashboard_queries_metrics_lathe_emits(e2e_run: RunDir, pushgateway) -> None:
    dashboard = json.loads((REPO / "infra" / "grafana" / "dashboards" / "lathe-runs.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set(re.findall(r"\b(lathe_[a-z_]+)\b", " ".join(exprs)))
    pushed = {s.name for s in _samples(fetch(f"{pushgateway.url}/metrics")) if s.name.startswith("lathe_")}
    missing = used - pushed - {"lathe_train_eval_loss"}  # eval loss exists only with val_set_size > 0
    assert not missing, f"the dashboard queries metrics nobody pushes: {missing}"
    provisioning = yaml.safe_load((REPO / "infra/grafana/provisioning/dashboards/lathe.yml").read_text())
    assert provisioning["providers"][0]["type"] == "file"
    datasource = yaml.safe_load((REPO / "infra/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["datasources"][0]["uid"]}


def _range(prometheus, expr: str, start: float, end: float) -> list[tuple[float, float]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    body = json.loads(fetch(f"{prometheus.url}/api/v1/query_range?{query}"))
    assert body["status"] == "success", body
    return [(float(t), float(v)) for t, v in body["data"]["result"][0]["values"]] if body["data"]["result"] else []


def test_loss_in_prometheus_matches_metrics_jsonl_point_for_point(e2e_run: RunDir, prometheus) -> None:
    run_id = e2e_run.record().run_id
    points = e2e_run.metrics()
    start, end = points[0]["time"] - 5, points[-1]["time"] + 5
    losses = _range(prometheus, f'lathe_train_loss{{run_id="{run_id}"}}', start, end)
    steps = dict(_range(prometheus, f'lathe_train_step{{run_id="{run_id}"}}', start, end))
    logged = {p["step"]: p["loss"] for p in points}
    paired = [(int(steps[t]), v) for t, v in losses if t in steps]
    assert len({s for s, _ in paired}) >= 5, f"only {len(paired)} scraped points"
    for step, loss in paired:  # a scrape sees the step and the loss pushed together
        assert math.isclose(loss, logged[step], rel_tol=1e-6), (step, loss, logged[step])


def test_run_state_and_stage_timings_reach_prometheus(e2e_run: RunDir, prometheus) -> None:
    run_id = e2e_run.record().run_id
    query = urllib.parse.urlencode({"query": f'lathe_run_state{{run_id="{run_id}"}} == 1'})
    result = json.loads(fetch(f"{prometheus.url}/api/v1/query?{query}"))["data"]["result"]
    assert [r["metric"]["state"] for r in result] == ["SUCCEEDED"]
    query = urllib.parse.urlencode({"query": f'lathe_stage_seconds{{run_id="{run_id}"}}'})
    stages = {r["metric"]["stage"]: float(r["value"][1])
              for r in json.loads(fetch(f"{prometheus.url}/api/v1/query?{query}"))["data"]["result"]}
    assert set(stages) == {"train", "export"} and all(v > 0 for v in stages.values())


def test_nan_loss_is_pushed_as_nan_and_kept_out_of_the_jsonl(tmp_path: Path, pushgateway) -> None:
    sink = MetricsSink(run_id="nan-run", jsonl_path=tmp_path / "metrics.jsonl", pushgateway=pushgateway.url)
    sink.record(7, 10, {"loss": float("nan"), "learning_rate": 1e-4})
    text = fetch(f"{pushgateway.url}/metrics")
    losses = [s.value for s in _samples(text) if s.name == "lathe_train_loss" and s.labels.get("run_id") == "nan-run"]
    assert len(losses) == 1 and math.isnan(losses[0]), losses
    line = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert "loss" not in line and line["nonfinite"] == ["loss"] and line["step"] == 7


def test_a_failed_checkpoint_upload_in_rays_upload_thread_is_counted_and_re_raised(tmp_path: Path,
                                                                                 pushgateway) -> None:
    """Checkpoints upload in Ray's background thread (`checkpoint_upload`): the wrapped copy counts each failed
    attempt on the Pushgateway (the LatheCheckpointUploadFailing alert's series) before Ray sees the error,
    from a thread other than training's, and a success counts nothing."""
    import threading

    from orchestrator.cluster.checkpoint_upload import counting_upload

    sink = MetricsSink(run_id="upload-run", jsonl_path=tmp_path / "metrics.jsonl", pushgateway=pushgateway.url)

    def store_down(checkpoint: object, name: str) -> object:
        raise OSError("When uploading part for key 'adapter_model.safetensors': connection refused")

    upload = counting_upload(store_down, sink.checkpoint_failed)
    caught: list[BaseException] = []

    def in_rays_thread() -> None:
        try:
            upload(object(), "checkpoint_2026-12-05_03-00-00.000000")
        except OSError as exc:
            caught.append(exc)

    for _ in range(2):  # two attempts, as Ray retries a transient S3 error
        thread = threading.Thread(target=in_rays_thread)
        thread.start()
        thread.join()
    assert len(caught) == 2 and "connection refused" in str(caught[0])
    assert counting_upload(lambda c, n: "landed", sink.checkpoint_failed)(object(), "checkpoint_b") == "landed"
    counts = [s.value for s in _samples(fetch(f"{pushgateway.url}/metrics"))
              if s.name == "lathe_train_checkpoint_failures_total" and s.labels.get("run_id") == "upload-run"]
    assert counts == [2.0], counts


def test_a_staged_checkpoint_outlives_axolotl_deleting_the_original(tmp_path: Path) -> None:
    """save_total_limit deletes an old checkpoint while its upload may still be reading it: the upload
    reads hard links to the same files (no bytes copied), which survive the original's deletion."""
    import shutil

    from orchestrator.cluster.checkpoint_upload import stage, staging_dir

    output = tmp_path / "rank0"
    ckpt = output / "checkpoint-20"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"w" * 4096)
    (ckpt / "sub" / "rng_state.pth").write_bytes(b"r" * 10)
    staged = stage(ckpt, staging_dir(output))
    assert staged.parent == tmp_path / "rank0-uploading" and not staged.is_relative_to(output)
    assert (staged / "adapter_model.safetensors").stat().st_ino == (ckpt / "adapter_model.safetensors").stat().st_ino
    shutil.rmtree(ckpt)
    assert (staged / "adapter_model.safetensors").read_bytes() == b"w" * 4096
    assert (staged / "sub" / "rng_state.pth").read_bytes() == b"r" * 10


def test_lathe_watch_renders_from_prometheus_and_from_the_run_directory(e2e_run: RunDir, prometheus) -> None:
    last = e2e_run.metrics()[-1]
    from_prom = subprocess.run([str(LATHE), "watch", str(e2e_run.path), "--prometheus", prometheus.url, "--once"],
                               capture_output=True, text=True, check=True)
    assert f"prometheus {prometheus.url}" in from_prom.stdout and "SUCCEEDED" in from_prom.stdout
    assert re.search(rf"step\s+{last['step']}/{last['max_steps']}", from_prom.stdout)
    assert any(ch in from_prom.stdout for ch in "▁▂▃▄▅▆▇█"), "a loss sparkline"
    from_file = subprocess.run([str(LATHE), "watch", str(e2e_run.path), "--once"], capture_output=True, text=True,
                               check=True)
    assert "metrics.jsonl" in from_file.stdout and f"{last['loss']:.4f}" in from_file.stdout
    down = subprocess.run([str(LATHE), "watch", str(e2e_run.path), "--prometheus", "http://127.0.0.1:9", "--once"],
                          capture_output=True, text=True, check=True)
    assert "metrics.jsonl" in down.stdout, "falls back to the file when Prometheus is unreachable"


def test_the_cost_expression_is_the_one_grafana_and_the_rules_test_use() -> None:
    from orchestrator.remote.watch import cost_expr

    dashboard = json.loads((REPO / "infra" / "grafana" / "dashboards" / "lathe-runs.json").read_text())
    panel = next(p for p in dashboard["panels"] if p["title"] == "Cost so far")
    assert [t["expr"] for t in panel["targets"]] == [cost_expr('run_id=~"$run_id"')]
    tested = yaml.safe_load((PROM / "tests" / "lathe.rules.test.yml").read_text())
    exprs = {e["expr"] for t in tested["tests"] for e in t.get("promql_expr_test", [])}
    assert exprs == {cost_expr("")}


def _cost_shown(out: str) -> float:
    return float(re.search(r"cost so far\s+\$([\d.]+)", out).group(1))


def test_a_finished_runs_cost_stops_growing(tmp_path: Path, pushgateway, prometheus) -> None:
    """2 GPUs at $3600 per GPU-hour ($2 a second), finished after 30 minutes: $3600, however late one looks."""
    import time

    from orchestrator.cluster.metrics import RunMetrics
    from orchestrator.run.state import RunState

    run_id = "cost-finished"
    run = RunDir(tmp_path / run_id)
    run.path.mkdir()
    run.update(run_id=run_id, state=RunState.SUCCEEDED)
    sink = MetricsSink(run_id=run_id, jsonl_path=run.path / "metrics.jsonl", pushgateway=pushgateway.url)
    for step in range(1, 4):
        sink.record(step, 3, {"loss": 2.0 / step})
    metrics = RunMetrics(run_id, pushgateway.url, gpus=2, price_per_gpu_hour=3600.0, started=time.time() - 1800)
    metrics.set_state(RunState.RUNNING)
    metrics.set_state(RunState.SUCCEEDED)
    query = urllib.parse.urlencode({"query": f'lathe_run_state{{run_id="{run_id}", state="SUCCEEDED"}} == 1'})
    deadline = time.monotonic() + 30
    while not json.loads(fetch(f"{prometheus.url}/api/v1/query?{query}"))["data"]["result"]:
        assert time.monotonic() < deadline, "Prometheus never scraped the finished state"
        time.sleep(0.5)
    # watch reads the loss curve at a step of (now - start) / 300 = 6 s: wait until it has a point.
    time.sleep(7)
    shown = []
    for _ in range(2):
        proc = subprocess.run([str(LATHE), "watch", str(run.path), "--prometheus", prometheus.url, "--once"],
                              capture_output=True, text=True, check=True)
        assert f"prometheus {prometheus.url}" in proc.stdout and "SUCCEEDED" in proc.stdout, proc.stdout
        shown.append(_cost_shown(proc.stdout))
        time.sleep(3)  # $6 more, were the cost still counted from the start time
    assert shown[0] == shown[1] and shown[0] == pytest.approx(3600, abs=5), shown


def test_a_workers_log_lines_go_to_the_run_log_in_batches_and_none_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """An actor call per logged step slowed a small model's loop by half; lines now go at most once per
    `SEND_EVERY_S`, in order, the rest by a timer even when nothing follows, and `flush` sends what waits."""
    import time

    import ray

    from orchestrator.cluster import runlog

    calls: list[tuple[str, list[str]]] = []

    class Append:
        @staticmethod
        def remote(name: str, lines: list[str]) -> str:
            calls.append((name, list(lines)))
            return f"ref{len(calls)}"

    class Actor:
        append = Append

    waited: list[str] = []
    monkeypatch.setattr(ray, "get", waited.append)
    monkeypatch.setattr(runlog, "SEND_EVERY_S", 0.5)
    writer = runlog.Writer("r", actor=Actor())
    for step in range(1, 51):
        writer.write("metrics.jsonl", {"step": step})
    # Timing-tolerant (a loaded machine may let the timer fire once during the writes): the first line
    # goes at once, the rest in a few calls, all of them without another write.
    assert calls[0] == ("metrics.jsonl", ['{"step": 1}']), "the first goes at once"
    deadline = time.monotonic() + 10
    while sum(len(lines) for _, lines in calls) < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [line for _, lines in calls for line in lines] == [f'{{"step": {s}}}' for s in range(1, 51)], \
        "the timer sent the rest, in order"
    assert len(calls) <= 5, f"{len(calls)} calls for 50 lines: not batched"
    writer.line("export.log", "quantizing")
    writer.write("metrics.jsonl", {"step": 51})
    writer.flush()
    sent = [line for name, lines in calls if name == "metrics.jsonl" for line in lines]
    assert sent == [f'{{"step": {s}}}' for s in range(1, 52)] and ("export.log", ["quantizing"]) in calls
    assert waited == [f"ref{len(calls)}"], "flush waits for the last call"


def test_one_checkpoint_upload_in_flight_the_next_hand_off_waits_for_it_to_land() -> None:
    """An outage must not let training run on for many intervals past the last stored checkpoint: the
    next hand-off waits until the previous upload has landed, and a failed upload never lands."""
    import threading

    from orchestrator.cluster.checkpoint_upload import OneInFlight, counting_upload

    flight = OneInFlight()
    assert flight.hand_off(timeout=0), "nothing in flight: the first goes at once"
    assert not flight.hand_off(timeout=0.2), "the second waits while the first is uploading"

    def store_down(checkpoint: object, name: str) -> object:
        raise OSError("connection refused")

    with pytest.raises(OSError):
        counting_upload(store_down, lambda name, exc: None, flight.landed)(object(), "checkpoint_a")
    assert not flight.hand_off(timeout=0.2), "a failed upload does not land"
    slow = threading.Event()

    def store_up(checkpoint: object, name: str) -> str:
        slow.wait(5)
        return "stored"

    uploading = threading.Thread(target=counting_upload(store_up, lambda name, exc: None, flight.landed),
                                 args=(object(), "checkpoint_a"))
    uploading.start()
    assert not flight.hand_off(timeout=0.2)
    slow.set()
    assert flight.hand_off(timeout=5), "the hand-off goes once the upload has landed"
    uploading.join()
