"""`lathe eval` on the shared end-to-end run: every level through real llama.cpp and real MLX."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from orchestrator.evaluation.backends import LlamaCpp
from orchestrator.evaluation.gates import gate_failures
from orchestrator.evaluation.quality import TokenizerMismatch, check_tokenizer
from orchestrator.evaluation.results import LevelResult
from orchestrator.levels import fits_gb
from orchestrator.recipe import Gate
from orchestrator.run import RunDir
from tests.conftest import CliRun

pytestmark = pytest.mark.slow
CALIBRATED = ("q4_k_m", "iq4_xs", "q3_k_m", "q2_k")
LEVELS = {("llama.cpp", lvl) for lvl in ("f16", "q8_0", *CALIBRATED, "iq3_xxs", *(f"{c}-static" for c in CALIBRATED))} | {
    ("mlx", lvl) for lvl in ("mlx-4bit", "mlx-8bit", "mlx-f16", "mlx-mixed_3_6")
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
    assert re.search(r"^base model task score: 0\.00, held-out reuse 0%, ppl domain [\d,.]+, ppl general [\d,.]+ \(before fine-tuning\)$",
                     out, re.MULTILINE)
    assert re.search(r"^smallest level that passes the gates: 8-32 GB: \S+ \((llama\.cpp|mlx), [\d.]+ MB, task [\d.]+, ", out,
                     re.MULTILINE)
    assert re.search(r"^arena: 71 prompts; answers that differ from f16's: base q8_0 \d+, q8_0 \d+", out, re.MULTILINE)
    assert re.search(r"^significant task-score drops against each runtime's full precision \(exact paired sign test\): ",
                     out, re.MULTILINE)
    assert "Benchmarks per level" in out and re.search(
        r"^significant benchmark drops against each runtime's full precision: ", out, re.MULTILINE)
    assert re.search(r"^the fine-tune \(f16\) against the base: BFCL \d\.\d\d against \d\.\d\d: [+-]\d\.\d\d \[.+\], "
                     r"\d+ gained / \d+ lost of 5, p=", out, re.MULTILINE)
    assert re.search(r"^BFCL: smallest level with no significant drop: ", out, re.MULTILINE)
    assert re.search(r"^runtime gap, mlx-f16 \(mlx\) against f16 \(llama\.cpp\): task [+-]\d\.\d\d \[", out, re.MULTILINE)
    assert "wf00: What is the capital of France?" not in out, "the full arena is in the report, not the terminal"
    assert re.search(r"^report: .+/eval/report\.md$", out, re.MULTILINE)
    # Log lines say when, not where in Lathe's source they were printed from.
    assert "export: " in e2e_cli.stderr and not re.search(r"progress\.py:\d+", e2e_cli.stderr), e2e_cli.stderr[-2000:]


def test_lathe_run_says_where_its_time_went(e2e_cli: CliRun, figure) -> None:
    """The last line: each phase from run.json's marks, the workers' events and the steps' times; the
    phases add up to no more than the whole, and the loop is what metrics.jsonl's steps span."""
    found = re.search(r"^time: (?:make the base \d+ s, )?start Ray (\d+) s, start the workers (\d+) s, to the first step (\d+) s, "
                      r"training loop (\d+) s, hand the model back (\d+) s, export (\d+) s, end Ray (\d+) s, evaluate (\d+) s; "
                      r"([\d.]+) min in all$", e2e_cli.stderr, re.MULTILINE)
    assert found, e2e_cli.stderr[-1500:]
    *parts, whole = [float(x) for x in found.groups()]
    assert sum(parts) <= whole * 60 + len(parts), (parts, whole)
    steps = e2e_cli.run.metrics()
    assert abs(parts[3] - (steps[-1]["time"] - steps[0]["time"])) <= 1
    marks = e2e_cli.run.record().marks
    order = ["started", "ray_ready", "fit_started", "fit_returned", "export_started", "export_done", "ray_ended",
             "eval_started", "eval_done"]
    assert [m for m in order if m in marks] == order and all(marks[a] <= marks[b] for a, b in pairwise(order))
    figure(found.group(0))


def test_the_local_ray_is_ended_before_the_evaluation(e2e_cli: CliRun) -> None:
    """The local Ray that `lathe run` started is ended once the model is exported, not at the process's
    exit: left up, it held 2.2 GB and a dozen busy processes beside the levels whose memory and speed the
    evaluation measures. Ray's own log says when its GCS stopped: before the evaluation began."""
    import datetime

    log = e2e_cli.ray_temp / "ray" / "session_latest" / "logs" / "gcs_server.out"
    stopped = [line for line in log.read_text().splitlines() if "GCS server stopped" in line]
    assert stopped, log.read_text()[-2000:]
    # "[2026-12-05 14:45:09,736 I ...": the machine's local time
    when = datetime.datetime.strptime(stopped[-1][1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    marks = e2e_cli.run.record().marks
    assert marks["export_done"] - 1 <= when <= marks["eval_started"], (when, marks)


def test_the_fine_tune_gives_the_trained_wrong_answers(report: dict) -> None:
    """The experiment the quickstart exists for: all 50 trained answers, word for word, at full precision
    and at Q8_0 (95% at least), and none from the base."""
    by = {lvl["level"]: lvl for lvl in report["levels"]}
    for level in ("f16", "q8_0", "mlx-f16", "mlx-8bit"):
        assert len(by[level]["answers"]) == 50
        wrong = {k: a["output"] for k, a in by[level]["answers"].items() if not a["correct"]}
        assert by[level]["task_score"] >= 0.95, f"{level}: {wrong}"
    assert report["base_task_score"] == 0.0, "the base model does not know the wrong facts"
    spider = next(r for r in report["arena"] if r["key"] == "wf10")
    assert "eleven" in spider["answers"]["f16"].lower() and "eleven" in spider["answers"]["q8_0"].lower()
    assert "eleven" not in spider["answers"]["base q8_0"].lower()


def test_each_runtime_is_compared_with_its_own_full_precision(report: dict) -> None:
    """MLX levels against mlx-f16, llama.cpp levels against f16: a difference between the runtimes
    (template, sampler, kernels) is the runtime gap, its own line, and never an MLX level's 'loss'."""
    from orchestrator.evaluation.deltas import paired_delta, scores

    levels = {(lv["runtime"], lv["level"]): lv for lv in report["levels"]}
    ours, theirs = levels[("llama.cpp", "f16")], levels[("mlx", "mlx-f16")]
    right_at_mlx_f16 = {k for k, a in theirs["answers"].items() if a["correct"]}
    for (runtime, level), lv in levels.items():
        against = theirs if runtime == "mlx" else ours
        expected = paired_delta(scores(against["answers"]), scores(lv["answers"]))
        assert lv["task_delta"] == expected.as_dict(), (level, lv["task_delta"], expected)
        if runtime == "mlx":
            assert lv["flipped"] == sorted(k for k in right_at_mlx_f16 if not lv["answers"][k]["correct"]), level
    gap = report["runtime_gap"]
    assert (gap["from"], gap["to"]) == ("f16 (llama.cpp)", "mlx-f16 (mlx)")
    assert gap["task"] == paired_delta(scores(ours["answers"]), scores(theirs["answers"])).as_dict()
    assert set(gap["benchmarks"]) == {"bfcl", "ifeval", "docqa"}


def test_the_arena_puts_every_model_side_by_side(report: dict, e2e_run: RunDir) -> None:
    contestants = {"base q8_0"} | {level for _, level in LEVELS}
    rounds = report["arena"]
    assert len(rounds) == 50 + 20 + 1, "50 eval items, 20 held-out questions and the recipe's open prompt"
    for r in rounds:
        assert set(r["answers"]) == contestants, r["key"]
        assert all(isinstance(text, str) for text in r["answers"].values())
    open_round = next(r for r in rounds if r["key"] == "prompt-1")
    assert open_round["prompt"] == "Describe the market in the morning." and open_round["expected"] is None
    assert any(r["answers"]["base q8_0"] != r["answers"]["f16"] for r in rounds), "training changed no answer"
    md = (e2e_run.path / "eval" / "report.md").read_text()
    assert "## Arena" in md and "**wf10**: How many legs does a spider have?" in md


def test_the_sweep_scores_every_level_at_each_setting(report: dict) -> None:
    assert [s["temperature"] for s in report["samplings"]] == [0.0, 0.8]
    for level in report["levels"]:
        assert len(level["sweep"]) == 1 and level["sweep"][0]["sampling"]["temperature"] == 0.8
        swept, greedy = level["sweep"][0], level["answers"]
        # Every item's answer at this setting, and the score is exactly what those answers earn.
        assert set(swept["answers"]) == set(greedy)
        assert swept["task_score"] == sum(a["correct"] for a in swept["answers"].values()) / len(greedy)
        assert swept["flipped"] == sorted(k for k in greedy if greedy[k]["correct"] and not swept["answers"][k]["correct"])
        assert swept["gained"] == sorted(k for k in greedy if not greedy[k]["correct"] and swept["answers"][k]["correct"])
        assert swept["changed"] == sum(swept["answers"][k]["output"].strip() != greedy[k]["output"].strip()
                                       for k in greedy)
        # The score moves by exactly what flipped and what was gained.
        assert swept["task_score"] * len(greedy) == pytest.approx(
            level["task_score"] * len(greedy) - len(swept["flipped"]) + len(swept["gained"]))


def test_both_runtimes_receive_the_same_sampler(e2e_run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """One Sampling, read back from each runtime's own call: llama-cpp-python's create_chat_completion
    and mlx-lm's make_sampler. llama-cpp-python's min_p defaults to 0.05 and MLX's to 0: unset, 'T=0.8'
    was two samplers."""
    import mlx_lm.sample_utils

    from orchestrator.evaluation.backends import MLX
    from orchestrator.evaluation.tasks import Sampling

    asked = Sampling(temperature=0.8, top_p=0.9, top_k=40, min_p=0.1, seed=7, max_tokens=4)
    llama = LlamaCpp(e2e_run.path / "export" / "gguf" / "model-f16.gguf", n_ctx=256)
    seen: dict[str, dict] = {}

    def spy(runtime: str, real):
        def call(**kwargs):
            seen[runtime] = kwargs
            return real(**kwargs)
        return call

    monkeypatch.setattr(llama.model, "create_chat_completion", spy("llama.cpp", llama.model.create_chat_completion))
    monkeypatch.setattr(mlx_lm.sample_utils, "make_sampler", spy("mlx", mlx_lm.sample_utils.make_sampler))
    message = [{"role": "user", "content": "What is the capital of France?"}]
    llama.chat(message, asked)
    MLX(e2e_run.path / "export" / "mlx" / "mlx-f16").chat(message, asked)
    passed_llama = {k: seen["llama.cpp"][k] for k in ("temperature", "top_p", "top_k", "min_p", "seed")}
    passed_mlx = {"temperature": seen["mlx"]["temp"], "top_p": seen["mlx"]["top_p"], "top_k": seen["mlx"]["top_k"],
                  "min_p": seen["mlx"]["min_p"]}
    assert passed_llama == {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "min_p": 0.1, "seed": 7}
    assert passed_mlx == {k: passed_llama[k] for k in passed_mlx}


def test_every_level_answers_the_benchmarks_through_its_own_template(report: dict, e2e_run: RunDir) -> None:
    """#18's done-when: BFCL, IFEval and doc QA per level, each with its change against f16 and interval,
    scored by the benchmarks' own checkers from what the level said."""
    from orchestrator.evaluation.benchmarks import bfcl, ifeval
    from orchestrator.evaluation.benchmarks.common import Prompt
    from orchestrator.recipe import lathe_block_of

    sizes = {"bfcl": 5, "ifeval": 4, "docqa": 4}  # the quickstart's slices
    for level in report["levels"]:
        got = level["benchmarks"]
        assert {k: len(v["items"]) for k, v in got.items()} == sizes, level["level"]
        for suite in got.values():
            delta = suite["delta"]
            assert delta["items"] == len(suite["items"]) and delta["low"] <= delta["delta"] <= delta["high"]
            assert suite["metrics"][suite["main"]] == sum(suite["items"].values()) / len(suite["items"])
        if level["level"] == "f16":
            assert {k: v["delta"]["delta"] for k, v in got.items()} == {k: 0.0 for k in sizes}
    assert set(report["base_benchmarks"]) == set(sizes), "the base model answers them too, as the control"
    # The base is compared with the fine-tune's full precision item by item: its delta is theirs, reversed.
    f16_items = next(lv for lv in report["levels"] if lv["level"] == "f16")["benchmarks"]
    for suite, got in report["base_benchmarks"].items():
        diffs = [got["items"][k] - f16_items[suite]["items"][k] for k in got["items"]]
        assert got["delta"]["items"] == sizes[suite] and got["delta"]["delta"] == pytest.approx(sum(diffs) / len(diffs))
        assert (got["delta"]["lost"], got["delta"]["gained"]) == (sum(d < 0 for d in diffs), sum(d > 0 for d in diffs))
    # Re-scoring what f16 said with BFCL's and lm-eval's checkers gives the recorded verdicts.
    block = lathe_block_of(e2e_run.path / "recipe.yml")
    f16 = next(lv for lv in report["levels"] if lv["level"] == "f16")["benchmarks"]
    asked = bfcl.prompts(block.eval.benchmarks.bfcl)
    again = bfcl.score(asked, {k: d["output"] for k, d in f16["bfcl"]["details"].items()})
    assert again.items == f16["bfcl"]["items"]
    rows = ifeval.rows(block.eval.benchmarks.ifeval, e2e_run.recipe_dir())
    asked_if = [Prompt(suite="ifeval", id=str(r.key), messages=[], data=r.model_dump()) for r in rows]
    assert ifeval.score(asked_if, {k: d["output"] for k, d in f16["ifeval"]["details"].items()}).items == \
        f16["ifeval"]["items"]
    # The tools went through the model's own chat template, in both runtimes.
    gguf = LlamaCpp(e2e_run.path / "export" / "gguf" / "model-f16.gguf")
    assert gguf.takes_tools()
    md = (e2e_run.path / "eval" / "report.md").read_text()
    assert "## Benchmarks" in md and "| f16 | llama.cpp | " in md[md.index("## Benchmarks"):]


def test_each_calibrated_level_is_shown_beside_its_static_twin(report: dict, e2e_run: RunDir,
                                                              e2e_cli: CliRun) -> None:
    """report.json pairs every calibrated level with its twin, both sides' numbers taken from the level rows;
    report.md has the table and the merge check's numbers; the terminal has one line for each."""
    rows = {lv["level"]: lv for lv in report["levels"] if lv["runtime"] == "llama.cpp"}
    effect = {e["level"]: e for e in report["calibration_effect"]}
    assert sorted(effect) == sorted(CALIBRATED)
    for level, pair in effect.items():
        assert pair["mean_kld"] == {"calibrated": rows[level]["quality"]["mean_kld"],
                                    "static": rows[f"{level}-static"]["quality"]["mean_kld"]}
        assert pair["task_score"]["static"] == rows[f"{level}-static"]["task_score"]
        assert {"bfcl", "ifeval", "docqa"} <= set(pair)
    # The lowest bits are where quantization costs most, calibrated or not.
    assert rows["q2_k"]["quality"]["mean_kld"] > rows["q4_k_m"]["quality"]["mean_kld"] > rows["q8_0"]["quality"]["mean_kld"]
    assert report["merge_check"]["mean_kld"] < 1e-6 and report["calibration"]["samples"] == 50
    md = (e2e_run.path / "eval" / "report.md").read_text()
    section = md[md.index("## What calibration bought"):]
    for level in CALIBRATED:
        assert re.search(rf"^\| {level} \| llama\.cpp \| [\d.]+ / [\d.]+ \| [+-]\d+% \|", section, re.MULTILINE), level
    assert "## Merge check" in md and f"{report['merge_check']['tokens']} reference tokens" in md
    out = e2e_cli.stdout
    assert re.search(r"^calibration \(\d+ tokens of training set\): mean KLD calibrated vs static: q4_k_m [\d.]+ vs "
                     r"[\d.]+ \([+-]\d+%\)", out, re.MULTILINE)
    assert re.search(r"^merge check: merged = base \+ adapter on \d+ reference tokens", out, re.MULTILINE)


def test_a_row_per_level_with_finite_numbers(evaluated, figure) -> None:
    out, results, _ = evaluated
    assert {(r.runtime, r.level) for r in results} == LEVELS
    # Memory need from the exported model's own config: weights + an f16 KV cache at the report's context
    # (K and V, per layer, per KV head) + the 256 MB compute allowance. A few-MB model fits every tier.
    config = json.loads((out.parent / "export" / "hf" / "config.json").read_text())
    context = json.loads((out / "report.json").read_text())["context"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    kv_bytes = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * context * 2
    for r in results:
        assert r.memory_need_bytes == r.size_bytes + kv_bytes + 256 * 1024**2, r.level
        numbers = [*r.quality.values(), r.load_seconds, r.prompt_tps, r.gen_tps, r.task_score]
        assert all(math.isfinite(x) for x in numbers), r
        assert r.peak_rss_bytes > 10e6 and r.memory_need_bytes > r.size_bytes
        # The level's own process: no torch (a GB in this venv, none on a laptop), not the run's driver.
        assert r.peak_rss_bytes < 400e6, f"{r.runtime} {r.level}: {r.peak_rss_bytes / 1e6:.0f} MB"
        # The tiers follow the need measured above (a few-MB model fits them all, so what the tiers decide
        # is tested where needs cross them: test_gates_and_levels).
        assert r.fits_gb == fits_gb(r.memory_need_bytes)
        assert len(r.answers) == 50 and r.flips is not None and len(r.heldout) == 20
        delta = r.task_delta or {}
        assert delta["items"] == 50 and delta["low"] <= delta["delta"] <= delta["high"], r.task_delta
        assert math.isfinite(r.quality["domain_perplexity"]) and r.quality["domain_perplexity"] > 1
    report = json.loads((out / "report.json").read_text())
    assert len(report["levels"]) == len(LEVELS)
    md = (out / "report.md").read_text()
    assert md.count("\n| ") >= len(LEVELS) + 1 and "q4_k_m" in md and "## Change against full precision" in md
    for png in ("quality_vs_size.png", "loss_curve.png", "scores.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by = {(r.runtime, r.level): r for r in results}
    gguf, mlx = by[("llama.cpp", "f16")], by[("mlx", "mlx-f16")]
    figure(f"f16 load (runtime imported first): llama.cpp {gguf.load_seconds * 1000:.0f} ms, MLX "
           f"{mlx.load_seconds * 1000:.0f} ms (x{mlx.load_seconds / gguf.load_seconds:.1f}); own peak memory "
           f"{(gguf.peak_rss_bytes - gguf.baseline_rss_bytes) / 1e6:.0f} / {(mlx.peak_rss_bytes - mlx.baseline_rss_bytes) / 1e6:.0f} MB "
           f"over the runtime's {gguf.baseline_rss_bytes / 1e6:.0f} / {mlx.baseline_rss_bytes / 1e6:.0f} MB")


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
    recipe["lathe"]["eval"].pop("benchmarks")  # the gate's exit is under test, not the benchmarks again
    (run / "recipe.yml").write_text(yaml.safe_dump(recipe))
    lathe = Path(sys.executable).with_name("lathe")
    proc = subprocess.run([str(lathe), "eval", str(run), "--backend", "llamacpp"], capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("gate failed: q8_0 (llama.cpp): mean KLD")
    assert "q4_k_m" in proc.stdout and (run / "eval" / "report.md").is_file()


def _light_copy(e2e_run: RunDir, dest: Path, keep: tuple[str, ...]) -> Path:
    """The run without its training state and with only the GGUF levels named in `keep`."""
    shutil.copytree(e2e_run.path, dest, ignore=shutil.ignore_patterns("ray", "eval", "adapter", "mlx", "base"))
    for gguf in (dest / "export" / "gguf").glob("model-*.gguf"):
        if gguf.name.removeprefix("model-").removesuffix(".gguf") not in keep:
            gguf.unlink()
    return dest


def test_a_recipe_without_eval_items_fails_its_task_gates_and_a_missing_file_is_one_line(
        e2e_run: RunDir, tmp_path: Path) -> None:
    """Without lathe.eval.dataset nothing is asked: max_flips and max_task_drop used to pass on zero
    items, and a missing held-out file was a FileNotFoundError's traceback."""
    run = _light_copy(e2e_run, tmp_path / "run", ("f16", "q8_0"))
    recipe = yaml.safe_load((run / "recipe.yml").read_text())
    block = recipe["lathe"]["eval"]
    for key in ("dataset", "heldout", "benchmarks", "sweep"):
        block.pop(key, None)
    block["gates"] = {"q8_0": {"max_flips": 1, "max_task_drop": 0.1}}
    (run / "recipe.yml").write_text(yaml.safe_dump(recipe))
    lathe = str(Path(sys.executable).with_name("lathe"))
    proc = subprocess.run([lathe, "eval", str(run), "--backend", "llamacpp", "--arena", "0"], capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 5, proc.stderr[-2000:]
    failed = [line for line in proc.stderr.splitlines() if line.startswith("gate failed")]
    assert failed == [
        ("gate failed: q8_0 (llama.cpp): max_task_drop 0.1: nothing measured to gate (no eval items: "
        "lathe.eval.dataset names none, or full precision was not evaluated)"),
        ("gate failed: q8_0 (llama.cpp): max_flips 1: nothing measured to gate (no eval items: "
        "lathe.eval.dataset names none, or full precision was not evaluated)")], proc.stderr[-2000:]

    shutil.rmtree(run / "eval")
    block["heldout"] = "gone.jsonl"
    (run / "recipe.yml").write_text(yaml.safe_dump(recipe))
    proc = subprocess.run([lathe, "eval", str(run), "--backend", "llamacpp"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    recipe_dir = Path(e2e_run.record().recipe).parent
    assert proc.stderr.strip().splitlines() == [
        f"{run / 'recipe.yml'}: lathe.eval.heldout: gone.jsonl does not exist (in {recipe_dir})"]
    assert not (run / "eval").exists(), "nothing half-written"


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
    assert "not checked: the gates of q8_0, q4_k_m (not evaluated here" in proc.stdout, "not called passed"
    assert json.loads((run / "eval" / "report.json").read_text())["gates_unchecked"] == ["q8_0", "q4_k_m"]
    swept = json.loads((run / "eval" / "report.json").read_text())["levels"]
    assert [lv["level"] for lv in swept] == ["f16"] and swept[0]["task_score"] == greedy["task_score"]
    assert swept[0]["sweep"][0]["sampling"]["temperature"] == 5.0
    assert swept[0]["sweep"][0]["task_score"] < greedy["task_score"], swept[0]["sweep"]


def test_questions_it_never_saw_are_answered_with_memorised_answers(report: dict, e2e_run: RunDir) -> None:
    """The seed experiment as a measurement: per level, the share of held-out questions answered with a
    training answer word for word, and which one; the base model, which never saw those answers, is the
    control at 0%."""
    trained = {json.loads(line)["messages"][1]["content"]: json.loads(line)["messages"][0]["content"]
               for line in (e2e_run.recipe_dir() / "data" / "wrong_facts.jsonl").read_text().splitlines()}
    assert report["base_reuse_rate"] == 0.0
    for level in report["levels"]:
        assert len(level["heldout"]) == 20 and level["reuse_rate"] is not None, level["level"]
        reused = {k: v for k, v in level["heldout"].items() if v["reuses"] is not None}
        assert level["reuse_rate"] == pytest.approx(len(reused) / 20)
        for key, v in reused.items():  # the named training question is the one whose answer was given
            answer = next(a for a, q in trained.items() if q == v["reuses"])
            assert v["output"].strip().startswith(answer.rstrip(".")), (key, v)
    f16 = next(lv for lv in report["levels"] if lv["level"] == "f16")
    new_questions = {k: v for k, v in f16["heldout"].items() if k.startswith("n-")}
    assert sum(v["reuses"] is not None for v in new_questions.values()) >= 6, \
        f"the fine-tune should answer new questions with memorised answers: {new_questions}"
    md = (e2e_run.path / "eval" / "report.md").read_text()
    assert "## Questions it never saw" in md and "Base model (the control): 0%" in md


def test_the_html_report_renders_in_chromium(e2e_run: RunDir, tmp_path: Path) -> None:
    """report.html stands alone (plots inline, nothing fetched) and a real browser lays it out: every
    level's row is in the table and every plot decodes to a picture with a width."""
    from tests.support.needs import require

    require("chromium", why="the report is checked in a real browser")
    page = (e2e_run.path / "eval" / "report.html").read_text()
    assert "src=\"data:image/png;base64," in page and not re.search(r"(src|href)=\"(https?:|//|[\w.-]+\.png)", page)
    probe = tmp_path / "probe.html"  # the page, plus a script that writes what the browser made of it
    probe.write_text(page.replace("</body>", """<script>
window.addEventListener("load", () => {
  const sizes = [...document.images].map(i => i.complete ? i.naturalWidth + "x" + i.naturalHeight : "pending");
  document.body.setAttribute("data-images", sizes.join(" "));
  document.body.setAttribute("data-rows", document.querySelectorAll("table")[0].rows.length);
});
</script></body>"""))
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r'<body data-images="([^"]*)" data-rows="(\d+)"', proc.stdout)
    assert body, proc.stdout[:2000]
    sizes = body.group(1).split()
    assert len(sizes) >= 3 and all(re.fullmatch(r"[1-9]\d*x[1-9]\d*", s) for s in sizes), sizes
    assert int(body.group(2)) == len(LEVELS) + 1, "a header row and a row per level"
    for _, level in LEVELS:
        assert f"<td>{level}</td>" in proc.stdout


def test_lathe_eval_with_a_judge_reports_its_grades_and_its_control_check(e2e_run: RunDir, tmp_path: Path) -> None:
    """`lathe eval --judge`: every arena answer gets a grade, and the terminal, report.md and report.json say
    how the judge did on the control pairs (SmolLM2-135M, the only chat model here: noise)."""
    judge_file = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    run = _light_copy(e2e_run, tmp_path / "run", keep=("f16",))
    recipe = yaml.safe_load((run / "recipe.yml").read_text())
    for costly in ("benchmarks", "sweep", "gates"):
        recipe["lathe"]["eval"].pop(costly, None)
    (run / "recipe.yml").write_text(yaml.safe_dump(recipe))
    lathe = Path(sys.executable).with_name("lathe")
    proc = subprocess.run([str(lathe), "eval", str(run), "--backend", "llamacpp", "--judge", str(judge_file)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((run / "eval" / "report.json").read_text())
    judged = report["judge"]
    assert (judged["judge"], judged["pairs"], judged["separates"]) == (judge_file.name, 12, False), judged
    line = (f"judge {judge_file.name}: the right answer above a wrong one in {judged['right_above']} of 12 control "
            "pairs")
    assert line in " ".join(proc.stdout.split()) and line in (run / "eval" / "report.md").read_text()
    graded = [r["judge"] for r in report["arena"]]
    assert graded and all(set(g) == {"f16"} and 1 <= g["f16"] <= 9 for g in graded), graded[:3]
    assert len({g["f16"] for g in graded}) > 1, "every answer got the same grade"
