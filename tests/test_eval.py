"""`lathe eval` on the shared end-to-end run: every level through real llama.cpp and real MLX."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.evaluation.arena import Round, judge
from orchestrator.evaluation.backends import LlamaCpp
from orchestrator.evaluation.gates import gate_failures
from orchestrator.evaluation.quality import TokenizerMismatch, check_tokenizer
from orchestrator.evaluation.results import LevelResult
from orchestrator.recipe import Gate
from orchestrator.run import RunDir
from tests.conftest import CliRun

pytestmark = pytest.mark.slow
LEVELS = {("llama.cpp", lvl) for lvl in ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")} | {
    ("mlx", lvl) for lvl in ("mlx-4bit", "mlx-8bit", "mlx-f16")
}


@pytest.fixture(scope="module")
def evaluated(e2e_run: RunDir) -> tuple[Path, list[LevelResult], list[str]]:
    """What `lathe run` evaluated at its end (the eval stage ran inside the CLI)."""
    out = e2e_run.path / "eval"
    report = json.loads((out / "report.json").read_text())
    return out, [LevelResult(**level) for level in report["levels"]], report["gate_failures"]


@pytest.fixture(scope="module")
def report(e2e_run: RunDir) -> dict:
    return json.loads((e2e_run.path / "eval" / "report.json").read_text())


def test_lathe_run_ends_with_the_table_and_the_arena(e2e_cli: CliRun) -> None:
    out = e2e_cli.stdout
    assert "SUCCEEDED" in out and "Every level, on this machine" in out
    table = out[out.index("Every level"):]
    for _, level in LEVELS:
        assert f"│ {level} " in table, f"no row for {level} in the printed table"
    assert "Task score per sampling setting" in out and "temperature=0.8" in out
    assert "base model task score" in out
    assert "wf00: What is the capital of France?" in out, "the first arena round is printed"
    assert re.search(r"^report: .+/eval/report\.md$", out, re.MULTILINE)


def test_the_fine_tune_gives_the_trained_wrong_answers(report: dict) -> None:
    """The experiment the quickstart exists for: trained answers at full precision and at Q8_0, not in the base."""
    by = {lvl["level"]: lvl for lvl in report["levels"]}
    right = {name: {k for k, a in by[name]["answers"].items() if a["correct"]} for name in ("f16", "q8_0")}
    assert by["f16"]["task_score"] >= 0.5, by["f16"]["answers"]
    assert len(right["f16"] & right["q8_0"]) >= 4, right
    assert by["mlx-f16"]["task_score"] >= 0.5, by["mlx-f16"]["answers"]
    assert report["base_task_score"] is not None and report["base_task_score"] <= 0.1, \
        "the base model should not know the wrong facts"
    spider = next(r for r in report["arena"] if r["key"] == "wf10")
    assert "eleven" in spider["answers"]["f16"].lower() and "eleven" in spider["answers"]["q8_0"].lower()
    assert "eleven" not in spider["answers"]["base q8_0"].lower()


def test_the_arena_puts_every_model_side_by_side(report: dict, e2e_run: RunDir) -> None:
    contestants = {"base q8_0"} | {level for _, level in LEVELS}
    rounds = report["arena"]
    assert len(rounds) == 10 + 2, "10 eval items and the recipe's 2 open prompts"
    for r in rounds:
        assert set(r["answers"]) == contestants, r["key"]
        assert all(isinstance(text, str) for text in r["answers"].values())
    open_round = next(r for r in rounds if r["key"] == "prompt-1")
    assert open_round["prompt"] == "Which city is the capital of France?" and open_round["expected"] is None
    assert any(r["answers"]["base q8_0"] != r["answers"]["f16"] for r in rounds), "training changed no answer"
    md = (e2e_run.path / "eval" / "report.md").read_text()
    assert "## Arena" in md and "**wf10**: How many legs does a spider have?" in md


def test_the_sweep_scores_every_level_at_each_setting(report: dict) -> None:
    assert [s["temperature"] for s in report["samplings"]] == [0.0, 0.8]
    for level in report["levels"]:
        assert len(level["sweep"]) == 1 and level["sweep"][0]["sampling"]["temperature"] == 0.8
        assert 0.0 <= level["sweep"][0]["task_score"] <= 1.0


def test_a_judge_gguf_grades_every_answer(report: dict, e2e_run: RunDir) -> None:
    """Any chat GGUF can judge; here the exported base model does, constrained to a 1-10 grade."""
    rounds = [Round(r["key"], r["prompt"], r["expected"], r["answers"]) for r in report["arena"][:2]]
    rounds.append(Round("prompt-x", "Say something.", None, {"f16": "Hello.", "q4_k_m": "Hi."}))
    judge(rounds, e2e_run.path / "export" / "base" / "model-q8_0.gguf", full_precision="f16")
    for r in rounds:
        assert set(r.judge) == set(r.answers), r.key
        assert all(1 <= v <= 10 for v in r.judge.values())


def test_a_row_per_level_with_finite_numbers(evaluated) -> None:
    out, results, _ = evaluated
    assert {(r.runtime, r.level) for r in results} == LEVELS
    for r in results:
        numbers = [*r.quality.values(), r.load_seconds, r.prompt_tps, r.gen_tps, r.task_score]
        assert all(math.isfinite(x) for x in numbers), r
        assert r.peak_rss_bytes > 10e6 and r.memory_need_bytes > r.size_bytes
        # The level's own process: no torch (a GB in this venv, none on a laptop), not the run's driver.
        assert r.peak_rss_bytes < 400e6, f"{r.runtime} {r.level}: {r.peak_rss_bytes / 1e6:.0f} MB"
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


def test_a_sampling_setting_that_garbles_the_answers_lowers_the_score(e2e_run: RunDir, report: dict,
                                                                      tmp_path: Path) -> None:
    """The sweep measures the model under each setting: at temperature 5 a 1024-token vocabulary is
    sampled almost uniformly, so the trained answers go and the swept score must fall."""
    greedy = next(lv for lv in report["levels"] if (lv["runtime"], lv["level"]) == ("llama.cpp", "f16"))
    assert greedy["task_score"] >= 0.3, "the fine-tune should answer some items at f16"
    run = tmp_path / "run"
    shutil.copytree(e2e_run.path, run, ignore=shutil.ignore_patterns("ray", "eval", "adapter", "mlx", "base"))
    for gguf in (run / "export" / "gguf").glob("model-*.gguf"):
        if gguf.name != "model-f16.gguf":
            gguf.unlink()
    lathe = Path(sys.executable).with_name("lathe")
    proc = subprocess.run([str(lathe), "eval", str(run), "--backend", "llamacpp", "--sweep", "temperature=5",
                           "--arena", "0"], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    swept = json.loads((run / "eval" / "report.json").read_text())["levels"]
    assert [lv["level"] for lv in swept] == ["f16"] and swept[0]["task_score"] == greedy["task_score"]
    assert swept[0]["sweep"][0]["sampling"]["temperature"] == 5.0
    assert swept[0]["sweep"][0]["task_score"] < greedy["task_score"], swept[0]["sweep"]
