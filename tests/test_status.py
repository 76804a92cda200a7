"""How `lathe status` maps Ray's job state and the store's run record onto one RunState (no Ray
cluster: Ray's own JobStatus values, the reconciliation as it runs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.job_submission import JobStatus

from orchestrator import registry
from orchestrator.profiles import ClusterProfile
from orchestrator.remote.status import reconcile
from orchestrator.run.layout import RunRecord
from orchestrator.run.state import RunState
from orchestrator.store import StoreConfig

PROFILE = ClusterProfile(name="c", ray_address="http://127.0.0.1:9", store=StoreConfig(uri="/tmp/x"), run_slots=3)


def _entry(state: str = RunState.PENDING) -> registry.Entry:
    return registry.Entry("r-1", "c", "r-1", "/tmp/x/r-1", "/nowhere/q.yml", state, "", 0.0, 0.0)


def _job(status: JobStatus, message: str = "") -> SimpleNamespace:
    return SimpleNamespace(status=status, message=message)


@pytest.mark.parametrize(("job", "record", "state", "detail"), [
    (_job(JobStatus.PENDING), {}, RunState.PENDING, "queued for one of the cluster's 3 run slots"),
    (_job(JobStatus.RUNNING), {"state": "EXPORTING"}, RunState.EXPORTING, ""),
    (_job(JobStatus.RUNNING), {"state": "FAILED", "error": "oom"}, RunState.RUNNING, "failing: oom"),
    (_job(JobStatus.SUCCEEDED), {"state": "SUCCEEDED"}, RunState.SUCCEEDED, ""),
    (_job(JobStatus.FAILED, "Traceback\nValueError: bad row"), {"state": "FAILED", "error_kind": "recipe",
                                                                 "error": "bad row"}, RunState.FAILED, "bad row"),
    (_job(JobStatus.STOPPED, "stopped by user"), {"state": "RUNNING"}, RunState.STOPPED, "stopped by user"),
])
def test_ray_and_the_record_make_one_state(job, record: dict, state: RunState, detail: str) -> None:
    got = reconcile(_entry(), PROFILE, job, RunRecord.model_validate(record))
    assert got == (state, detail)


def test_a_job_ray_never_accepted_failed_and_one_it_forgot_keeps_its_state() -> None:
    assert reconcile(_entry(RunState.SUBMITTING), PROFILE, None, RunRecord()) == \
        (RunState.FAILED, "the cluster never accepted the job")
    assert reconcile(_entry(RunState.RUNNING), PROFILE, None, RunRecord()) == \
        (RunState.RUNNING, "the cluster no longer knows this job")


def test_a_lost_driver_is_resubmitted_only_if_its_recipe_still_loads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LATHE_HOME", str(tmp_path))
    entry = registry.add("r-2", "c", "r-2", "/tmp/x/r-2", str(tmp_path / "gone.yml"), RunState.RUNNING)
    state, detail = reconcile(entry, PROFILE, _job(JobStatus.FAILED, "node died"), RunRecord(state="RUNNING"))
    assert state == RunState.FAILED
    assert detail.startswith("job driver lost (node died); not resubmitted: the recipe no longer loads")


def test_only_rays_own_404_means_no_such_job() -> None:
    """Ray's client raises one RuntimeError for "no such job" and for a failing dashboard alike; only the
    404 may mean never accepted. A 5xx is asked again (backoff), and one that persists is no answer."""
    from orchestrator.remote.status import job_info

    class Dashboard:
        def __init__(self, *answers: object) -> None:
            self.answers, self.asked = list(answers), 0

        def get_job_info(self, job_id: str) -> object:
            self.asked += 1
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    busy = RuntimeError("Request failed with status code 503: Service Unavailable.")
    gone = RuntimeError("Request failed with status code 404: Job raysubmit_x does not exist.")
    flaky = Dashboard(busy, busy, "the job's info")
    assert job_info(flaky, "j", waits=(0, 0, 0)) == ("the job's info", None) and flaky.asked == 3
    assert job_info(Dashboard(gone), "j", waits=(0, 0)) == (None, None)
    down = Dashboard(busy, busy, busy)
    assert job_info(down, "j", waits=(0, 0)) == (None, "the cluster's dashboard answered 503 3 times")


def test_status_of_many_runs_asks_ray_once_and_shares_one_store(tmp_path, monkeypatch) -> None:
    """`lathe status` of 20 active runs made a store client and asked Ray once per run (110-150 s under
    load). With Ray's jobs listed once and one store, no run asks Ray on its own."""
    import json

    from orchestrator.remote.status import listed_jobs, status
    from orchestrator.store import open_store

    monkeypatch.setenv("LATHE_HOME", str(tmp_path / "home"))
    root = tmp_path / "store"
    entries = []
    for n in range(20):
        run_id = f"run-{n:02d}"
        (root / run_id).mkdir(parents=True)
        (root / run_id / "run.json").write_text(json.dumps({"run_id": run_id, "state": "RUNNING"}))
        (root / run_id / "metrics.jsonl").write_text(json.dumps({"step": n, "max_steps": 40, "loss": 1.0}) + "\n")
        entries.append(registry.add(run_id, "c", run_id, str(root / run_id), "/nowhere/q.yml", RunState.PENDING))

    class Ray:
        asked = 0

        def list_jobs(self) -> list:
            return [SimpleNamespace(submission_id=e.job_id, status=JobStatus.RUNNING, message="") for e in entries]

        def get_job_info(self, job_id: str) -> object:
            Ray.asked += 1
            raise AssertionError("asked about one run on its own")

    ray, store = Ray(), open_store(str(root))
    known = listed_jobs(ray)
    got = [status(e, PROFILE, ray, store, known) for e in entries]
    assert Ray.asked == 0 and [g.state for g in got] == ["RUNNING"] * 20
    assert [g.step for g in got] == list(range(20))
    assert {e.state for e in registry.all_runs()} == {"RUNNING"}
