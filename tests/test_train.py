"""Training on a real local Ray with real Axolotl on CPU: loss, data parallelism, restarts, metrics."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from orchestrator.cluster.train import node_scratch
from orchestrator.local import run_local
from orchestrator.run import RunDir
from tests.support.services import fetch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def one_worker(e2e_run: RunDir) -> RunDir:
    return e2e_run


@pytest.fixture(scope="session")
def two_workers(short_recipe: Path, tmp_path_factory: pytest.TempPathFactory, ray_session) -> RunDir:
    return run_local(short_recipe, tmp_path_factory.mktemp("runs"), workers=2, show_progress=False, export=False)


def _falls(points: list[dict]) -> tuple[float, float]:
    losses = [p["loss"] for p in points if "loss" in p]
    k = max(3, len(losses) // 5)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def test_one_worker_trains_and_loss_falls(one_worker: RunDir, quickstart: Path) -> None:
    record = one_worker.record()
    assert record.state == "SUCCEEDED"
    first, last = _falls(one_worker.metrics())
    assert last < first - 0.5, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert last < 1.0, f"the quickstart should nearly memorise its 50 facts, final loss {last:.3f}"
    assert (one_worker.path / "recipe.yml").read_text() == quickstart.read_text()
    assert {"lathe", "axolotl", "ray", "transformers", "torch"} <= set(record.versions)
    assert record.created <= record.ended
    adapter = one_worker.path / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_every_logged_step_has_the_training_metrics(one_worker: RunDir) -> None:
    points = one_worker.metrics()
    max_steps = points[-1]["max_steps"]
    assert [p["step"] for p in points] == list(range(1, max_steps + 1))
    for p in points:
        for key in ("loss", "learning_rate", "grad_norm", "epoch", "max_steps"):
            assert math.isfinite(p[key]), (key, p)
    assert all("eta_seconds" in p for p in points[:-1])
    assert any(p.get("tokens_per_second", 0) > 0 for p in points)


def test_checkpoints_are_reported_to_the_store(one_worker: RunDir) -> None:
    storage = one_worker.path / "ray" / one_worker.record().run_id
    checkpoints = sorted(storage.glob("checkpoint_*"))
    assert checkpoints, "Ray Train stored no checkpoint"
    states = [json.loads(p.read_text()) for p in storage.glob("checkpoint_*/trainer_state.json")]
    assert any(s["global_step"] >= 10 for s in states)
    assert not node_scratch(one_worker.record().run_id).exists(), "the worker left its training directory on the node"


def test_pushgateway_holds_the_last_point(one_worker: RunDir, pushgateway) -> None:
    text = fetch(f"{pushgateway.url}/metrics")
    run_id = one_worker.record().run_id
    last = one_worker.metrics()[-1]

    def value(name: str) -> float:
        m = re.search(rf'^{name}{{[^}}]*run_id="{re.escape(run_id)}"[^}}]*}} (\S+)$', text, re.MULTILINE)
        assert m, f"{name} for {run_id} not in the Pushgateway"
        return float(m.group(1))

    assert value("lathe_train_step") == last["step"]
    assert value("lathe_train_loss") == pytest.approx(last["loss"])
    assert value("lathe_train_max_steps") == last["max_steps"]


def test_prometheus_stored_the_loss_series(one_worker: RunDir, prometheus) -> None:
    """Scraped from the Pushgateway during training: a series, each point one the run logged."""
    run_id = one_worker.record().run_id
    points = one_worker.metrics()
    start, end = points[0]["time"] - 5, points[-1]["time"] + 5
    query = urllib.parse.urlencode({"query": f'lathe_train_loss{{run_id="{run_id}"}}', "start": start,
                                    "end": end, "step": "1"})
    body = json.loads(fetch(f"{prometheus.url}/api/v1/query_range?{query}"))
    assert body["status"] == "success" and body["data"]["result"], body
    values = [float(v) for _, v in body["data"]["result"][0]["values"]]
    logged = [p["loss"] for p in points]
    assert all(any(math.isclose(v, x, rel_tol=1e-6) for x in logged) for v in values)
    assert len(set(values)) >= 3, f"only {len(set(values))} distinct loss values stored"


def _steps_per_epoch(run: RunDir) -> float:
    last = run.metrics()[-1]
    return last["max_steps"] / round(last["epoch"])


def test_two_workers_split_the_data(one_worker: RunDir, two_workers: RunDir) -> None:
    one, two = _steps_per_epoch(one_worker), _steps_per_epoch(two_workers)
    assert abs(two - one / 2) <= 1, f"2 workers ran {two} steps per epoch, 1 worker {one}"
    starts = [e for e in two_workers.events() if e["event"] == "worker_start"]
    assert sorted(e["rank"] for e in starts) == [0, 1] and all(e["world_size"] == 2 for e in starts)
    first, last = _falls(two_workers.metrics())
    assert last < first - 0.3
    assert two_workers.record().state == "SUCCEEDED"
    assert not node_scratch(two_workers.record().run_id).exists(), "a rank left its training directory on the node"


def _registered_steps(run: RunDir) -> list[int]:
    """Steps of the checkpoints Ray Train's controller has registered (not merely uploaded)."""
    snapshots = list((run.path / "ray").glob("*/checkpoint_manager_snapshot.json"))
    if not snapshots:
        return []
    try:
        results = json.loads(snapshots[0].read_text())["checkpoint_results"]
    except (json.JSONDecodeError, KeyError):
        return []  # caught mid-write
    return [r["metrics"]["step"] for r in results if "step" in r.get("metrics", {})]


def test_killed_worker_resumes_from_checkpoint(short_recipe: Path, tmp_path: Path, ray_session) -> None:
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["run"] = run_local(short_recipe, tmp_path, workers=1, show_progress=False, export=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 600
    run_dir = None
    killed = None
    while thread.is_alive() and time.monotonic() < deadline and killed is None:
        time.sleep(0.5)
        dirs = list(tmp_path.iterdir())
        if not dirs:
            continue
        run_dir = RunDir(dirs[0])
        if _registered_steps(run_dir):
            # Ray's controller has registered a checkpoint: kill the worker mid-epoch.
            starts = [e for e in run_dir.events() if e["event"] == "worker_start"]
            killed = starts[-1]["pid"]
            os.kill(killed, signal.SIGKILL)
    assert killed, "training never got past its first checkpoint"
    thread.join(timeout=900)
    assert "error" not in outcome, outcome.get("error")
    run = outcome["run"]
    starts = [e for e in run.events() if e["event"] == "worker_start"]
    assert len(starts) == 2 and starts[0]["resume_step"] == 0
    assert starts[1]["resume_step"] >= 10, "the restarted group began from step 0"
    points = run.metrics()
    assert points[-1]["step"] == points[-1]["max_steps"]
    resumed = [p["step"] for p in points if p["time"] > starts[1]["time"]]
    assert resumed[0] == starts[1]["resume_step"] + 1
    assert run.record().state == "SUCCEEDED" and run.record().restarts == 1
    # The killed worker never cleaned up; its successor, on the same path, took everything with it.
    assert not node_scratch(run.record().run_id).exists()


@pytest.mark.inner_loop
@pytest.mark.needs("root", "unshare", why="a network namespace")
def test_lathe_run_needs_no_network(short_recipe: Path, tmp_path: Path) -> None:
    """`lathe run` in a network namespace with only loopback: no hub, no telemetry, nothing outside."""
    lathe = Path(sys.executable).with_name("lathe")
    script = f"ip link set lo up && exec {lathe} run {short_recipe} --runs-dir {tmp_path} --no-export"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, not this process's
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=900,
                          check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = RunDir(next(tmp_path.iterdir()))
    assert run.record().state == "SUCCEEDED"
    first, last = _falls(run.metrics())
    assert last < first


def test_the_trainer_leaves_out_ray_datas_actor_and_on_its_own_ray_the_cleaner() -> None:
    """Ray Train starts a DatasetManager actor (a process importing Ray Data) for every worker group;
    Lathe's workers read their data through Axolotl, so its trainer starts none, and keeps the rest.
    On the Ray `lathe run` started itself, it also starts no PlacementGroupCleaner (that Ray ends with
    the driver); on a cluster it keeps it."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from orchestrator.cluster.train import _trainer_class

    def kinds(trainer: TorchTrainer) -> set[type]:
        return {type(c) for c in trainer._create_default_callbacks()}

    scaling = ScalingConfig(num_workers=1)
    ray_s = kinds(TorchTrainer(lambda: None, scaling_config=scaling))
    assert {DatasetsCallback, PlacementGroupCleanerCallback} <= ray_s
    assert kinds(_trainer_class()(lambda: None, scaling_config=scaling)) == ray_s - {DatasetsCallback}
    local = kinds(_trainer_class(ray_ends_with_driver=True)(lambda: None, scaling_config=scaling))
    assert local == ray_s - {DatasetsCallback, PlacementGroupCleanerCallback}
    given = _trainer_class()(lambda: None, scaling_config=scaling, datasets={"train": lambda: None})
    assert DatasetsCallback in kinds(given)


def test_on_its_own_ray_the_trainer_asks_no_autoscaling_coordinator_and_sizes_the_group_alike() -> None:
    """Ray Train's fixed policy registers the run with an AutoscalingCoordinator actor before the first
    worker starts. On the Ray `lathe run` started itself (no autoscaler) Lathe's policy skips that and
    decides as Ray's does: the recipe's workers with their resources, then nothing while they run."""
    from ray.train import ScalingConfig
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy, NoopDecision, ResizeDecision

    from orchestrator.cluster.train import _fixed_on_this_machine

    scaling = ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1})
    ours, rays = _fixed_on_this_machine(scaling), FixedScalingPolicy(scaling)
    with pytest.raises(AssertionError):  # Ray's own needs its coordinator client from the start hook
        rays.make_decision_for_non_running_worker_group()
    ours.after_controller_start(None)  # makes no client: it would create the actor on first use
    assert ours._coordinator_client is None
    decision = ours.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision)
    assert (decision.num_workers, decision.resources_per_worker) == (2, {"CPU": 1})
    assert isinstance(ours.make_decision_for_running_worker_group(None, None), NoopDecision)


def test_a_run_on_the_ray_it_started_leaves_out_the_cleaner_and_coordinator_actors(two_workers: RunDir) -> None:
    """The wiring, end to end: `lathe run` on the Ray this process started (the tests' session Ray, as
    a user's local one) ran Ray Train's controller but never a PlacementGroupCleaner or an
    AutoscalingCoordinator actor. Ray's actor table keeps ended actors too, so the listing covers the
    whole run."""
    from ray._private import state

    classes = {actor["ActorClassName"] for actor in state.actors().values()}
    assert "TrainController" in classes, sorted(classes)
    assert "PlacementGroupCleaner" not in classes, sorted(classes)
    assert "_AutoscalingCoordinatorActor" not in classes, sorted(classes)
