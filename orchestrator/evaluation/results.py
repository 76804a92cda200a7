"""What an evaluation produces: each level's measured numbers and the report that holds them.

Its own module so that `evaluate` (which fills these) and `report` (which writes
them) do not import each other, and `publish` reads report.json through the same
model `report` wrote it with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import LatheError, one_line
from orchestrator.evaluation.benchmarks.common import SuiteScore
from orchestrator.run.layout import REPORT_JSON


@dataclass
class Target:
    """One thing to evaluate: a GGUF file or an MLX directory, at one level."""

    level: str
    runtime: str  # "llama.cpp" or "mlx"
    path: str  # GGUF file or MLX directory, absolute
    size_bytes: int
    bits_per_weight: float | None


class LevelResult(BaseModel):
    level: str
    runtime: str
    size_bytes: int
    bits_per_weight: float | None
    quality: dict[str, float]
    task_score: float | None
    answers: dict[str, dict[str, Any]]  # item id -> {"output", "correct"}
    load_seconds: float
    prompt_tps: float
    gen_tps: float
    peak_rss_bytes: int  # the evaluation process's peak
    baseline_rss_bytes: int = 0  # what it held after importing the runtime, before loading the level
    # The peak while scoring (log-probs at every position for perplexity and KLD), over the same baseline's
    # process: the measurement's memory, not the model's; 0 where it was not measured apart.
    scoring_peak_bytes: int = 0
    memory_need_bytes: int
    fits_gb: list[int]
    flips: int | None = None
    # Task score minus full precision's: interval, items lost and gained, exact sign test (deltas.Delta.as_dict()).
    task_delta: dict[str, float | int | str] | None = None
    flipped: list[str] = Field(default_factory=list)
    arena: dict[str, str] = Field(default_factory=dict)  # open arena prompt key -> output
    # Per sampling setting: {"sampling", "task_score", "answers" (per item), "flipped"/"gained" (item ids
    # right at greedy and wrong here / the reverse), "changed" (answers that differ from greedy's)}.
    sweep: list[dict[str, Any]] = Field(default_factory=list)
    # Held-out questions: the share answered with a training answer verbatim, and per item which one.
    reuse_rate: float | None = None
    heldout: dict[str, dict[str, Any]] = Field(default_factory=dict)  # id -> {"output", "reuses"}
    benchmarks: dict[str, SuiteScore] = Field(default_factory=dict)  # "bfcl", "ifeval", "docqa"
    # lathe.eval.retained: per question {"output", "correct"}, and the change against the base's answers.
    retained: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retained_delta: dict[str, float | int | str] | None = None


@dataclass
class Evaluation:
    out: Path  # the eval directory with report.md, report.json, plots
    results: list[LevelResult]
    failures: list[str]  # one line per failed gate
    rounds: list[Any]  # arena.Round
    samplings: list[Any]  # tasks.Sampling: the first is the default, the rest the sweep
    base_task_score: float | None = None
    base_reuse_rate: float | None = None
    heldout_prompts: dict[str, str] = field(default_factory=dict)  # held-out id -> question
    base_perplexity: dict[str, float | None] = field(default_factory=dict)  # "domain", "general"
    base_benchmarks: dict[str, SuiteScore] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # the manifest's: how the k/i levels were calibrated
    merge_check: dict[str, Any] | None = None  # the manifest's: merged vs base + adapter
    base_provenance: dict[str, str] | None = None  # the manifest's: a base made from a GGUF file
    unchecked_gates: list[str] = field(default_factory=list)  # gated levels not evaluated here
    base_retained: dict[str, dict[str, Any]] = field(default_factory=dict)  # the base's lathe.eval.retained answers
    retained_asked_as: str | None = None  # "chat" or "text" (retained.asked_as)
    judge: dict[str, Any] | None = None  # the arena's judge and how it did on the control pairs (judge.JudgeCheck)
    gates: dict[str, Any] = field(default_factory=dict)  # the recipe's lathe.eval.gates (level -> recipe.Gate)


class Report(BaseModel):
    """eval/report.json."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    machine: dict[str, str]
    context: int
    reference: dict[str, Any]
    levels: list[LevelResult]
    gate_failures: list[str] = Field(default_factory=list)
    gates_unchecked: list[str] = Field(default_factory=list)  # gated levels not evaluated (not pulled)
    judge: dict[str, Any] | None = None  # the arena judge and its control-pair check
    base_task_score: float | None = None
    base_reuse_rate: float | None = None
    base_perplexity: dict[str, float | None] = Field(default_factory=dict)  # "domain", "general"
    base_benchmarks: dict[str, SuiteScore] = Field(default_factory=dict)
    base_retained: dict[str, dict[str, Any]] = Field(default_factory=dict)  # lathe.eval.retained, the base's answers
    retained_asked_as: str | None = None  # how they were asked, base and levels alike: "chat" or "text"
    samplings: list[dict[str, Any]] = Field(default_factory=list)
    arena: list[dict[str, Any]] = Field(default_factory=list)
    merge_check: dict[str, Any] | None = None
    base_provenance: dict[str, str] | None = None  # a base made from a GGUF file (gguf_base.for_manifest)
    # MLX's full precision against llama.cpp's on the same items (gates.runtime_gap); None without both.
    runtime_gap: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    # Per calibrated level evaluated beside its static twin: both sides' numbers (export_report.comparison).
    calibration_effect: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Report:
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise LatheError(f"{path}: cannot read ({exc.__class__.__name__})") from None
        except ValidationError as exc:
            raise LatheError(one_line(exc, str(path))) from None

    def save(self, directory: Path) -> Path:
        path = directory / REPORT_JSON
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def failures_of(self, level: LevelResult) -> list[str]:
        return [f for f in self.gate_failures if f.startswith(f"{level.level} ({level.runtime}):")]
