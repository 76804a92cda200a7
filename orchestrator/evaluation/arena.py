"""The arena: the same prompts through the base, the fine-tune and every level, side by side.

Numbers say how far a level drifted; the arena shows what that drift does to an
answer. Identical answers are grouped, so a level that still says what full
precision says takes one line, and one that changed its answer stands out.

An optional judge (any chat GGUF) scores each answer 1-10 against the item's
expected answer, or against the full-precision answer when there is none. Its
output is constrained by a grammar to a number, so a weak judge cannot produce
an unparseable verdict.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.evaluation.tasks import Item

JUDGE_GRAMMAR = 'root ::= "10" | [1-9]'
JUDGE_SYSTEM = "You grade answers. Reply with one number from 1 (wrong) to 10 (same meaning as the reference)."


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
    judge: dict[str, int] = field(default_factory=dict)

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


def _judge_all(judge_path: str, tasks: list[dict[str, str]]) -> list[int]:
    """Runs in a fresh process: one constrained, greedy verdict per task."""
    from llama_cpp import Llama, LlamaGrammar

    judge = Llama(model_path=judge_path, n_ctx=1024, verbose=False, seed=0)
    grammar = LlamaGrammar.from_string(JUDGE_GRAMMAR, verbose=False)
    scores = []
    for task in tasks:
        user = (f"Question: {task['prompt']}\nReference answer: {task['reference']}\n"
                f"Answer to grade: {task['answer']}\nGrade:")
        out = judge.create_chat_completion(
            messages=[{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}],
            grammar=grammar, temperature=0.0, max_tokens=3,
        )
        scores.append(int(out["choices"][0]["message"]["content"].strip()))
    return scores


def judge(rounds: list[Round], judge_path: Path, full_precision: str | None) -> None:
    """Fill `Round.judge` for every answer that has something to be compared with."""
    tasks, slots = [], []
    for r in rounds:
        reference = r.expected or (r.answers.get(full_precision) if full_precision else None)
        if not reference:
            continue
        for name, answer in r.answers.items():
            tasks.append({"prompt": r.prompt, "reference": reference, "answer": answer})
            slots.append((r, name))
    if not tasks:
        return
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        scores = pool.submit(_judge_all, str(judge_path), tasks).result()
    for (r, name), score in zip(slots, scores, strict=True):
        r.judge[name] = score


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
                row.append(", ".join(str(r.judge[n]) for n in names if n in r.judge))
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
                row.append(", ".join(str(r.judge[n]) for n in names if n in r.judge))
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
