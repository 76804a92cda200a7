"""`lathe run`'s local Ray on a busy machine. Ray's raylet gets a fixed 30 s to register; a machine
loaded enough to miss it cannot be made on demand in a test, so Ray's own failure is raised in its
place (the one thing not real here) and what Lathe does with it is checked."""

from __future__ import annotations

import pytest

from orchestrator import local
from orchestrator.errors import LatheError

TIMED_OUT = ("The current node timed out during startup. This could happen because some of the raylet failed "
             "to startup or the GCS has become overloaded.")


@pytest.fixture(autouse=True)
def _no_ray_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """As on a laptop with no Ray started yet; a real session of this process is left alone."""
    import ray

    shutdowns: list[str] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append("shutdown"))
    return shutdowns


def _init_failing(times: int, calls: list[dict]):
    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) <= times:
            raise Exception(TIMED_OUT)  # noqa: TRY002 - what Ray raises

    return init


def test_a_slow_start_is_tried_again_and_said(monkeypatch: pytest.MonkeyPatch, _no_ray_here: list[str]) -> None:
    import ray

    calls: list[dict] = []
    said: list[str] = []
    monkeypatch.setattr(ray, "init", _init_failing(2, calls))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local._ensure_local_ray(2, say=said.append)
    assert len(calls) == 3 and calls[0]["num_cpus"] >= 3
    assert _no_ray_here == ["shutdown", "shutdown"], "each half-started Ray is ended before the next try"
    assert said == ["the local Ray was slow to start (this machine is busy); trying again (2 of 3)",
                    "the local Ray was slow to start (this machine is busy); trying again (3 of 3)"]


def test_a_start_that_never_comes_is_one_line_that_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "init", _init_failing(99, calls))
    with pytest.raises(LatheError) as err:
        local._ensure_local_ray(2, say=lambda _line: None)
    assert len(calls) == local.RAY_START_TRIES and "\n" not in str(err.value)
    assert str(err.value).startswith("the local Ray did not start in 3 tries of 30 s") and "RAY_ADDRESS" in str(err.value)


def test_other_start_failures_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        raise ValueError("bad address")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="bad address"):
        local._ensure_local_ray(2)
    assert len(calls) == 1
