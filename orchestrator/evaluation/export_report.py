"""What export decided, measured on the laptop: the merge check, and what calibration bought per level.

Each calibrated GGUF level (quantized with the importance matrix from the run's
own data) is set beside its static twin (the same type, no matrix): the KLD,
perplexity and top-1 against full precision, and the task and benchmark scores,
side by side, so the matrix's worth is a measured number, not a belief.
"""

from __future__ import annotations

from typing import Any

from orchestrator.evaluation.benchmarks.common import label, ordered
from orchestrator.evaluation.deltas import describe
from orchestrator.evaluation.gates import task_delta
from orchestrator.evaluation.results import LevelResult
from orchestrator.levels import STATIC, calibrated_of


def pairs(results: list[LevelResult]) -> list[tuple[LevelResult, LevelResult]]:
    """(calibrated, static twin) for every level evaluated both ways."""
    by_level = {(r.level, r.runtime): r for r in results}
    return [(by_level[(calibrated_of(r.level), r.runtime)], r) for r in results
            if calibrated_of(r.level) and (calibrated_of(r.level), r.runtime) in by_level]


def _change(calibrated: float, static: float) -> str:
    return "-" if static == 0 else f"{(calibrated / static - 1) * 100:+.0f}%"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ppl(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _main(r: LevelResult, suite: str) -> float:
    """A suite's headline number at a level (its `main` metric)."""
    score = r.benchmarks[suite]
    return score.metrics[score.main]


def _delta(r: LevelResult) -> str:
    d = task_delta(r)
    return "-" if d is None else describe(d, short=True)


def comparison(results: list[LevelResult]) -> list[dict[str, Any]]:
    """report.json's `calibration_effect`: per pair, both sides' numbers."""
    out = []
    for cal, static in pairs(results):
        row: dict[str, Any] = {"level": cal.level, "runtime": cal.runtime}
        for key in ("mean_kld", "p99_kld", "ppl_change_pct", "top1_agreement", "domain_perplexity"):
            row[key] = {"calibrated": cal.quality.get(key), "static": static.quality.get(key)}
        row["task_score"] = {"calibrated": cal.task_score, "static": static.task_score}
        row["task_delta"] = {"calibrated": cal.task_delta, "static": static.task_delta}
        for suite in ordered(set(cal.benchmarks)):
            if suite in static.benchmarks:
                row[suite] = {"calibrated": _main(cal, suite), "static": _main(static, suite)}
        out.append(row)
    return out


def merge_check_line(merge: dict[str, Any] | None) -> str | None:
    if not merge:
        return None
    return (f"merge check: merged = base + adapter on {merge['tokens']} reference tokens (mean KLD "
            f"{merge['mean_kld']:.1e}, max {merge['max_kld']:.1e}; bounds {merge['bound_mean_kld']:.0e}, "
            f"{merge['bound_max_kld']:.0e}); trained on {merge['trained_on']}, merged into {merge['merged_into']}")


def calibration_line(calibration: dict[str, Any] | None, results: list[LevelResult]) -> str | None:
    """One terminal line: each calibrated level's mean KLD against its static twin's."""
    found = pairs(results)
    if not calibration or not found:
        return None
    parts = [f"{c.level} {c.quality['mean_kld']:.4f} vs {s.quality['mean_kld']:.4f} "
             f"({_change(c.quality['mean_kld'], s.quality['mean_kld'])})" for c, s in found]
    return (f"calibration ({calibration['tokens']} tokens of {calibration['source']}): mean KLD calibrated vs "
            f"static: " + ", ".join(parts))


def markdown(calibration: dict[str, Any] | None, merge: dict[str, Any] | None,
             results: list[LevelResult]) -> list[str]:
    lines: list[str] = []
    if merge:
        lines += ["## Merge check", "", (
            f"Before anything was quantized, the merged weights were compared with the base plus the adapter "
            f"(applied unmerged, as in training) on {merge['tokens']} reference tokens in float32: mean KLD "
            f"{merge['mean_kld']:.2e}, max {merge['max_kld']:.2e} (the export stops above "
            f"{merge['bound_mean_kld']:.0e} mean or {merge['bound_max_kld']:.0e} max). The adapter was trained on "
            f"{merge['trained_on']} and merged into {merge['merged_into']}."), ""]
    found = pairs(results)
    if calibration and found:
        suites = [s for s in ordered(set(found[0][0].benchmarks)) if s in found[0][1].benchmarks]
        header = ["level", "runtime", "mean KLD", "change", "p99 KLD", "Δppl %", "ppl domain", "top-1", "task",
                  "Δ task vs full precision [95% CI]"]
        header += [label(s) for s in suites]
        lines += ["## What calibration bought", "", (
            f"k- and i-quant levels were quantized with an importance matrix from llama-imatrix over "
            f"{calibration['tokens']} tokens of the {calibration['source']} ({calibration['samples']} samples, "
            f"context {calibration['context']}), rendered through the chat template the model was trained with. "
            f"Each is shown as calibrated / static (the same type without the matrix, `<level>{STATIC}`); "
            "change: calibrated mean KLD against static's. KLD, p99 and Δppl are measured on the reference text "
            "(lathe.export.reference_text), ppl domain on text of the fine-tune's own kind: a matrix from the "
            "training data protects the second, which need not be the first."), "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cal, st in found:
            q, s = cal.quality, st.quality
            row = [cal.level, cal.runtime, f"{q['mean_kld']:.5f} / {s['mean_kld']:.5f}",
                   _change(q["mean_kld"], s["mean_kld"]), f"{q['p99_kld']:.4f} / {s['p99_kld']:.4f}",
                   f"{q['ppl_change_pct']:+.2f} / {s['ppl_change_pct']:+.2f}",
                   f"{_ppl(q.get('domain_perplexity'))} / {_ppl(s.get('domain_perplexity'))}",
                   f"{q['top1_agreement']:.3f} / {s['top1_agreement']:.3f}",
                   f"{_score(cal.task_score)} / {_score(st.task_score)}", f"{_delta(cal)} / {_delta(st)}"]
            row += [f"{_main(cal, x):.2f} / {_main(st, x):.2f}" for x in suites]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines
