"""Lathe as a user installs it on a laptop: the built wheel with only the `laptop` extra, in a fresh
venv without torch, evaluates (llama.cpp and MLX) and publishes a run that the main venv trained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.run import RunDir
from scripts.node_wheelhouse import project_wheel
from tests.support.cli import lathe

ROOT = Path(__file__).resolve().parents[1]
# A few levels are enough to prove the install; the main suite evaluates them all.
KEPT_LEVELS = ("f16", "q4_k_m", "mlx-4bit")
# scripts/bootstrap.sh builds llama-cpp-python (it has no Linux wheel) once, into this wheelhouse.
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def laptop_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install 'lathe[laptop]'` from the wheel this tree builds, pinned by requirements.lock."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = project_wheel(work / "dist")  # from the tracked files only: what a release is built from
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    uv = Path(sys.executable).with_name("uv")
    assert list(WHEELHOUSE.glob("llama_cpp_python-*.whl")), f"no llama-cpp-python wheel in {WHEELHOUSE}: make setup"
    _run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--find-links", str(WHEELHOUSE),
          "--only-binary", "llama-cpp-python", f"lathe[laptop] @ {wheel.as_uri()}", "-c", str(ROOT / "requirements.lock")],
         timeout=1800)
    # BFCL's package, without its dependencies, as the README tells a user to install it.
    _run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--no-deps", "-r",
          str(ROOT / "requirements-nodeps.txt")], timeout=600)
    return venv


def _evaluated_copy(run: RunDir, dest: Path) -> Path:
    """The run as a laptop would have pulled it: a few levels, not yet evaluated."""
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns("eval", "ray", "adapter"))
    export = dest / "export"
    for gguf in (export / "gguf").glob("model-*.gguf"):
        if gguf.stem.removeprefix("model-") not in KEPT_LEVELS:
            gguf.unlink()
    for mlx in (export / "mlx").iterdir():
        if mlx.name not in KEPT_LEVELS:
            shutil.rmtree(mlx)
    return dest


@pytest.mark.slow
def test_the_laptop_wheel_evaluates_and_publishes_without_torch(laptop_venv: Path, e2e_run: RunDir,
                                                                tmp_path: Path, figure) -> None:
    python = laptop_venv / "bin" / "python"
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    run = _evaluated_copy(e2e_run, tmp_path / e2e_run.path.name)
    installed = laptop_venv / "bin" / "lathe"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    evaluated = lathe("eval", str(run), "--arena", "0", executable=installed, env=env, cwd=tmp_path, timeout=1200)
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-2000:]

    # The same levels measured by the main venv at the end of `lathe run`: the same answers.
    ours = json.loads((e2e_run.path / "eval" / "report.json").read_text())
    theirs = json.loads((run / "eval" / "report.json").read_text())
    main = {(lv["runtime"], lv["level"]): lv for lv in ours["levels"]}
    got = {(lv["runtime"], lv["level"]): lv for lv in theirs["levels"]}
    assert {level for _, level in got} == set(KEPT_LEVELS)
    for key, level in got.items():
        assert level["answers"] == main[key]["answers"], key
        assert {k: v["items"] for k, v in level["benchmarks"].items()} == \
            {k: v["items"] for k, v in main[key]["benchmarks"].items()}, f"{key}: BFCL/IFEval/doc QA verdicts"
        assert level["quality"]["mean_kld"] == pytest.approx(main[key]["quality"]["mean_kld"], rel=1e-3, abs=1e-6)
    rss = {f"{lv['runtime']} {lv['level']}": (main[k]["peak_rss_bytes"], lv["peak_rss_bytes"])
           for k, lv in got.items()}
    figure("peak RSS per level, main venv vs laptop wheel (MB): " + ", ".join(
        f"{name} {a / 1e6:.0f} vs {b / 1e6:.0f}" for name, (a, b) in rss.items()))

    companion = tmp_path / "companion"
    published = lathe("publish", str(run), "--to", str(companion), executable=installed, env=env, cwd=tmp_path)
    assert published.returncode == 0, published.stderr[-2000:]
    verified = lathe("verify", str(companion), executable=installed, env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    card = (companion / "README.md").read_text()
    assert all(f"| {level} |" in card for level in KEPT_LEVELS)
    assert (companion / "deploy" / "apple-silicon.md").is_file() and (companion / "gguf" / "model-q4_k_m.gguf").is_file()
