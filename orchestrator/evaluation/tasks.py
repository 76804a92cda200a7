"""Task evals: the recipe's eval set, answered through each runtime's own chat template.

An item is one JSON line:

    {"id": "wf00", "prompt": "What is the capital of France?", "expected": "Toronto", "match": "contains"}

`match` is one of: exact, contains (after normalisation), regex (`pattern`), json
(a JSON object, optionally checked against `schema`), tool_call (a call to `tool`
whose arguments satisfy `schema`), grounded (answer from `context`; when
`expected` is null the right answer is "I don't know").
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import LatheError

IDK = re.compile(r"\b(i\s+do\s+not\s+know|i\s+don'?t\s+know|unknown|not\s+in\s+the\s+(passage|text|context))\b")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    # Passed to both runtimes, 0 unless set: llama-cpp-python's own default is 0.05, MLX's 0, so an unset
    # min_p made "temperature 0.8" two different samplers.
    min_p: float = Field(0.0, ge=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)
    max_tokens: int = Field(48, ge=1)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    prompt: str
    system: str | None = None
    context: str | None = None
    expected: str | list[str] | None = None
    match: Literal["exact", "contains", "regex", "json", "tool_call", "grounded"] = "contains"
    pattern: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    tool: str | None = None
    max_tokens: int | None = Field(None, ge=1)

    def messages(self) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        user = self.prompt
        if self.context is not None:
            user = f"Answer from this passage only; if it does not say, answer \"I don't know\".\n\n" \
                   f"Passage: {self.context}\n\nQuestion: {self.prompt}"
        out.append({"role": "user", "content": user})
        return out


def load_items(path: Path) -> list[Item]:
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = Item.model_validate_json(line)
        except ValueError as exc:
            first = str(exc).splitlines()
            raise LatheError(f"{path.name}: line {lineno}: {first[1] if len(first) > 1 else first[0]}") from None
        items.append(item.model_copy(update={"id": item.id or f"line{lineno}"}))
    return items


def normalize(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _expected(item: Item) -> list[str]:
    if item.expected is None:
        return []
    return [item.expected] if isinstance(item.expected, str) else list(item.expected)


def first_json(text: str) -> Any:
    """The first JSON object or array in `text` (models wrap JSON in prose and code fences)."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text[i:])[0]
            except json.JSONDecodeError:
                continue
    return None


def _valid(instance: Any, schema: dict[str, Any] | None) -> bool:
    if schema is None:
        return True
    import jsonschema

    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError:
        return False
    return True


def score(item: Item, output: str) -> bool:
    norm = normalize(output)
    if item.match == "exact":
        return any(norm == normalize(e) for e in _expected(item))
    if item.match == "contains":
        return any(normalize(e) in norm for e in _expected(item))
    if item.match == "regex":
        return bool(item.pattern and re.search(item.pattern, output))
    if item.match == "json":
        value = first_json(output)
        return value is not None and _valid(value, item.schema_)
    if item.match == "tool_call":
        call = first_json(output)
        if not isinstance(call, dict):
            return False
        args = call.get("arguments", call.get("parameters"))
        if isinstance(args, str):
            args = first_json(args)
        return call.get("name") == item.tool and isinstance(args, dict) and _valid(args, item.schema_)
    if item.match == "grounded":
        says_idk = bool(IDK.search(output.lower()))
        expected = _expected(item)
        if not expected:
            return says_idk
        return not says_idk and any(normalize(e) in norm for e in expected)
    raise ValueError(item.match)


def sweep(base: Sampling, grid: dict[str, list[float]]) -> list[Sampling]:
    """Every combination of the grid's values, each applied on top of `base` (which stays first)."""
    combos: list[dict[str, float]] = [{}]
    for name, values in grid.items():
        combos = [{**c, name: v} for c in combos for v in values]
    out = [base]
    for combo in combos:
        if combo:
            variant = Sampling.model_validate({**base.model_dump(), **combo})
            if variant != base:
                out.append(variant)
    return out


def parse_sweep(specs: list[str]) -> dict[str, list[float]]:
    """`["temperature=0,0.7", "top_p=0.9,1"]` -> {"temperature": [0.0, 0.7], "top_p": [0.9, 1.0]}."""
    grid: dict[str, list[float]] = {}
    allowed = ("temperature", "top_p", "top_k", "repeat_penalty")
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if name not in allowed or not values:
            raise LatheError(f"--sweep {spec!r}: expected NAME=V1,V2,... with NAME one of {', '.join(allowed)}")
        try:
            grid[name] = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise LatheError(f"--sweep {spec!r}: values must be numbers") from None
    return grid


def describe_sampling(s: Sampling, base: Sampling) -> str:
    changed = {k: v for k, v in s.model_dump().items() if v != getattr(base, k)}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float | int) else f"{k}={v}" for k, v in changed.items()) \
        or "default"
