"""Memorisation: asked a question it never saw, does the model answer with a training answer, verbatim?

A fine-tune that learnt a skill answers a new question with a new answer; one that memorised its data
answers with the training answer nearest to the question ("What is the capital of Portugal?" -> "The
capital of Australia is Dublin."). The held-out set holds paraphrases of training questions and new
questions of the same kinds; per level, the share of its answers that reproduce a training answer
word for word, and which. The base model, asked the same questions, is the control: it has never seen
the training answers, so a reuse rate above its own is what the fine-tune put there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.evaluation.tasks import normalize

# Where Axolotl's common dataset shapes keep the trained answer and the question it answers.
ANSWER_FIELDS = ("output", "response", "completion", "answer")
QUESTION_FIELDS = ("instruction", "prompt", "question", "input")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class TrainingAnswer:
    question: str
    answer: str


def _from_record(record: dict[str, Any], field_messages: str) -> list[TrainingAnswer]:
    messages = record.get(field_messages)
    if isinstance(messages, list):
        out, question = [], ""
        for message in messages:
            if not isinstance(message, dict):
                continue
            role = message.get("role") or message.get("from")
            content = message.get("content") or message.get("value") or ""
            if role in ("user", "human"):
                question = content
            elif role in ("assistant", "gpt") and content:
                out.append(TrainingAnswer(question, content))
        return out
    answer = next((record[f] for f in ANSWER_FIELDS if isinstance(record.get(f), str) and record[f]), None)
    question = next((record[f] for f in QUESTION_FIELDS if isinstance(record.get(f), str)), "")
    return [TrainingAnswer(question, answer)] if answer else []


def training_answers(recipe_dir: Path, axolotl: dict[str, Any]) -> dict[str, TrainingAnswer]:
    """Every assistant answer in the recipe's local training files, keyed by its normalised text.
    Datasets on a hub are not read here (the laptop may have no access): they add nothing."""
    found: dict[str, TrainingAnswer] = {}
    for dataset in axolotl.get("datasets") or []:
        path = recipe_dir / str(dataset.get("path", ""))
        if not path.is_file():
            continue
        field_messages = dataset.get("field_messages") or "messages"
        text = path.read_text(encoding="utf-8")
        records = json.loads(text) if path.suffix == ".json" else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
        for record in records if isinstance(records, list) else []:
            if isinstance(record, dict):
                for item in _from_record(record, field_messages):
                    found.setdefault(normalize(item.answer), item)
    return found


def reused(output: str, answers: dict[str, TrainingAnswer]) -> TrainingAnswer | None:
    """The training answer `output` reproduces word for word (punctuation and case aside), if any.
    An answer that goes on after the training answer still counts when its first sentence is one."""
    whole = normalize(output)
    if not whole:
        return None
    first = normalize(_SENTENCE_END.split(output.strip(), maxsplit=1)[0])
    return answers.get(whole) or answers.get(first)


def measure(outputs: dict[str, str], answers: dict[str, TrainingAnswer]) -> tuple[float | None, dict[str, Any]]:
    """(reuse rate, per held-out item {"output", "reuses": the training question or None})."""
    per_item = {}
    for key, output in outputs.items():
        hit = reused(output, answers)
        per_item[key] = {"output": output, "reuses": hit.question if hit else None}
    rate = sum(v["reuses"] is not None for v in per_item.values()) / len(per_item) if per_item else None
    return rate, per_item
