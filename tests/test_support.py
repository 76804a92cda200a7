"""The test harness's own checks: the secrets sweep says what it did not read, and a failed test's
figures never reach the summary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_secrets_sweep_says_what_it_did_not_read(tmp_path: Path) -> None:
    from tests.support.leaks import sweep

    (tmp_path / "log.txt").write_text("token=abc123xyz")
    (tmp_path / "big.bin").write_bytes(b"\0" * (2 << 20))
    (tmp_path / "link").symlink_to(tmp_path / "log.txt")
    found = sweep(["abc123xyz"], [tmp_path], max_file_bytes=1 << 20)
    assert found.found == [f"{tmp_path / 'log.txt'}: abc123..."] and found.files == 1
    assert sorted(found.skipped) == [f"{tmp_path / 'big.bin'} (over 1 MB)", f"{tmp_path / 'link'} (link)"]
    assert found.summary().endswith("not read: 1 link, 1 over 1 MB")


def test_a_failed_tests_figures_are_dropped(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_figures="""
def test_passes(figure):
    figure("kept: 1 step redone")

def test_fails(figure):
    figure("dropped: 99 steps redone")
    assert False
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    figures = out[out.index("figures measured by this run"):out.index("short test summary info")]
    assert "kept: 1 step redone   [test_passes]" in figures and "dropped" not in figures


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copied conftest imports tests.support from this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_a_missing_part_skips_here_and_fails_under_ci(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_needs="""
import pytest

@pytest.mark.needs("no-such-program-here", why="the example")
def test_it():
    pass
""")
    monkeypatch.delenv("CI", raising=False)
    here = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-rs")
    here.assert_outcomes(skipped=1)
    assert "needs no-such-program-here (the example)" in here.stdout.str()
    monkeypatch.setenv("CI", "true")
    in_ci = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    in_ci.assert_outcomes(errors=1)
    assert "missing on this CI machine, where a skip would hide it" in in_ci.stdout.str()


def test_figures_and_times_come_back_from_xdist_workers(pytester: pytest.Pytester) -> None:
    """Under xdist the figures are recorded in worker processes; the controller prints them, and the
    suite's slowest tests with its total."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_remote_figures="""
import time

def test_passes(figure):
    time.sleep(0.3)
    figure("kept: 2 steps redone")

def test_fails(figure):
    figure("dropped: 99 steps redone")
    assert False
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    figures = out[out.index("figures measured by this run"):out.index("where the suite's time went")]
    assert "kept: 2 steps redone   [test_passes]" in figures and "dropped" not in figures
    slowest = out[out.index("where the suite's time went"):].splitlines()
    assert "test_remote_figures.py::test_passes" in slowest[1]
    assert any(line.startswith("total: 2 tests") and "on 1 worker(s)" in line for line in slowest), slowest


def test_a_module_stays_on_one_worker_and_a_shared_run_is_made_once(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A module's tests go to one worker (its module-scoped fixtures are made once), and a run the
    suite shares is made once for the whole test run, by the first worker that asks, however many
    modules in however many workers ask for it."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    module = """
import os, time, pytest
from tests.support.shared import made_once, shared_root

@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    def make(where):
        time.sleep(1)  # long enough for the other worker to ask meanwhile
        with open(os.environ["MADE"], "a") as out:
            out.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
        (where / "answer").write_text("42")
    return (made_once(shared_root(tmp_path_factory), "the-run", make) / "answer").read_text()

def _note(name):
    with open(os.environ["WHERE"], "a") as out:
        out.write(f"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""
    tests = "\n".join(f"def test_{i}(shared_run):\n    assert shared_run == '42'\n    _note('NAME')\n" for i in range(4))
    pytester.makepyfile(test_a=module + tests.replace("NAME", "a"), test_b=module + tests.replace("NAME", "b"))
    where, made = pytester.path / "where.txt", pytester.path / "made.txt"
    monkeypatch.setenv("WHERE", str(where))
    monkeypatch.setenv("MADE", str(made))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=8)
    seen: dict[str, set[str]] = {}
    for line in where.read_text().splitlines():
        module_name, worker = line.split()
        seen.setdefault(module_name, set()).add(worker)
    assert {m: len(w) for m, w in seen.items()} == {"a": 1, "b": 1}, seen
    assert seen["a"] != seen["b"], "each worker got a module"
    assert len(made.read_text().splitlines()) == 1, "the shared run was made once, for both workers"
