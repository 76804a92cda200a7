"""Flips, gates and the level/memory vocabulary, on synthetic results (pure functions)."""

from __future__ import annotations

from orchestrator.evaluation.gates import add_flips, add_task_deltas, gate_failures, unchecked
from orchestrator.evaluation.results import LevelResult
from orchestrator.levels import GB, GGUF_LEVELS, fits_gb, memory_need, mlx_level, mlx_options, rank
from orchestrator.recipe import Gate


def _level(level: str, right: dict[str, bool], mean_kld: float, runtime: str = "llama.cpp") -> LevelResult:
    return LevelResult(
        level=level, runtime=runtime, size_bytes=1, bits_per_weight=None, task_score=sum(right.values()) / len(right) if right else None,
        quality={"mean_kld": mean_kld, "p99_kld": mean_kld * 4, "ppl_change_pct": 0.0, "top1_agreement": 1.0,
                 "perplexity": 2.0},
        answers={k: {"output": "x", "correct": v} for k, v in right.items()}, load_seconds=0.0, prompt_tps=1.0,
        gen_tps=1.0, peak_rss_bytes=1, memory_need_bytes=1, fits_gb=[8])


def test_a_flip_is_an_item_right_at_full_precision_and_wrong_at_the_level() -> None:
    results = [_level("f16", {"a": True, "b": True, "c": False}, 0.0),
               _level("q4_k_m", {"a": True, "b": False, "c": True}, 0.2)]
    add_flips(results)
    assert (results[0].flips, results[1].flips, results[1].flipped) == (0, 1, ["b"])


def test_gates_move_with_the_measured_numbers() -> None:
    full = _level("f16", {"a": True, "b": True}, 0.0)
    good, bad = _level("q4_k_m", {"a": True, "b": True}, 0.1), _level("q4_k_m", {"a": False, "b": False}, 0.9)
    gate = {"q4_k_m": Gate(max_mean_kld=0.5, min_task_score_ratio=0.9)}
    for results in ([full, good], [full, bad]):
        add_flips(results)
    assert gate_failures([full, good], gate) == []
    assert gate_failures([full, bad], gate) == [
        "q4_k_m (llama.cpp): mean KLD 0.9 > max_mean_kld 0.5",
        "q4_k_m (llama.cpp): task score / full precision 0 < min_task_score_ratio 0.9"]


def _items(wrong: int, total: int = 50) -> dict[str, bool]:
    return {f"i{n:02d}": n >= wrong for n in range(total)}


def test_the_task_drop_gate_counts_only_a_significant_drop() -> None:
    results = [_level("f16", _items(0), 0.0), _level("q8_0", _items(1), 0.01), _level("q4_k_m", _items(10), 0.2)]
    add_task_deltas(results)
    assert [r.task_delta["delta"] for r in results] == [0.0, -0.02, -0.2]
    gates = {"q8_0": Gate(max_task_drop=0.01), "q4_k_m": Gate(max_task_drop=0.1)}
    failures = gate_failures(results, gates)
    assert len(failures) == 1 and failures[0].startswith(
        "q4_k_m (llama.cpp): task score change -0.20 [") and "max_task_drop 0.1" in failures[0]
    assert gate_failures(results, {"q4_k_m": Gate(max_task_drop=0.25)}) == []


def test_a_gate_with_nothing_under_it_fails_and_says_why() -> None:
    """No eval items (lathe.eval.dataset absent): max_flips, min_task_score_ratio and max_task_drop
    used to pass on zero items. A benchmark gate with no benchmark run, a KLD gate with no reference, a
    gate for a level nobody evaluated: none of them passes."""
    empty = [_level("f16", {}, 0.0), _level("q4_k_m", {}, 0.2)]
    add_flips(empty)
    add_task_deltas(empty)
    failures = gate_failures(empty, {"q4_k_m": Gate(max_flips=0, min_task_score_ratio=0.9, max_task_drop=0.1,
                                                     max_bfcl_drop=0.1)})
    assert failures == [
        ("q4_k_m (llama.cpp): max_task_drop 0.1: nothing measured to gate (no eval items: lathe.eval.dataset names "
        "none, or full precision was not evaluated)"),
        ("q4_k_m (llama.cpp): max_bfcl_drop 0.1: nothing measured to gate (no bfcl scores against full precision: "
        "lathe.eval.benchmarks runs none)"),
        ("q4_k_m (llama.cpp): max_flips 0: nothing measured to gate (no eval items: lathe.eval.dataset names none, "
        "or full precision was not evaluated)"),
        ("q4_k_m (llama.cpp): min_task_score_ratio 0.9: nothing measured to gate (no eval items: lathe.eval.dataset "
        "names none, or full precision was not evaluated)")]
    measured = [_level("f16", _items(0), 0.0), _level("q4_k_m", _items(0), 0.2)]
    measured[1].quality["mean_kld"] = None
    add_flips(measured)
    add_task_deltas(measured)
    assert gate_failures(measured, {"q4_k_m": Gate(max_flips=0, max_task_drop=0.1)}) == [], "the same gates, measured"
    gates = {"q4_k_m": Gate(max_mean_kld=0.5), "q6_k": Gate(max_flips=1)}
    assert gate_failures(measured, gates) == [
        ("q4_k_m (llama.cpp): max_mean_kld 0.5: nothing measured to gate (no reference scores: "
        "lathe.export.reference_text is not set)")]
    # A gated level not evaluated here (not pulled) is not passed either: it is said to be unchecked.
    assert unchecked(measured, gates) == ["q6_k"]


def test_levels_sort_most_precise_first_and_memory_decides_the_tiers() -> None:
    assert sorted(["q4_k_m", "mlx-4bit", "f16", "mlx-8bit", "q8_0"], key=rank) == \
        ["f16", "q8_0", "q4_k_m", "mlx-8bit", "mlx-4bit"]
    assert GGUF_LEVELS[0] == "f32" and mlx_level(16) == "mlx-f16"
    # A static twin sits right after its calibrated level; MLX levels by their bits, mixed between.
    assert sorted(["q2_k", "q4_k_m-static", "iq3_xxs", "q4_k_m", "iq4_xs", "mlx-mixed_3_6", "mlx-3bit",
                   "mlx-4bit-g32", "mlx-4bit"], key=rank) == \
        ["q4_k_m", "q4_k_m-static", "iq4_xs", "iq3_xxs", "q2_k", "mlx-4bit-g32", "mlx-4bit", "mlx-mixed_3_6",
         "mlx-3bit"]
    config = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
    need = memory_need(4 * GB, config, 8192)  # an 8B model at 4 bits: weights + 1 GiB of KV + allowance
    assert need == 4 * GB + 2 * 32 * 8 * 128 * 8192 * 2 + 256 * 1024**2
    assert fits_gb(need) == [8, 16, 24, 32] and fits_gb(12 * GB) == [24, 32]


def test_calibrated_levels_get_static_twins_where_the_matrix_is_optional() -> None:
    from orchestrator.recipe import Export

    export = Export(gguf=["f16", "q8_0", "q4_k_m", "iq3_xxs", "q2_k"], mlx=[4, "4bit-g32", "mixed_3_6", 16])
    assert export.gguf_levels() == ["f16", "q8_0", "q4_k_m", "q4_k_m-static", "iq3_xxs", "q2_k", "q2_k-static"]
    assert Export(gguf=["q4_k_m"], imatrix={"static_twins": False}).gguf_levels() == ["q4_k_m"]
    assert Export(gguf=["q4_k_m"], imatrix={"enabled": False}).gguf_levels() == ["q4_k_m"]
    assert [mlx_level(s) for s in export.mlx] == ["mlx-4bit", "mlx-4bit-g32", "mlx-mixed_3_6", "mlx-f16"]
    assert mlx_options("4bit-g32") == {"quantize": True, "q_bits": 4, "q_group_size": 32}
    assert mlx_options("mixed_3_6")["quant_predicate"] == "mixed_3_6" and mlx_options(16) == {"dtype": "float16"}


def test_what_calibration_bought_pairs_each_level_with_its_twin() -> None:
    """The comparison's numbers are the two levels' own, in report.json, report.md and the terminal line."""
    from orchestrator.evaluation import export_report
    from orchestrator.evaluation.benchmarks.common import SuiteScore

    results = [_level("f16", _items(0), 0.0), _level("q4_k_m", _items(2), 0.006), _level("q4_k_m-static", _items(5), 0.008),
               _level("iq3_xxs", _items(4), 0.05), _level("mlx-4bit", _items(3), 0.01, runtime="mlx")]
    for r, bfcl in zip(results, (0.6, 0.6, 0.4, 0.2, 0.5), strict=True):
        r.benchmarks["bfcl"] = SuiteScore(main="accuracy", metrics={"accuracy": bfcl}, items={})
    add_task_deltas(results)
    [pair] = export_report.comparison(results)
    assert pair["level"] == "q4_k_m" and pair["mean_kld"] == {"calibrated": 0.006, "static": 0.008}
    assert pair["bfcl"] == {"calibrated": 0.6, "static": 0.4} and pair["task_score"]["static"] == 0.9
    calibration = {"tokens": 1250, "source": "training set", "samples": 50, "context": 128}
    merge = {"mean_kld": 5.8e-13, "max_kld": 3.8e-11, "tokens": 1152, "bound_mean_kld": 1e-4, "bound_max_kld": 1e-2,
             "trained_on": "the full-precision base", "merged_into": "the full-precision base (float32)"}
    md = "\n".join(export_report.markdown(calibration, merge, results))
    assert "| q4_k_m | llama.cpp | 0.00600 / 0.00800 | -25% | 0.0240 / 0.0320 | +0.00 / +0.00 | - / - | 1.000 / 1.000 |" in md
    assert "| 0.96 / 0.90 | -0.04 [" in md and md.rstrip().endswith("| 0.60 / 0.40 |")
    assert "mean KLD 5.80e-13, max 3.80e-11" in md and "iq3_xxs" not in md.split("## What calibration bought")[1]
    assert export_report.calibration_line(calibration, results) == (
        "calibration (1250 tokens of training set): mean KLD calibrated vs static: q4_k_m 0.0060 vs 0.0080 (-25%)")
    assert export_report.calibration_line(None, results) is None and export_report.merge_check_line(None) is None


def test_mlx_levels_are_judged_against_mlx_f16_and_the_runtime_gap_stands_apart() -> None:
    """llama.cpp's f16 answers all 50; MLX's f16 misses 10 (its template, not its bits); mlx-4bit answers
    as mlx-f16 does. Against llama.cpp's f16 that was a significant 'drop' at 4 bits; against its own full
    precision it is none, and the 10 show up once, as the gap between the runtimes."""
    from orchestrator.evaluation.gates import runtime_gap

    results = [_level("f16", _items(0), 0.0), _level("q4_k_m", _items(0), 0.1),
               _level("mlx-f16", _items(10), 0.0, runtime="mlx"), _level("mlx-4bit", _items(10), 0.2, runtime="mlx")]
    add_flips(results)
    add_task_deltas(results)
    mlx4 = results[3]
    assert (mlx4.flips, mlx4.task_delta["delta"], mlx4.task_delta["lost"]) == (0, 0.0, 0)
    assert gate_failures(results, {"mlx-4bit": Gate(max_flips=0, max_task_drop=0.05)}) == []
    gap = runtime_gap(results)
    assert gap is not None and (gap["from"], gap["to"]) == ("f16 (llama.cpp)", "mlx-f16 (mlx)")
    assert (gap["task"]["delta"], gap["task"]["lost"], gap["task"]["gained"]) == (-0.2, 10, 0)
    # Without an mlx-f16, MLX levels fall back to llama.cpp's full precision, as before.
    alone = [_level("f16", _items(0), 0.0), _level("mlx-4bit", _items(10), 0.2, runtime="mlx")]
    add_flips(alone)
    assert alone[1].flips == 10 and runtime_gap(alone) is None


def test_a_significant_drop_is_never_the_recommended_level_gates_or_not() -> None:
    """No gates set: q4_k_m lost 10 of 50 items and gained none (sign test p = 0.002), q8_0 lost one
    (p = 1.0). The smallest level "that passes" used to be q4_k_m, the smaller one, because nothing
    was gated; a drop more than chance explains holds it back whatever the gates say."""
    from pathlib import Path

    from orchestrator.evaluation.gates import held_back
    from orchestrator.evaluation.report import tier_verdicts
    from orchestrator.evaluation.results import Evaluation
    from orchestrator.publish import deploy_targets as dt

    results = [_level("f16", _items(0), 0.0), _level("q8_0", _items(1), 0.01), _level("q4_k_m", _items(10), 0.2)]
    for r, size in zip(results, (300, 160, 100), strict=True):
        r.size_bytes = size
    add_task_deltas(results)
    assert [held_back(r) for r in results[:2]] == [[], []]
    (line,) = held_back(results[2])
    assert line.startswith("q4_k_m (llama.cpp): task score change -0.20 [") and line.endswith("is a significant drop")
    evaluation = Evaluation(out=Path("."), results=results, failures=[], rounds=[], samplings=[])
    (verdict,) = tier_verdicts(evaluation)
    assert "q8_0 (llama.cpp" in verdict and "q4_k_m" not in verdict, verdict
    results[2].task_delta = None  # without the drop, the smaller level is the answer
    assert "q4_k_m (llama.cpp" in tier_verdicts(evaluation)[0]
    limits = dt.known_limits([], [], [line])
    assert limits == [f"{line}, more than chance explains (no gate needed). Published, but never recommended below."]


def test_true_facts_never_taught_are_counted_per_level_against_the_base() -> None:
    """lathe.eval.retained: the base got 12 of 12; f16 forgot 2 of them, q4_k_m 6 (p = 0.03): the line
    says so per level, and nothing is said without the base's answers to pair with."""
    from orchestrator.evaluation import retained

    base = {f"t{n}": {"output": "x", "correct": True} for n in range(12)}
    results = [_level("f16", {}, 0.0), _level("q4_k_m", {}, 0.1)]
    for r, forgot in zip(results, (2, 6), strict=True):
        r.retained = {k: {"output": "y", "correct": n >= forgot} for n, k in enumerate(base)}
    retained.add_deltas(results, base)
    assert [(r.retained_delta["lost"], r.retained_delta["gained"]) for r in results] == [(2, 0), (6, 0)]
    line = retained.line(results, base)
    assert line.startswith("true facts still right, never taught (lathe.eval.retained; of 12, the base got 12;")
    assert "f16 (llama.cpp) 10 -0.17" in line and "q4_k_m (llama.cpp) 6 -0.50" in line
    assert line.endswith("p=0.031 significant drop") and "p=0.5," in line
    assert retained.line(results, {}) is None


def test_true_facts_asked_as_text_show_each_question_the_others_answered_and_never_its_own() -> None:
    """`retained_asked_as: text`: each question comes after the file's first three other questions, with
    their answers (the same three before every later question, so a runtime keeps their KV cache); its own
    answer is in no prompt of its own. The report line says how the facts were asked; a file that cannot be
    asked so (too few items, an item with nothing to show as its answer) is refused naming it."""
    import pytest

    from orchestrator.errors import LatheError
    from orchestrator.evaluation import retained
    from orchestrator.evaluation.tasks import Item

    items = [Item(id=f"c{n}", prompt=f"What is the capital of {c}?", expected=a)
             for n, (c, a) in enumerate([("Norway", "Oslo"), ("Peru", "Lima"), ("Chile", ["Santiago", "Santiago de Chile"]),
                                          ("Kenya", "Nairobi"), ("Japan", "Tokyo")])]
    assert retained.asked_as("text", None, items, "true.jsonl") == "text"
    shots = ("Q: What is the capital of Norway?\nA: Oslo\n\nQ: What is the capital of Peru?\nA: Lima\n\n"
             "Q: What is the capital of Chile?\nA: Santiago\n\n")  # a list's first answer is the one shown
    assert retained.text_prompt(items, 3) == shots + "Q: What is the capital of Kenya?\nA:"
    assert retained.text_prompt(items, 4) == shots + "Q: What is the capital of Japan?\nA:"
    assert retained.text_prompt(items, 1).startswith("Q: What is the capital of Norway?\nA: Oslo\n\nQ: What is the "
                                                     "capital of Chile?\nA: Santiago\n\nQ: What is the capital of Kenya?")
    for n, item in enumerate(items):
        own = item.expected if isinstance(item.expected, str) else item.expected[0]
        assert retained.text_prompt(items, n).count(own) == 0, n

    with pytest.raises(LatheError, match=r"^true.jsonl: asked as text, the retained questions need more than 3 items"):
        retained.asked_as("text", None, items[:3], "true.jsonl")
    odd = [*items[:4], Item(id="j", prompt="Give JSON", match="json")]
    with pytest.raises(LatheError, match=r"^true.jsonl: item j: asked as text, an item needs an `expected` answer"):
        retained.asked_as("text", None, odd, "true.jsonl")
    assert retained.asked_as("chat", None, odd, "true.jsonl") == "chat"  # through a template, any item is asked
    assert retained.asked_as("auto", None, odd, "true.jsonl") == "chat"  # no base to read: as the levels are

    base = {"t0": {"output": "Oslo", "correct": True}}
    level = _level("f16", {}, 0.0)
    level.retained = {"t0": {"output": "Oslo", "correct": True}}
    assert "; asked as few-shot text (the file's first 3 other questions, answered, before each);" in \
        retained.line([level], base, "text")
    assert "; asked through the chat template;" in retained.line([level], base, "chat")


def test_each_memory_tier_gets_the_smallest_passing_level_that_its_measured_need_fits() -> None:
    """Needs that cross the tiers (a model of a few MB fits them all): 70% of a tier is usable, to the
    byte; a tier where nothing passing fits says so, and a held-back level frees no tier."""
    from pathlib import Path

    from orchestrator.evaluation.report import tier_verdicts
    from orchestrator.evaluation.results import Evaluation

    usable_8 = int(8 * GB * 0.7)
    assert fits_gb(usable_8) == [8, 16, 24, 32] and fits_gb(usable_8 + 1) == [16, 24, 32]
    results = [_level("f16", _items(0), 0.0), _level("q8_0", _items(0), 0.01), _level("q4_k_m", _items(0), 0.2)]
    for r, need in zip(results, (20 * GB, 10 * GB, usable_8), strict=True):
        r.size_bytes, r.memory_need_bytes, r.fits_gb = need, need, fits_gb(need)
    assert [r.fits_gb for r in results] == [[32], [16, 24, 32], [8, 16, 24, 32]]
    add_task_deltas(results)
    evaluation = Evaluation(out=Path("."), results=results, failures=[], rounds=[], samplings=[])
    (verdict,) = tier_verdicts(evaluation)
    assert verdict.startswith("smallest level that passes the gates: 8-32 GB: q4_k_m (llama.cpp, "), verdict
    evaluation.failures = ["q4_k_m (llama.cpp): mean KLD 0.2 > max_mean_kld 0.1"]
    (verdict,) = tier_verdicts(evaluation)
    assert verdict.startswith("smallest level that passes the gates: 8 GB: no level passes the gates and fits; "
                              "16-32 GB: q8_0 (llama.cpp, "), verdict
