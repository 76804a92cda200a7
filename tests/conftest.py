"""Shared fixtures: tiny models are built once per session into a temporary cache."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator.run import RunDir
from tests.support.leaks import plant
from tests.support.needs import require

pytest_plugins = ["pytester"]  # test_support runs pytest on a copy of this conftest

REPO = Path(__file__).resolve().parents[1]
FIGURES = pytest.StashKey[list[tuple[str, str]]]()  # the run's: figures of tests that passed
PENDING = pytest.StashKey[list[str]]()  # a test's own, kept only if it passes
# Credentials in the environment of the end-to-end `lathe run`: a local run must not write them anywhere.
LOCAL_SECRETS = plant("local")


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure (steps redone, bytes fetched again, runs completed). Passing tests'
    output is captured, so the figures are printed together at the end of the run instead; a test
    that fails has its figures dropped (a number from a failed check is no result)."""

    def record(text: str) -> None:
        request.node.stash.setdefault(PENDING, []).append(text)

    return record


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs("root", ..., why=...)`: skipped where missing, a failure under CI."""
    for mark in item.iter_markers("needs"):
        require(*mark.args, why=mark.kwargs.get("why", item.name))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed:
        for text in item.stash.get(PENDING, []):
            item.config.stash.setdefault(FIGURES, []).append((item.nodeid, text))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(FIGURES, [])
    if figures:
        terminalreporter.section("figures measured by this run")
        for nodeid, text in figures:
            terminalreporter.write_line(f"{text}   [{nodeid.split('::')[-1]}]")


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No hub, no telemetry, and a cache no other run shares."""
    os.environ["LATHE_CACHE"] = str(tmp_path_factory.mktemp("lathe-cache"))
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from orchestrator.tinymodel import resolve_base_model

    return Path(resolve_base_model("tiny://llama"))


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    from orchestrator.tinymodel import resolve_base_model

    # Only loaded and converted, never asked to learn: a lighter build than the quickstart's Llama.
    return Path(resolve_base_model("tiny://qwen2?num_layers=2&pretrain_steps=60"))


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """recipes/quickstart.yml as shipped, with its data, in a directory of its own."""
    root = tmp_path_factory.mktemp("quickstart")
    shutil.copytree(REPO / "recipes" / "data", root / "data")
    shutil.copy(REPO / "recipes" / "quickstart.yml", root / "quickstart.yml")
    return root / "quickstart.yml"


LIGHT_TINY_LLAMA = "tiny://llama?num_layers=2&intermediate_size=512&pretrain_steps=60"


@pytest.fixture(scope="session")
def short_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart, shortened: 2 epochs, a checkpoint every 10 steps, on a lighter base (two layers,
    briefly pretrained): these runs test the machinery, not what the model learns, and a cluster's
    nodes each build the base on first use."""
    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(REPO / "recipes" / "data", root / "data")
    cfg = yaml.safe_load((REPO / "recipes" / "quickstart.yml").read_text())
    cfg.update(num_epochs=2, save_steps=10, save_total_limit=2, base_model=LIGHT_TINY_LLAMA)
    path = root / "short.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def remote_recipe(short_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short quickstart with fewer levels and no gates; the dataset travels through the store."""
    root = tmp_path_factory.mktemp("remote-recipe")
    shutil.copytree(short_recipe.parent / "data", root / "data")
    cfg = yaml.safe_load(short_recipe.read_text())
    # q4_k_m calibrated (the matrix travels through the store and the pull); its static twin is the quickstart's.
    cfg["lathe"]["export"] = {"gguf": ["f16", "q8_0", "q4_k_m"], "mlx": [4], "imatrix": {"static_twins": False}}
    for machinery_only in ("gates", "sweep", "benchmarks"):  # what the laptop evaluates is tested on the quickstart
        cfg["lathe"]["eval"].pop(machinery_only, None)
    path = root / "remote.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def ray_session():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()  # ends the local cluster this process started, nothing else


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.services import start_pushgateway

    service = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, pushgateway):
    """Prometheus scraping the Pushgateway every second, as a user's monitoring would."""
    from tests.support.services import start_prometheus

    service = start_prometheus(tmp_path_factory.mktemp("prometheus"), [pushgateway.url.removeprefix("http://")])
    yield service
    service.stop()


@dataclass
class CliRun:
    run: RunDir
    stdout: str
    stderr: str
    ray_temp: Path  # the local Ray's temp dir (RAY_TMPDIR): its session logs and runtime files


@pytest.fixture(scope="session")
def e2e_cli(quickstart: Path, tmp_path_factory: pytest.TempPathFactory, pushgateway, prometheus) -> CliRun:
    """The README's main command, `lathe run recipes/quickstart.yml`, as a user runs it: train on a
    local Ray, export, evaluate every level, print the table. Every test that inspects a finished
    run shares this one."""
    lathe = Path(sys.executable).with_name("lathe")
    runs = tmp_path_factory.mktemp("runs")
    ray_temp = Path(tempfile.mkdtemp(prefix="lathe-e2e-", dir="/tmp"))  # Ray's socket paths: 107 bytes at most
    env = {**os.environ, **LOCAL_SECRETS, "RAY_TMPDIR": str(ray_temp)}
    proc = subprocess.run([str(lathe), "run", str(quickstart), "--runs-dir", str(runs),
                           "--pushgateway", pushgateway.url], capture_output=True, text=True, timeout=2400,
                          check=False, env=env)
    found = re.search(r"^run directory: (.+)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        pytest.fail(f"lathe run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    yield CliRun(RunDir(Path(found.group(1).strip())), proc.stdout, proc.stderr, ray_temp)
    shutil.rmtree(ray_temp, ignore_errors=True)


@pytest.fixture(scope="session")
def e2e_run(e2e_cli: CliRun) -> RunDir:
    return e2e_cli.run
