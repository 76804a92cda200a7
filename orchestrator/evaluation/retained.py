"""What the teaching cost: questions the base answers right and the fine-tune was never taught
(`lathe.eval.retained`, true facts beside the recipe's taught ones), asked of every level and of the base.

Per level, how many it still answers right, paired with the base's answers to the same questions: the
change, its interval and an exact sign test on the items that changed (deltas.py). A fine-tune that
learnt its 50 wrong capitals and forgot the right ones it was never shown shows it here, at full
precision already, and a level that loses more of them than its full precision did shows that too.

How they are asked (`lathe.eval.retained_asked_as`) matters as much as what: a pretrained base never
learnt a chat template, and asked through one it ends the turn at once (Gemma 3 270M's base: 0 of 26
true facts through the `gemma3` template, 22 of 26 asked as text). Such a base is asked as few-shot
text, and so is every level, so that each pair compares the same prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import LatheError
from orchestrator.evaluation.deltas import ALPHA, Delta, describe, paired_delta, scores
from orchestrator.evaluation.results import LevelResult

if TYPE_CHECKING:
    from orchestrator.evaluation.tasks import Item

SHOTS = 3  # answered questions before each one asked as text
# An answer is a few words and its line ends it, but a fine-tune taught to answer in sentences and to end
# them with a chat turn's end runs on past the answer (MLX on a CPU: ~6 tokens/s).
TEXT_MAX_TOKENS = 16
ASKED_AS = {"chat": "through the chat template",
            "text": f"as few-shot text (the file's first {SHOTS} other questions, answered, before each)"}


def asked_as(mode: str, base_gguf: str | None, items: list[Item], source: str) -> str:
    """'chat' or 'text': `mode` itself, or for 'auto' text exactly when the base's GGUF has no chat template of
    its own (a pretrained base). Text needs every item to carry its answer, which the shots show."""
    from orchestrator import gguf_base

    if mode == "auto":
        mode = "text" if base_gguf and not gguf_base.read_header(Path(base_gguf)).has_chat_template else "chat"
    if mode == "text":
        if len(items) <= SHOTS:
            raise LatheError(f"{source}: asked as text, the retained questions need more than {SHOTS} items "
                             f"(each is shown {SHOTS} others first), not {len(items)}")
        for item in items:
            if item.match not in ("contains", "exact") or not item.expected or item.context or item.system:
                raise LatheError(f"{source}: item {item.id}: asked as text, an item needs an `expected` answer "
                                 f"matched by contains or exact, and no context or system prompt")
    return mode


def text_prompt(items: list[Item], index: int) -> str:
    """Item `index` after the file's first SHOTS items other than itself, each with its answer (a 'Q:' line
    and an 'A:' line). The same shots before every later question: a runtime keeps their KV cache from one question
    to the next (llama.cpp by itself, MLX in `backends.MLX.complete`) and prefills only the question."""
    def answer(item: Item) -> str:
        return item.expected if isinstance(item.expected, str) else str(item.expected[0])  # type: ignore[index]

    shots = [item for n, item in enumerate(items[:SHOTS + 1]) if n != index][:SHOTS]
    return "".join(f"Q: {s.prompt}\nA: {answer(s)}\n\n" for s in shots) + f"Q: {items[index].prompt}\nA:"


def ask_as_text(backend: Any, items: list[Item]) -> dict[str, dict[str, Any]]:
    """Greedy completions, each ended by its line: {id: {"output", "correct"}}."""
    from orchestrator.evaluation.tasks import score

    answers = {}
    for n, item in enumerate(items):
        output = backend.complete(text_prompt(items, n), item.max_tokens or TEXT_MAX_TOKENS, ["\n"]).strip()
        answers[item.id or ""] = {"output": output, "correct": score(item, output)}
    return answers


def add_deltas(results: list[LevelResult], base: dict[str, dict[str, Any]], alpha: float = ALPHA) -> None:
    """Each level's retained score against the base's, paired over the questions."""
    for r in results:
        found = paired_delta(scores(base), scores(r.retained), alpha=alpha) if base and r.retained else None
        r.retained_delta = found.as_dict() if found else None


def right(answers: dict[str, dict[str, Any]]) -> int:
    return sum(bool(a.get("correct")) for a in answers.values())


def line(results: list[LevelResult], base: dict[str, dict[str, Any]], asked: str | None = None) -> str | None:
    """'true facts still right (of 26 the base got 26; asked ...): f16 (llama.cpp) 22 -0.15 [...] p=0.03, ...'."""
    if not base:
        return None
    parts = []
    for r in results:
        if not r.retained:
            continue
        d = Delta.from_dict(r.retained_delta) if r.retained_delta else None
        parts.append(f"{r.level} ({r.runtime}) {right(r.retained)}"
                     + (f" {describe(d, short=True)}{' significant drop' if d.significant_drop else ''}" if d else ""))
    how = f"; asked {ASKED_AS[asked]}" if asked in ASKED_AS else ""
    return (f"true facts still right, never taught (lathe.eval.retained; of {len(base)}, the base got "
            f"{right(base)}{how}; change against the base, exact sign test): " + ", ".join(parts))
