"""Shared fixtures: tiny models are built once per session into a temporary cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
