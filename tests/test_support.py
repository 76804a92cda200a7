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
