"""The benchmarks in the report, the terminal summary and the model card: per level, each suite's main
score with its change against full precision (deltas.method says how), then every metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.evaluation.benchmarks.common import SuiteScore, label, ordered
from orchestrator.evaluation.deltas import describe, method
from orchestrator.evaluation.gates import as_delta, full_precision, reference_for
from orchestrator.evaluation.results import LevelResult

if TYPE_CHECKING:
    from rich.console import Console

EXPLAINED = {
    "bfcl": "BFCL (bfcl-eval's data and AST checker): calls right as the checker judges them; irrelevance is "
            "right when nothing is called",
    "ifeval": "IFEval (lm-eval's instruction checkers): prompt-level = every instruction of a prompt obeyed, "
              "instruction-level = each; loose forgives a first/last line of chatter and markdown asterisks",
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


def main_rows(results: list[LevelResult], base: dict[str, SuiteScore]) -> tuple[list[str], list[list[str]]]:
    names = suites(results)
    header = ["level", "runtime"] + [f"{label(s)} {_main(results, s)}" for s in names]
    body = [[r.level, r.runtime] + [cell(r.benchmarks.get(s), reference_for(results, r) is r) for s in names]
            for r in results]
    if base:
        body.append(["base model", "llama.cpp"] + [cell(base.get(s), True) for s in names])
    return header, body


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
              f", {method()}."), "", *_table(*main_rows(results, base)), ""]
    for suite in names:
        about = EXPLAINED.get(suite, f"{suite} (lm-evaluation-harness, through the level's OpenAI-compatible server)")
        lines += [f"**{about}.**", "", *_table(*metric_rows(results, suite)), ""]
    return lines


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
