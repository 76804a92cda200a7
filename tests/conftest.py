"""Shared fixtures: tiny models are built once per test run into a temporary cache, the expensive runs
are made once and shared (tests/support/schedule.py says how the suite is spread over xdist workers)."""

from __future__ import annotations

import json
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
from tests.support.schedule import Timings, fast, group_and_order, make_scheduler
from tests.support.shared import end_all, made_once, outlives_its_maker, shared_root

pytest_plugins = ["pytester"]  # test_support runs pytest on a copy of this conftest

REPO = Path(__file__).resolve().parents[1]
PENDING = pytest.StashKey[list[str]]()  # a test's own, kept only if it passes
FIGURE = "lathe-figure"  # a passing test's figure travels in its report (from an xdist worker too)
# Credentials in the environment of the end-to-end `lathe run`: a local run must not write them anywhere.
# The same values in every xdist worker of one test run: the run is made in one, swept in another.
LOCAL_SECRETS = plant("local", seed=os.environ.get("PYTEST_XDIST_TESTRUNUID"))


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the inner loop (make test-fast): what is not marked slow, and the tests marked inner_loop, "
                          "without the end-to-end run's inspections")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fast"):
        kept = [item for item in items if fast(item)]
        config.hook.pytest_deselected(items=[item for item in items if not fast(item)])
        items[:] = kept
    group_and_order(items, config._tmp_path_factory)  # pytest's own temp factory


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`-n N --dist loadgroup`: tests that share an expensive run go to one worker (schedule.py)."""
    return make_scheduler(config, log) if config.getvalue("dist") == "loadgroup" else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed:
        report.user_properties.extend((FIGURE, text) for text in item.stash.get(PENDING, []))


class SuiteReport:
    """Where the results are gathered (this process, or xdist's controller for all its workers): the
    figures of passing tests, and each test's time."""

    def __init__(self) -> None:
        self.figures: list[tuple[str, str]] = []
        self.timings = Timings()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.timings.add(report)
        if report.when == "call" and report.passed:
            self.figures += [(report.nodeid, text) for key, text in report.user_properties if key == FIGURE]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.figures:
            terminalreporter.section("figures measured by this run")
            for nodeid, text in self.figures:
                terminalreporter.write_line(f"{text}   [{nodeid.split('::')[-1].split('@')[0]}]")
        if self.timings.tests:
            terminalreporter.section("where the suite's time went")
            for line in self.timings.summary(slowest=25):
                terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SuiteReport(), "lathe-suite-report")
    _share_the_cores()


def _share_the_cores() -> None:
    """xdist's workers run side by side: each one's compute (training, llama.cpp, torch in the runs it
    starts, which inherit this) takes its share of the cores, not all of them. Spinning threads that
    outnumber the cores burn ~3x the CPU for the same work (orchestrator/cpus.py)."""
    from orchestrator import cpus

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1 and cpus.ENV not in os.environ:
        share = str(cpus.per_worker(workers))
        os.environ[cpus.ENV] = share
        os.environ.setdefault("OMP_NUM_THREADS", share)  # torch in processes Lathe does not size itself


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's owner (xdist's controller, or pytest alone) ends what the shared runs left behind,
    once no worker needs them."""
    if not os.environ.get("PYTEST_XDIST_WORKER") and hasattr(config, "_tmp_path_factory"):
        root = config._tmp_path_factory.getbasetemp() / "shared"  # shared_root's, seen from the owner
        if root.is_dir():
            end_all(root)


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No hub, no telemetry, and a cache no other run shares."""
    # One cache for every xdist worker of this run: a tiny base is built once (under a lock), not per worker.
    cache = shared_root(tmp_path_factory) / "lathe-cache"
    cache.mkdir(exist_ok=True)
    os.environ["LATHE_CACHE"] = str(cache)
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # No background schema process outliving the tests (tests/test_schema_daemon.py starts its own).
        "LATHE_SCHEMA_DAEMON": "0",
    }.items():
        os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from orchestrator.tinymodel import resolve_base_model

    return Path(resolve_base_model("tiny://llama"))


@pytest.fixture(scope="session")
def light_llama() -> Path:
    """The short recipes' lighter base (two layers, briefly pretrained), for tests that need a tiny Llama's
    files or tokenizer (the same tokenizer as tiny_llama's, byte for byte) but not what the quickstart's
    base learned: in `make test-fast`, building the full base cost ~200 s of a worker and the other's wait."""
    from orchestrator.tinymodel import resolve_base_model

    return Path(resolve_base_model(LIGHT_TINY_LLAMA))


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
    """The local Ray of the tests that train in this process, started here, in the main thread. Ray
    ties the life of the processes it starts to the thread that started them (PR_SET_PDEATHSIG): one
    first started inside a test's own thread (test_killed_worker_resumes_from_checkpoint trains in
    one) is SIGKILLed when that thread ends, and Ray then ends this process too, a minute later, for
    the GCS it lost. Seen on an xdist worker, where that test was the first to want a Ray."""
    from orchestrator import local

    local._ensure_local_ray(2)  # two training workers at most (test_train's two_workers)
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()  # ends the local cluster this process started, nothing else


@dataclass
class Endpoint:
    url: str


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Endpoint]:
    """A Pushgateway and a Prometheus scraping it every second, as a user's monitoring would: one pair
    for the whole test run, shared by every worker (the end-to-end run pushes to it, and the tests that
    query it may run in another worker)."""

    def make(where: Path) -> None:
        from tests.support.services import start_prometheus, start_pushgateway

        gateway = start_pushgateway(where)
        outlives_its_maker(where, pid=gateway.proc.pid)
        (where / "prometheus").mkdir()
        prom = start_prometheus(where / "prometheus", [gateway.url.removeprefix("http://")])
        outlives_its_maker(where, pid=prom.proc.pid)
        (where / "urls.json").write_text(json.dumps({"pushgateway": gateway.url, "prometheus": prom.url}))

    where = made_once(shared_root(tmp_path_factory), "monitoring", make)
    return {name: Endpoint(url) for name, url in json.loads((where / "urls.json").read_text()).items()}


@pytest.fixture(scope="session")
def pushgateway(monitoring: dict[str, Endpoint]) -> Endpoint:
    return monitoring["pushgateway"]


@pytest.fixture(scope="session")
def prometheus(monitoring: dict[str, Endpoint]) -> Endpoint:
    return monitoring["prometheus"]


@dataclass
class CliRun:
    run: RunDir
    stdout: str
    stderr: str
    ray_temp: Path  # the local Ray's temp dir (RAY_TMPDIR): its session logs and runtime files


@pytest.fixture(scope="session")
def e2e_cli(tmp_path_factory: pytest.TempPathFactory, quickstart: Path, pushgateway: Endpoint) -> CliRun:
    """The README's main command, `lathe run recipes/quickstart.yml`, as a user runs it: train on a
    local Ray, export, evaluate every level, print the table. Made once per test run, by the first
    worker whose test asks; every test that inspects a finished run shares it, in any worker."""

    def make(where: Path) -> None:
        lathe = Path(sys.executable).with_name("lathe")
        ray_temp = Path(tempfile.mkdtemp(prefix="lathe-e2e-", dir="/tmp"))  # Ray's socket paths: 107 bytes at most
        outlives_its_maker(where, directory=ray_temp)
        env = {**os.environ, **LOCAL_SECRETS, "RAY_TMPDIR": str(ray_temp)}
        proc = subprocess.run([str(lathe), "run", str(quickstart), "--runs-dir", str(where / "runs"),
                               "--pushgateway", pushgateway.url], capture_output=True, text=True, timeout=2400,
                              check=False, env=env)
        found = re.search(r"^run directory: (.+)$", proc.stdout, re.MULTILINE)
        if proc.returncode != 0 or not found:
            pytest.fail(f"lathe run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        (where / "stdout.txt").write_text(proc.stdout)
        (where / "stderr.txt").write_text(proc.stderr)
        (where / "run.json").write_text(json.dumps({"run": found.group(1).strip(), "ray_temp": str(ray_temp)}))

    where = made_once(shared_root(tmp_path_factory), "quickstart-e2e", make)
    made = json.loads((where / "run.json").read_text())
    return CliRun(RunDir(Path(made["run"])), (where / "stdout.txt").read_text(), (where / "stderr.txt").read_text(),
                  Path(made["ray_temp"]))


@pytest.fixture(scope="session")
def e2e_run(e2e_cli: CliRun) -> RunDir:
    return e2e_cli.run
