"""Flips, gates and the level/memory vocabulary, on synthetic results (pure functions)."""

from __future__ import annotations

from orchestrator.evaluation.gates import add_flips, gate_failures
from orchestrator.evaluation.results import LevelResult
from orchestrator.levels import GB, GGUF_LEVELS, fits_gb, memory_need, mlx_level, rank
from orchestrator.recipe import Gate


def _level(level: str, right: dict[str, bool], mean_kld: float, runtime: str = "llama.cpp") -> LevelResult:
    return LevelResult(
        level=level, runtime=runtime, size_bytes=1, bits_per_weight=None, task_score=sum(right.values()) / len(right),
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


def test_levels_sort_most_precise_first_and_memory_decides_the_tiers() -> None:
    assert sorted(["q4_k_m", "mlx-4bit", "f16", "mlx-8bit", "q8_0"], key=rank) == \
        ["f16", "q8_0", "q4_k_m", "mlx-8bit", "mlx-4bit"]
    assert GGUF_LEVELS[0] == "f32" and mlx_level(16) == "mlx-f16"
    config = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096}
    need = memory_need(4 * GB, config, 8192)  # an 8B model at 4 bits: weights + 1 GiB of KV + allowance
    assert need == 4 * GB + 2 * 32 * 8 * 128 * 8192 * 2 + 256 * 1024**2
    assert fits_gb(need) == [8, 16, 24, 32] and fits_gb(12 * GB) == [24, 32]
