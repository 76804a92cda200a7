"""What every benchmark shares: a prompt as asked of every level, a suite's score at one level, the
suites' order and names, and reading a JSON-lines prompt file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.errors import LatheError


class Prompt(BaseModel):
    """One thing asked of every level. `data` is what the scorer needs (never sent to the model)."""

    suite: str
    id: str
    messages: list[dict[str, str]]
    tools: list[dict[str, Any]] | None = None
    max_tokens: int = 256
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.id}"

    def asked(self) -> dict[str, Any]:
        """What the evaluation process needs: the messages, tools and length, not the answers."""
        return {"key": self.key, "messages": self.messages, "tools": self.tools, "max_tokens": self.max_tokens}


class SuiteScore(BaseModel):
    """One suite at one level. `items` holds each item's main score (0..1), paired across levels for
    the deltas; `metrics` the suite's reported numbers, `main` first."""

    main: str
    metrics: dict[str, float]
    items: dict[str, float]
    details: dict[str, dict[str, Any]] = Field(default_factory=dict)  # item id -> output and verdicts
    delta: dict[str, float | int | str] | None = None  # main metric minus full precision's (deltas.Delta.as_dict())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """A prompt file's objects, read as datasets are (row size limit, UTF-8); one line naming the file
    and the line when it is not JSON lines."""
    from orchestrator.datasets import RowError, iter_rows

    try:
        return [row for _, row in iter_rows(path)]
    except OSError as exc:
        raise LatheError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    except RowError as exc:
        raise LatheError(f"{path.name}: {exc}") from None


# The order suites appear in tables, report.json and the model card; lm-eval's tasks ("lm-eval:gsm8k") follow.
SUITES = ("bfcl", "ifeval", "ifbench", "docqa")
LABELS = {"bfcl": "BFCL", "ifeval": "IFEval", "ifbench": "IFBench", "docqa": "doc QA"}
LM_EVAL = "lm-eval:"


def label(suite: str) -> str:
    return LABELS.get(suite, suite)


def gate_name(suite: str) -> str:
    """The gate field that limits a suite's significant drop."""
    return "max_lm_eval_drop" if suite.startswith(LM_EVAL) else f"max_{suite}_drop"


def ordered(names: set[str]) -> list[str]:
    return [s for s in SUITES if s in names] + sorted(n for n in names if n not in SUITES)


