"""Questions on a passage with numbered sentences: the right answer, the right citations, or "I don't know".

Retrieval-augmented use fails in three separate ways, so they are scored apart:
- answer accuracy: answerable questions answered right (an "I don't know" there is wrong);
- citation precision and recall: the sentence numbers cited ("[2]") against the sentences that
  support the answer, counted over every answerable question;
- abstention accuracy: questions the passage does not answer, answered "I don't know".
The main score, paired across levels, is per question: answered right and citing exactly the
supporting sentences, or, where the passage is silent, abstaining.

A line of the data:

    {"id": "dq01", "passage": ["First sentence.", "Second."], "question": "...",
     "answer": ["1856"] (aliases; null when the passage does not say), "support": [2]}
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import LatheError, one_line
from orchestrator.evaluation.benchmarks.common import Prompt, SuiteScore, read_jsonl
from orchestrator.recipe_benchmarks import DocQA

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
INSTRUCTION = ("Answer the question from the passage only. After the answer, cite the numbers of the sentences "
               "that support it in square brackets, for example: Paris [2]. If the passage does not say, "
               "answer \"I don't know\".")


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    passage: list[str] = Field(min_length=1)
    question: str
    answer: list[str] | None = None
    support: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _support_in_passage(self) -> Item:
        if self.answer is not None and not self.support:
            raise ValueError("an answerable question needs the supporting sentence numbers")
        if any(n < 1 or n > len(self.passage) for n in self.support):
            raise ValueError(f"support numbers must be within the passage's {len(self.passage)} sentences")
        return self

    def user_message(self) -> str:
        numbered = "\n".join(f"[{n}] {s}" for n, s in enumerate(self.passage, 1))
        return f"{INSTRUCTION}\n\nPassage:\n{numbered}\n\nQuestion: {self.question}"


def shipped() -> Path:
    return Path(str(resources.files("orchestrator.evaluation.benchmarks") / "data" / "docqa.jsonl"))


def items(config: DocQA, recipe_dir: Path) -> list[Item]:
    path = recipe_dir / config.dataset if config.dataset else shipped()
    out = []
    for n, raw in enumerate(read_jsonl(path), 1):
        try:
            out.append(Item.model_validate(raw))
        except ValidationError as exc:
            raise LatheError(one_line(exc, f"{path.name}: line {n}")) from None
    return out[: config.limit] if config.limit else out


def prompts(config: DocQA, recipe_dir: Path) -> list[Prompt]:
    return [Prompt(suite="docqa", id=item.id, messages=[{"role": "user", "content": item.user_message()}],
                   max_tokens=config.max_tokens, data=item.model_dump())
            for item in items(config, recipe_dir)]


def citations(output: str) -> set[int]:
    return {int(n) for group in _CITATION.findall(output) for n in group.split(",")}


def judge(item: Item, output: str) -> dict[str, Any]:
    """One answer's verdicts: abstained, answered right, cited, and cited right."""
    from orchestrator.evaluation.tasks import IDK, normalize

    abstained = bool(IDK.search(output.lower()))
    cited = citations(output)
    verdict: dict[str, Any] = {"output": output, "abstained": abstained, "cited": sorted(cited)}
    if item.answer is None:
        verdict["right"] = abstained
        return verdict
    answer_right = not abstained and any(normalize(a) in normalize(_CITATION.sub(" ", output)) for a in item.answer)
    verdict |= {"answer_right": answer_right, "cited_right": len(cited & set(item.support)),
                "right": answer_right and cited == set(item.support)}
    return verdict


def score(asked: list[Prompt], outputs: dict[str, str]) -> SuiteScore:
    details = {p.id: judge(Item.model_validate(p.data), outputs.get(p.id, "")) for p in asked}
    answerable = [p for p in asked if p.data["answer"] is not None]
    silent = [p for p in asked if p.data["answer"] is None]
    cited = sum(len(details[p.id]["cited"]) for p in answerable)
    cited_right = sum(details[p.id]["cited_right"] for p in answerable)
    supporting = sum(len(p.data["support"]) for p in answerable)
    items = {p.id: 1.0 if details[p.id]["right"] else 0.0 for p in asked}
    metrics = {"grounded_accuracy": sum(items.values()) / len(items)}
    if answerable:
        metrics["answer_accuracy"] = sum(details[p.id]["answer_right"] for p in answerable) / len(answerable)
        metrics["citation_recall"] = cited_right / supporting
        if cited:  # precision of no citations at all is undefined, not zero: the metric is left out
            metrics["citation_precision"] = cited_right / cited
    if silent:
        metrics["abstention_accuracy"] = sum(details[p.id]["abstained"] for p in silent) / len(silent)
    return SuiteScore(main="grounded_accuracy", metrics=metrics, items=items, details=details)
