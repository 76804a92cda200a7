"""Stage: report. One table (levels as rows), a quality-vs-size plot, the loss curve."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any

from orchestrator import gguf_base
from orchestrator import manifest as mf
from orchestrator.evaluation import benchmark_report, export_report, html_report, retained
from orchestrator.evaluation.deltas import describe, method
from orchestrator.evaluation.gates import (
    full_precision,
    gap_line,
    held_back,
    reference_for,
    runtime_gap,
    significant_drop,
    task_delta,
)
from orchestrator.evaluation.plots import plot_loss, plot_quality_vs_size, plot_scores
from orchestrator.evaluation.results import Evaluation, LevelResult, Report
from orchestrator.levels import USABLE_FRACTION, without_redundant_twins
from orchestrator.run.layout import RunDir

if TYPE_CHECKING:
    from rich.console import Console

COLUMNS = ("level", "runtime", "size MB", "bpw", "ppl domain", "ppl general", "Δppl %", "mean KLD", "p99 KLD", "top-1",
           "task", "flips", "reuse", "load s", "prompt tok/s", "gen tok/s", "peak MB", "scoring MB", "fits (GB)")


def rows(results: list[LevelResult]) -> list[list[str]]:
    out = []
    for r in results:
        q = r.quality
        out.append([
            r.level, r.runtime, f"{r.size_bytes / 1e6:.2f}",
            f"{r.bits_per_weight:.2f}" if r.bits_per_weight else "-",
            _num(q.get("domain_perplexity")), _num(q["perplexity"]), f"{q['ppl_change_pct']:+.2f}", f"{q['mean_kld']:.5f}", f"{q['p99_kld']:.5f}",
            f"{q['top1_agreement']:.3f}", "-" if r.task_score is None else f"{r.task_score:.2f}",
            "-" if r.flips is None else str(r.flips), _pct(r.reuse_rate), f"{r.load_seconds:.2f}", f"{r.prompt_tps:.0f}",
            f"{r.gen_tps:.0f}", f"{(r.peak_rss_bytes - r.baseline_rss_bytes) / 1e6:.0f}",
            f"{(r.scoring_peak_bytes - r.baseline_rss_bytes) / 1e6:.0f}" if r.scoring_peak_bytes else "-",
            ",".join(map(str, r.fits_gb)) or "none",
        ])
    return out


def _num(value: float | None) -> str:
    """Three significant figures, no exponent below a million: a table a person scans."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def delta_lines(results: list[LevelResult]) -> list[str]:
    """The task score's change against full precision, per level, with its interval."""
    full = full_precision(results)
    measured = [r for r in results if r.task_delta and reference_for(results, r) is not r]
    if full is None or not measured:
        return []
    lines = ["## Change against full precision", "",
             (f"Task score minus its runtime's full precision ({full.level} for llama.cpp, mlx-f16 for MLX where "
              f"exported): {method(task_delta(measured[0]).alpha)}."), "",  # type: ignore[union-attr]
             "| level | runtime | against | Δ task [95% CI], items lost / gained, p | significant drop |",
             "|---|---|---|---|---|"]
    for r in measured:
        against = reference_for(results, r)
        lines.append(f"| {r.level} | {r.runtime} | {against.level if against else '-'} | "
                     f"{describe(task_delta(r))} | "  # type: ignore[arg-type]
                     f"{'yes' if significant_drop(r) else 'no'} |")
    return lines + [""]


def drops_line(results: list[LevelResult]) -> str | None:
    full = full_precision(results)
    if full is None or not any(r.task_delta for r in results):
        return None
    drops = [f"{r.level} ({r.runtime}) {describe(d)}" for r in results if (d := significant_drop(r))]
    return ("significant task-score drops against each runtime's full precision (exact paired sign test): "
            + (", ".join(drops) or "none"))


def _base_ppl(evaluation: Evaluation) -> str:
    ppl = evaluation.base_perplexity
    return "".join(f", ppl {kind} {_num(ppl[kind])}" for kind in ("domain", "general") if ppl.get(kind) is not None)


def _kept(ref_meta: dict[str, Any]) -> str:
    if "coverage" in ref_meta:
        return f"top {ref_meta['coverage']:.1%}-probability ({ref_meta['mean_top']:.0f} tokens on average)"
    return f"top-{ref_meta['top_k']}"


def _drawn(ref_meta: dict[str, Any]) -> str:
    if not ref_meta.get("tail_samples"):
        return "nothing (a reference from before the tail was sampled: the estimate can only be low)"
    return (f"{ref_meta['tail_samples']} tokens drawn from each position's rest (left there: "
            f"{ref_meta['tail_mass_mean']:.2%} of the probability on average, {ref_meta['tail_mass_max']:.0%} at most)")


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def heldout_lines(evaluation: Evaluation) -> list[str]:
    """The memorisation section: per held-out question, what each level answered and whether it is a
    training answer reused verbatim."""
    prompts = evaluation.heldout_prompts
    if not prompts:
        return []
    rates = ", ".join(f"{r.level} ({r.runtime}) {_pct(r.reuse_rate)}" for r in evaluation.results)
    lines = ["## Questions it never saw", "",
             ("Paraphrases of training questions and new questions of the same kinds. **Reuse**: the answer "
              "is a training answer, word for word. "
              f"Base model (the control): {_pct(evaluation.base_reuse_rate)}. Fine-tune: {rates}."), "",
             "| question | full precision answered | reuses the training answer to | levels that answer otherwise |",
             "|---|---|---|---|"]
    full = full_precision(evaluation.results)
    for key, prompt in prompts.items():
        if full is None or key not in full.heldout:
            continue
        said = full.heldout[key]
        others = [r.level for r in evaluation.results if r is not full
                  if key in r.heldout and r.heldout[key]["output"].strip() != said["output"].strip()]
        lines.append(f"| {_cell(prompt)} | {_cell(said['output'])} | {_cell(said['reuses'] or '-')} | "
                     f"{', '.join(others) or '-'} |")
    return lines + [""]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def machine() -> dict[str, str]:
    return {"system": platform.system(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version()}


SAMPLER = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


def sweep_rows(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """Task score per level (rows) and sampling setting (columns); empty when nothing was swept."""
    from orchestrator.evaluation.tasks import describe_sampling

    if len(evaluation.samplings) < 2 or not any(r.sweep for r in evaluation.results):
        return [], []
    default = evaluation.samplings[0]
    header = ["level", describe_sampling(default, default)] + [describe_sampling(s, default)
                                                               for s in evaluation.samplings[1:]]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def swept(x: dict[str, Any]) -> str:
        if "flipped" not in x:  # a report.json from before answers were kept
            return fmt(x["task_score"])
        return f"{fmt(x['task_score'])} (-{len(x['flipped'])} +{len(x['gained'])}, {x['changed']} changed)"

    body = [[r.level, fmt(r.task_score)] + [swept(x) for x in r.sweep] for r in evaluation.results]
    return header, body


def write(evaluation: Evaluation, run: RunDir, manifest: mf.Manifest, ref_meta: dict[str, Any],
          context: int) -> None:
    from orchestrator.evaluation import arena

    out, results, failures = evaluation.out, evaluation.results, evaluation.failures
    out.mkdir(parents=True, exist_ok=True)
    here = machine()
    Report(
        run_id=manifest.run_id, machine=here, context=context,
        reference={"perplexity": ref_meta["perplexity"], "tokens": ref_meta["scored_tokens"],
                   "top_k": ref_meta["top_k"], "coverage": ref_meta.get("coverage"),
                   "mean_top": ref_meta.get("mean_top")},
        levels=results, gate_failures=failures, gates_unchecked=evaluation.unchecked_gates, base_task_score=evaluation.base_task_score,
        base_reuse_rate=evaluation.base_reuse_rate, base_perplexity=evaluation.base_perplexity,
        base_benchmarks=evaluation.base_benchmarks, samplings=[s.model_dump() for s in evaluation.samplings], arena=arena.as_json(evaluation.rounds),
        merge_check=evaluation.merge_check, calibration=evaluation.calibration,
        base_provenance=evaluation.base_provenance, calibration_effect=export_report.comparison(results),
        runtime_gap=runtime_gap(results), base_retained=evaluation.base_retained, judge=evaluation.judge,
        retained_asked_as=evaluation.retained_asked_as,
    ).save(out)
    plot_quality_vs_size(results, out / "quality_vs_size.png")
    has_loss = plot_loss(run.metrics(), out / "loss_curve.png")
    has_scores = plot_scores(results, evaluation.base_task_score, evaluation.base_reuse_rate, out / "scores.png")

    lines = [f"# Evaluation of {manifest.run_id}", "",
             (f"Measured on {here['system']} {here['machine']}, context {context} tokens. "
             f"**ppl general**: perplexity on the export's reference text, outside the fine-tune's data "
             f"(lathe.export.reference_text; full precision {ref_meta['perplexity']:.3g} over "
             f"{ref_meta['scored_tokens']} tokens; also the basis of Δppl, KLD and top-1, from its "
             f"{_kept(ref_meta)} log-probs per position). **ppl domain**: perplexity on held-out text of the fine-tune's own kind "
             "(lathe.eval.domain_text)."), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    lines += ["", ("KLD: from the reference's top tokens at each position (as many as cover 99.9% of the "
              "probability, up to a cap), the rest counted as one outcome plus the divergence within it, "
              f"estimated from {_drawn(ref_meta)}; report.json gives each mean KLD's standard error "
              "(`mean_kld_se`). "
              "Flips: eval items right at full precision (f16 GGUF) and wrong at that level. "
              "Load s, tok/s and peak MB: the level's own, served as a user runs it (no logits kept for every "
              "position), after its runtime was imported (peak resident memory over what the process held "
              "then; report.json keeps both). Scoring MB: the same process's peak while it computed "
              "perplexity and KLD (log-probs over the whole vocabulary at every position): the "
              "measurement's memory, not the model's. "
              f"Fits: memory tiers where weights + f16 KV cache at the context length stay under "
              f"{USABLE_FRACTION:.0%} of RAM. Reuse: held-out questions answered with a training answer, "
              "verbatim (see below)."), ""]
    if base_line := gguf_base.line(evaluation.base_provenance):
        lines += [f"{base_line[0].upper()}{base_line[1:]}.", ""]
    if evaluation.base_task_score is not None:
        lines += [(f"Base model (before fine-tuning): task score {evaluation.base_task_score:.2f}"
                   f"{_base_ppl(evaluation)}."), ""]
    lines += delta_lines(results)
    if gap := gap_line(runtime_gap(results)):
        lines += ["## Runtime gap", "", (f"{gap[0].upper()}{gap[1:]}. What the two runtimes differ by before any "
                  "quantization (chat template, sampler, kernels); each runtime's levels are compared with "
                  "its own full precision, so this is not counted as quantization loss."), ""]
    lines += benchmark_report.markdown(results, evaluation.base_benchmarks)
    holds = benchmark_report.holds_lines(results, evaluation.gates)
    if holds:
        lines += [f"- {line}" for line in holds] + [""]
    lines += export_report.markdown(evaluation.calibration, evaluation.merge_check, results)
    if has_scores:
        lines += ["![task score and held-out reuse per level](scores.png)", ""]
    lines += heldout_lines(evaluation)
    if kept := retained.line(results, evaluation.base_retained, evaluation.retained_asked_as):
        lines += ["## What teaching cost", "", kept[0].upper() + kept[1:] + ".", ""]
    lines += ["## Gates", ""] + ([f"- FAILED {f}" for f in failures] or ["All gates passed."]) + [""]
    if evaluation.unchecked_gates:
        lines += [f"Not checked here: {unchecked_line(evaluation)}.", ""]
    header, body = sweep_rows(evaluation)
    if body:
        spec = "; ".join(", ".join(f"{k}={v:g}" for k, v in s.model_dump().items() if k in SAMPLER)
                         for s in evaluation.samplings)
        lines += ["## Sampling sweep", "",
                  ("Task score at each sampling setting; in brackets, against greedy on the same items: items "
                   "lost, items gained, answers that changed (each setting's answers are in report.json). "
                   f"The sampler as passed to both llama.cpp and MLX: {spec}."), "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body] + [""]
    lines += ["![quality vs size](quality_vs_size.png)", ""]
    if has_loss:
        lines += ["![training loss](loss_curve.png)", ""]
    if evaluation.rounds:
        lines += arena.markdown(evaluation.rounds)
    if evaluation.judge:
        lines += [f"{judge_line(evaluation.judge)}. Each grade is {evaluation.judge['method']}.", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    html_report.write(text, out, f"Evaluation of {manifest.run_id}")


def print_summary(evaluation: Evaluation, out: Console, arena_rounds: int | None = 0) -> None:
    """What a person reads after a run: the table, the sweep if any, the base model as the control, a
    verdict per memory tier and what changed between levels (the full arena is in the report)."""
    from rich.table import Table

    from orchestrator.evaluation import arena

    print_table(evaluation.results, out)
    benchmark_report.print_table(evaluation.results, evaluation.base_benchmarks, out)
    header, body = sweep_rows(evaluation)
    if body:
        table = Table(title="Task score per sampling setting")
        for col in header:
            table.add_column(col, justify="left" if col == "level" else "right")
        for row in body:
            table.add_row(*row)
        out.print(table)
    if evaluation.base_task_score is not None:
        reuse = f", held-out reuse {_pct(evaluation.base_reuse_rate)}" if evaluation.heldout_prompts else ""
        out.print(f"base model task score: {evaluation.base_task_score:.2f}{reuse}{_base_ppl(evaluation)} "
                  "(before fine-tuning)")
    drops = [gguf_base.line(evaluation.base_provenance),
             drops_line(evaluation.results), benchmark_report.drops_line(evaluation.results),
             benchmark_report.bought_line(evaluation.results, evaluation.base_benchmarks),
             *benchmark_report.holds_lines(evaluation.results, evaluation.gates),
             retained.line(evaluation.results, evaluation.base_retained, evaluation.retained_asked_as),
             gap_line(runtime_gap(evaluation.results)),
             f"not checked: {unchecked_line(evaluation)}" if evaluation.unchecked_gates else None,
             export_report.calibration_line(evaluation.calibration, evaluation.results),
             export_report.merge_check_line(evaluation.merge_check)]
    for line in [d for d in drops if d] + tier_verdicts(evaluation):
        out.print(line)
    full = full_precision(evaluation.results)
    if evaluation.rounds and full is not None:
        out.print(arena.summary(evaluation.rounds, full.level))
    if evaluation.judge:
        out.print(judge_line(evaluation.judge))
    if evaluation.rounds and arena_rounds != 0:
        arena.render(evaluation.rounds, out, arena_rounds)


def judge_line(judged: dict) -> str:
    from orchestrator.evaluation.judge import JudgeCheck

    return JudgeCheck.from_json(judged).line()


def unchecked_line(evaluation: Evaluation) -> str:
    return (f"the gates of {', '.join(evaluation.unchecked_gates)} (not evaluated here: not pulled, or "
            "another --backend)")


def tier_verdicts(evaluation: Evaluation) -> list[str]:
    """Per memory tier, the smallest level that passes every gate, has no significant drop (gated or not)
    and fits there."""
    from orchestrator.levels import MEMORY_TIERS_GB

    failed = {f.split(":", 1)[0] for f in evaluation.failures}
    passing = [r for r in evaluation.results if f"{r.level} ({r.runtime})" not in failed and not held_back(r)]
    worth = without_redundant_twins([r.level for r in passing])
    passing = [r for r in passing if r.level in worth]
    choice: dict[int, str] = {}
    for tier in MEMORY_TIERS_GB:
        fitting = sorted((r for r in passing if tier in r.fits_gb), key=lambda r: r.size_bytes)
        best = fitting[0] if fitting else None
        choice[tier] = "no level passes the gates and fits" if best is None else \
            (f"{best.level} ({best.runtime}, {best.size_bytes / 1e6:.1f} MB, task "
             f"{'-' if best.task_score is None else f'{best.task_score:.2f}'}, reuse {_pct(best.reuse_rate)})")
    # Tiers with the same answer share one line: "8-32 GB" rather than four copies.
    groups: list[tuple[list[int], str]] = []
    for tier, said in choice.items():
        if groups and groups[-1][1] == said:
            groups[-1][0].append(tier)
        else:
            groups.append(([tier], said))
    parts = [f"{g[0]}{'' if len(g) == 1 else f'-{g[-1]}'} GB: {said}" for g, said in groups]
    return ["smallest level that passes the gates: " + "; ".join(parts)]


def print_table(results: list[LevelResult], out: Console) -> None:
    from rich.table import Table

    table = Table(title="Every level, on this machine")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("level", "runtime") else "right")
    for row in rows(results):
        table.add_row(*row)
    out.print(table)
