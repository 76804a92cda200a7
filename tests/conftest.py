"""Shared fixtures: tiny models are built once per session into a temporary cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


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

    return Path(resolve_base_model("tiny://qwen2"))


@pytest.fixture(scope="session")
def short_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart, shortened: 2 epochs, a checkpoint every 10 steps."""
    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(REPO / "recipes" / "data", root / "data")
    cfg = yaml.safe_load((REPO / "recipes" / "quickstart.yml").read_text())
    cfg.update(num_epochs=2, save_steps=10, save_total_limit=2)
    path = root / "short.yml"
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
    from tests.services import start_pushgateway

    service = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, pushgateway):
    """Prometheus scraping the Pushgateway every second, as a user's monitoring would."""
    from tests.services import start_prometheus

    service = start_prometheus(tmp_path_factory.mktemp("prometheus"), [pushgateway.url.removeprefix("http://")])
    yield service
    service.stop()


@pytest.fixture(scope="session")
def e2e_run(short_recipe: Path, tmp_path_factory: pytest.TempPathFactory, ray_session, pushgateway, prometheus):
    """One end-to-end run (train on 1 worker, export) shared by every test that inspects it."""
    from orchestrator.run import run_local

    return run_local(short_recipe, tmp_path_factory.mktemp("runs"), workers=1, pushgateway=pushgateway.url,
                     show_progress=False)
