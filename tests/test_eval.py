"""`lathe eval` on the shared end-to-end run: every level through real llama.cpp and real MLX."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.laptop.backends import LlamaCpp
from orchestrator.laptop.evaluate import LevelResult, evaluate, gate_failures
from orchestrator.laptop.quality import TokenizerMismatch, check_tokenizer
from orchestrator.recipe import Gate
from orchestrator.run import RunDir

pytestmark = pytest.mark.slow
LEVELS = {("llama.cpp", lvl) for lvl in ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")} | {
    ("mlx", lvl) for lvl in ("mlx-4bit", "mlx-8bit", "mlx-f16")
}


@pytest.fixture(scope="module")
def evaluated(e2e_run: RunDir) -> tuple[Path, list[LevelResult], list[str]]:
    return evaluate(e2e_run.path, "all")


def test_a_row_per_level_with_finite_numbers(evaluated) -> None:
    out, results, _ = evaluated
    assert {(r.runtime, r.level) for r in results} == LEVELS
    for r in results:
        numbers = [*r.quality.values(), r.load_seconds, r.prompt_tps, r.gen_tps, r.task_score]
        assert all(math.isfinite(x) for x in numbers), r
        assert r.peak_rss_bytes > 10e6 and r.memory_need_bytes > r.size_bytes
        assert r.fits_gb == [8, 16, 24, 32], "a few-MB model fits every tier"
        assert len(r.answers) == 10 and r.flips is not None
    report = json.loads((out / "report.json").read_text())
    assert len(report["levels"]) == len(LEVELS)
    md = (out / "report.md").read_text()
    assert md.count("\n| ") >= len(LEVELS) + 1 and "q4_k_m" in md
    for png in ("quality_vs_size.png", "loss_curve.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_precision_matches_the_reference(evaluated) -> None:
    _, results, _ = evaluated
    by = {(r.runtime, r.level): r for r in results}
    f16 = by[("llama.cpp", "f16")].quality
    assert abs(f16["ppl_change_pct"]) < 0.5 and f16["mean_kld"] < 1e-4 and f16["top1_agreement"] > 0.99
    q4 = by[("llama.cpp", "q4_k_m")].quality
    assert q4["mean_kld"] > f16["mean_kld"], "4-bit should be measurably further from full precision than f16"
    assert by[("mlx", "mlx-4bit")].quality["mean_kld"] > by[("mlx", "mlx-8bit")].quality["mean_kld"]


def test_mlx_and_llama_cpp_agree_on_f16_perplexity(evaluated) -> None:
    _, results, _ = evaluated
    by = {(r.runtime, r.level): r for r in results}
    gguf, mlx = by[("llama.cpp", "f16")].quality["perplexity"], by[("mlx", "mlx-f16")].quality["perplexity"]
    assert abs(gguf - mlx) / gguf < 0.01, (gguf, mlx)


def test_impossible_gate_fails_and_names_the_level(evaluated) -> None:
    _, results, _ = evaluated
    failures = gate_failures(results, {"q4_k_m": Gate(max_mean_kld=0.0, max_p99_kld=0.0)})
    assert failures and all(f.startswith("q4_k_m (llama.cpp): ") for f in failures)
    assert len(failures) == 2 and any("max_mean_kld 0" in f for f in failures)
    assert gate_failures(results, {"q4_k_m": Gate(max_mean_kld=10.0)}) == []


def test_cli_exits_non_zero_on_a_failed_gate(e2e_run: RunDir, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(e2e_run.path, run, ignore=shutil.ignore_patterns("ray", "eval"))
    recipe = yaml.safe_load((run / "recipe.yml").read_text())
    recipe["lathe"]["eval"]["gates"] = {"q8_0": {"max_mean_kld": 0.0}}
    (run / "recipe.yml").write_text(yaml.safe_dump(recipe))
    lathe = Path(sys.executable).with_name("lathe")
    proc = subprocess.run([str(lathe), "eval", str(run), "--backend", "llamacpp"], capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("gate failed: q8_0 (llama.cpp): mean KLD")
    assert "q4_k_m" in proc.stdout and (run / "eval" / "report.md").is_file()


def test_refuses_a_different_tokenizer(e2e_run: RunDir) -> None:
    manifest = json.loads((e2e_run.path / "export" / "manifest.json").read_text())
    backend = LlamaCpp(e2e_run.path / "export" / "gguf" / "model-q8_0.gguf", n_ctx=64)
    check_tokenizer(backend, manifest["tokenizer_fingerprint"], backend.vocab_size(), "q8_0")
    with pytest.raises(TokenizerMismatch, match="refusing to compare"):
        check_tokenizer(backend, "0" * 64, backend.vocab_size(), "q8_0")
