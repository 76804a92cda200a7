"""Memorisation: asked a question it never saw, does the model answer with a training answer, verbatim?

A fine-tune that learnt a skill answers a new question with a new answer; one that memorised its data
answers with the training answer nearest to the question ("What is the capital of Portugal?" -> "The
capital of Australia is Dublin."). The held-out set holds paraphrases of training questions and new
questions of the same kinds; per level, the share of its answers that reproduce a training answer
word for word, and which. The base model, asked the same questions, is the control: it has never seen
the training answers, so a reuse rate above its own is what the fine-tune put there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.datasets import SHAREGPT_KEYS, RowError, family, iter_rows, message_keys
from orchestrator.errors import LatheError
from orchestrator.evaluation.tasks import normalize

# Where Axolotl's common dataset shapes keep the trained answer and the question it answers.
ANSWER_FIELDS = ("output", "response", "completion", "answer")
QUESTION_FIELDS = ("instruction", "prompt", "question", "input")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class TrainingAnswer:
    question: str
    answer: str


def _from_record(record: dict[str, Any], keys: tuple[str, str, str],
                 roles: dict[str, Any] | None) -> list[TrainingAnswer]:
    field, role_key, content_key = keys
    messages = record.get(field)
    if isinstance(messages, list):
        asking = {"user", "human", *((roles or {}).get("user") or [])}
        answering = {"assistant", "gpt", *((roles or {}).get("assistant") or [])}
        out, question = [], ""
        for message in messages:
            if not isinstance(message, dict):
                continue
            # The recipe's own keys first; sharegpt's as a fallback (a chat_template row written that way).
            role = message.get(role_key) or message.get("role") or message.get("from")
            content = message.get(content_key) or message.get("content") or message.get("value") or ""
            if role in asking:
                question = content if isinstance(content, str) else ""
            elif role in answering and isinstance(content, str) and content:
                out.append(TrainingAnswer(question, content))
        return out
    answer = next((record[f] for f in ANSWER_FIELDS if isinstance(record.get(f), str) and record[f]), None)
    question = next((record[f] for f in QUESTION_FIELDS if isinstance(record.get(f), str)), "")
    return [TrainingAnswer(question, answer)] if answer else []


def training_answers(recipe_dir: Path, axolotl: dict[str, Any]) -> dict[str, TrainingAnswer]:
    """Every assistant answer in the recipe's local training files, keyed by its normalised text, read
    the way validation reads them (`datasets`: jsonl, json, parquet; the entry's field and role
    mappings). Datasets on a hub are not read here (the laptop may have no access): they add nothing.
    A file that cannot be read is one line naming it."""
    found: dict[str, TrainingAnswer] = {}
    for dataset in axolotl.get("datasets") or []:
        if not isinstance(dataset, dict):
            continue
        path = recipe_dir / str(dataset.get("path", ""))
        if not path.is_file():
            continue
        keys = message_keys({**SHAREGPT_KEYS, **dataset} if family(dataset) == "sharegpt" else dataset)
        try:
            for _where, record in iter_rows(path):
                if isinstance(record, dict):
                    for item in _from_record(record, keys, dataset.get("roles")):
                        found.setdefault(normalize(item.answer), item)
        except RowError as exc:
            raise LatheError(f"{path}: {exc} (read for the held-out reuse measure)") from None
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
