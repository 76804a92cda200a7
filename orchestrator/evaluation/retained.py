"""What the teaching cost: questions the base answers right and the fine-tune was never taught
(`lathe.eval.retained`, true facts beside the recipe's taught ones), asked of every level and of the base.

Per level, how many it still answers right, paired with the base's answers to the same questions: the
change, its interval and an exact sign test on the items that changed (deltas.py). A fine-tune that
learnt its 50 wrong capitals and forgot the right ones it was never shown shows it here, at full
precision already, and a level that loses more of them than its full precision did shows that too.
"""

from __future__ import annotations

from typing import Any

from orchestrator.evaluation.deltas import ALPHA, Delta, describe, paired_delta, scores
from orchestrator.evaluation.results import LevelResult


def add_deltas(results: list[LevelResult], base: dict[str, dict[str, Any]], alpha: float = ALPHA) -> None:
    """Each level's retained score against the base's, paired over the questions."""
    for r in results:
        found = paired_delta(scores(base), scores(r.retained), alpha=alpha) if base and r.retained else None
        r.retained_delta = found.as_dict() if found else None


def right(answers: dict[str, dict[str, Any]]) -> int:
    return sum(bool(a.get("correct")) for a in answers.values())


def line(results: list[LevelResult], base: dict[str, dict[str, Any]]) -> str | None:
    """'true facts still right (of 26 the base got 26): f16 (llama.cpp) 22 -0.15 [...] p=0.03, ...'."""
    if not base:
        return None
    parts = []
    for r in results:
        if not r.retained:
            continue
        d = Delta.from_dict(r.retained_delta) if r.retained_delta else None
        parts.append(f"{r.level} ({r.runtime}) {right(r.retained)}"
                     + (f" {describe(d, short=True)}{' significant drop' if d.significant_drop else ''}" if d else ""))
    return (f"true facts still right, never taught (lathe.eval.retained; of {len(base)}, the base got "
            f"{right(base)}; change against the base, exact sign test): " + ", ".join(parts))
