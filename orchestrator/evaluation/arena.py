"""The arena: the same prompts through the base, the fine-tune and every level, side by side.

Numbers say how far a level drifted; the arena shows what that drift does to an
answer. Identical answers are grouped, so a level that still says what full
precision says takes one line, and one that changed its answer stands out.

An optional judge (any chat GGUF; orchestrator/evaluation/judge.py) grades each
answer against the item's expected answer, or against the full-precision answer
when there is none, and is itself checked on control pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.evaluation.tasks import Item

@dataclass
class Contestant:
    name: str  # "base q8_0", "f16", "q4_k_m", "mlx-4bit"
    answers: dict[str, str]  # round key -> output
    correct: dict[str, bool] = field(default_factory=dict)


@dataclass
class Round:
    key: str  # the eval item's id, or "prompt-N" for an open arena prompt
    prompt: str
    expected: str | None
    answers: dict[str, str]  # contestant -> output
    correct: dict[str, bool] = field(default_factory=dict)
    judge: dict[str, float] = field(default_factory=dict)  # contestant -> the judge's expected grade, 1-9

    def groups(self) -> list[tuple[str, list[str]]]:
        """Distinct answers, each with the contestants that gave it, in contestant order."""
        seen: dict[str, list[str]] = {}
        for name, text in self.answers.items():
            seen.setdefault(text.strip(), []).append(name)
        return list(seen.items())


def prompt_key(index: int) -> str:
    return f"prompt-{index + 1}"


def build_rounds(items: list[Item], open_prompts: list[str], contestants: list[Contestant]) -> list[Round]:
    questions: list[tuple[str, str, str | None]] = []
    for n, item in enumerate(items):
        expected = item.expected if isinstance(item.expected, str) else None
        questions.append((item.id or f"item-{n + 1}", item.prompt, expected))
    questions += [(prompt_key(n), p, None) for n, p in enumerate(open_prompts)]
    rounds = []
    for key, prompt, expected in questions:
        answers = {c.name: c.answers[key] for c in contestants if key in c.answers}
        correct = {c.name: c.correct[key] for c in contestants if key in c.correct}
        rounds.append(Round(key, prompt, expected, answers, correct))
    return rounds


def _mark(r: Round, name: str) -> str:
    if name not in r.correct:
        return ""
    return "✓" if r.correct[name] else "✗"


def markdown(rounds: list[Round]) -> list[str]:
    lines = ["## Arena", "",
             "The same prompts through every model, greedy. Contestants giving the same answer share a row."]
    has_judge = any(r.judge for r in rounds)
    for r in rounds:
        lines += ["", f"**{r.key}**: {_md(r.prompt)}" + (f" (expected: {_md(r.expected)})" if r.expected else ""), ""]
        header = ["models", "answer", "right"] + (["judge"] if has_judge else [])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for text, names in r.groups():
            row = [", ".join(names), _md(text) or "(empty)", " ".join(sorted({_mark(r, n) for n in names}))]
            if has_judge:
                row.append(", ".join(f"{r.judge[n]:.1f}" for n in names if n in r.judge))
            lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(rounds: list[Round], console: Console, limit: int | None = None) -> None:
    from rich.table import Table

    has_judge = any(r.judge for r in rounds)
    shown = rounds if limit is None else rounds[:limit]
    for r in shown:
        title = f"{r.key}: {r.prompt}" + (f"  [dim](expected: {r.expected})[/dim]" if r.expected else "")
        table = Table(title=title, title_justify="left", show_lines=False, expand=False)
        table.add_column("models", style="bold")
        table.add_column("answer", overflow="fold", max_width=90)
        table.add_column("right", justify="center")
        if has_judge:
            table.add_column("judge", justify="right")
        for text, names in r.groups():
            row = [", ".join(names), " ".join(text.split()) or "(empty)",
                   " ".join(sorted({_mark(r, n) for n in names}))]
            if has_judge:
                row.append(", ".join(f"{r.judge[n]:.1f}" for n in names if n in r.judge))
            table.add_row(*row)
        console.print(table)
    if limit is not None and len(rounds) > limit:
        console.print(f"[dim]{len(rounds) - limit} more rounds in the report[/dim]")


def summary(rounds: list[Round], reference: str) -> str:
    """One line: per contestant, on how many rounds its answer differs from the reference's."""
    names = [n for n in dict.fromkeys(n for r in rounds for n in r.answers) if n != reference]
    counted = [r for r in rounds if reference in r.answers]
    parts = []
    for name in names:
        differ = sum(1 for r in counted if name in r.answers and r.answers[name].strip() != r.answers[reference].strip())
        parts.append(f"{name} {differ}")
    return f"arena: {len(counted)} prompts; answers that differ from {reference}'s: " + ", ".join(parts)


def as_json(rounds: list[Round]) -> list[dict[str, Any]]:
    return [{"key": r.key, "prompt": r.prompt, "expected": r.expected, "answers": r.answers,
             "correct": r.correct, "judge": r.judge} for r in rounds]
