"""A recipe: an Axolotl YAML plus an optional ``lathe:`` block.

Axolotl owns everything outside ``lathe:``; Lathe owns the block, described
here as pydantic models so the same schema validates files, fills defaults and
documents itself. Relative paths in a recipe are relative to the recipe file,
so a recipe means the same thing from any working directory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.errors import RecipeError
from orchestrator.levels import (
    DEFAULT_GGUF,
    DEFAULT_MLX_BITS,
    NEEDS_IMATRIX,
    GGUFLevel,
    mlx_level,
    mlx_options,
    static_twin,
)
from orchestrator.recipe_benchmarks import Benchmarks

SweepParameter = Literal["temperature", "top_p", "top_k", "min_p", "repeat_penalty"]
PublishTarget = Literal["apple-silicon", "nvidia", "colocated", "cloud"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What one training run asks of the cluster. Workers = nodes x GPUs per node."""

    nodes: int = Field(1, ge=1)
    gpus_per_node: int | None = Field(None, ge=0, description="None: decide from the cluster; 0: CPU workers")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. H100 or A10G")
    cpu_workers_per_node: int = Field(1, ge=1, description="workers per node when training on CPU")
    cpus_per_worker: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _accelerator_needs_gpus(self) -> Resources:
        if self.accelerator_type and self.gpus_per_node == 0:
            raise ValueError("accelerator_type is set but gpus_per_node is 0")
        return self

    def num_workers(self, gpus_per_node: int) -> int:
        return self.nodes * (gpus_per_node if gpus_per_node > 0 else self.cpu_workers_per_node)


class Failure(_Strict):
    max_failures: int = Field(2, ge=-1, description="worker-group restarts before the run fails; -1: unlimited")
    max_resubmits: int = Field(2, ge=0, description="times a run whose job driver was lost (an infrastructure "
                                                    "failure, never a recipe error) is resubmitted in place")


class Imatrix(_Strict):
    """Calibration of the k- and i-quants: an importance matrix from llama.cpp's llama-imatrix."""

    enabled: bool = True
    dataset: str | None = Field(None, description="calibration data: a .txt file, or JSONL of chat "
                                "(`messages`) or `text` rows; default: the recipe's own training set, "
                                "rendered through the chat template it trained with")
    max_tokens: int = Field(65536, ge=64, description="cap on the calibration text, in the model's tokens")
    context: int = Field(512, ge=16, description="llama-imatrix's window; shrunk to half the text when shorter")
    static_twins: bool = Field(True, description="also quantize each level where the matrix is optional "
                               "without it (<level>-static), so the report shows what calibration bought")


class MergeCheck(_Strict):
    """Before quantizing: the merged weights must give what base + adapter give, on the reference windows."""

    max_mean_kld: float = Field(1e-4, ge=0)
    max_kld: float = Field(1e-2, ge=0)


class Export(_Strict):
    gguf: list[GGUFLevel] = Field(default_factory=lambda: list(DEFAULT_GGUF))
    imatrix: Imatrix = Field(default_factory=Imatrix)
    merge_check: MergeCheck = Field(default_factory=MergeCheck)
    mlx: list[int | str] = Field(default_factory=lambda: list(DEFAULT_MLX_BITS),
                                 description="bits (2-8; 16: unquantized float16), bits with a group size "
                                 "('4bit-g32'), or an mlx-lm mixed recipe ('mixed_3_6')")
    reference_text: str | None = Field(None, description="held-out text for reference log-probs; default: shipped")
    reference_top_k: int = Field(16, ge=1, le=256)
    base_gguf: Literal[GGUFLevel, "source"] | None = Field(
        None, description="also export the base model at this level, for the arena (base vs fine-tuned); "
        "'source': a GGUF base's own file, as its users run it (copied, not converted)"
    )

    @field_validator("mlx")
    @classmethod
    def _mlx_specs(cls, specs: list[int | str]) -> list[int | str]:
        for spec in specs:
            mlx_options(spec)  # raises with what is wrong
        return specs

    @model_validator(mode="after")
    def _imatrix_levels_need_one(self) -> Export:
        needing = [lvl for lvl in self.gguf if lvl in NEEDS_IMATRIX]
        if needing and not self.imatrix.enabled:
            raise ValueError(f"{', '.join(needing)} cannot be made without an importance matrix "
                             "(imatrix.enabled is false)")
        return self

    def gguf_levels(self) -> list[str]:
        """Every GGUF level export writes: the recipe's, each followed by its static twin when there is one."""
        out: list[str] = []
        for level in self.gguf:
            out.append(level)
            twin = static_twin(level) if self.imatrix.enabled and self.imatrix.static_twins else None
            if twin:
                out.append(twin)
        return out


_SIGNIFICANT = ("counted only when the fall is significant (an exact paired sign test over the items that changed, "
                "p below lathe.eval.significance_level)")


class Gate(_Strict):
    max_mean_kld: float | None = Field(None, ge=0)
    max_p99_kld: float | None = Field(None, ge=0)
    max_ppl_increase_pct: float | None = Field(None, ge=0)
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    max_flips: int | None = Field(None, ge=0)
    min_task_score_ratio: float | None = Field(None, ge=0)
    max_task_drop: float | None = Field(
        None, ge=0, le=1, description=f"largest fall of the task score against full precision, {_SIGNIFICANT}")
    max_bfcl_drop: float | None = Field(None, ge=0, le=1, description=f"the same for BFCL accuracy; {_SIGNIFICANT}")
    max_ifeval_drop: float | None = Field(
        None, ge=0, le=1, description=f"the same for IFEval prompt-level accuracy; {_SIGNIFICANT}")
    max_ifbench_drop: float | None = Field(
        None, ge=0, le=1, description=f"the same for IFBench prompt-level accuracy; {_SIGNIFICANT}")
    max_docqa_drop: float | None = Field(
        None, ge=0, le=1, description=f"the same for doc QA (answer and citations right); {_SIGNIFICANT}")
    max_lm_eval_drop: float | None = Field(
        None, ge=0, le=1, description=f"the same for each lm-eval task's main metric; {_SIGNIFICANT}")


class Eval(_Strict):
    dataset: str | None = Field(None, description="jsonl of task items, relative to the recipe")
    heldout: str | None = Field(
        None, description="jsonl of questions the fine-tune never saw (paraphrases, new questions of the same "
        "kinds): per level, how often the answer is a training answer reused verbatim")
    domain_text: str | None = Field(
        None, description="text in the fine-tune's domain, held out from training (a validation split rendered "
        "through the chat template): perplexity per level beside the general reference text's")
    retained: str | None = Field(
        None, description="jsonl of task items the base answers right and the fine-tune was never taught (true "
        "facts beside the taught ones): per level, how many it still answers right against the base")
    retained_asked_as: Literal["auto", "chat", "text"] = Field(
        "auto", description="how the retained questions are put, the same way to the base and every level: chat "
        "(through the chat template: an instruction-tuned base), text (few-shot, 'Q: ...' and 'A:' after the file's "
        "first three other questions with their answers: a pretrained base, which never learnt a chat template), "
        "auto (text when the base's GGUF has no chat template of its own)")
    context_length: int | None = Field(None, ge=1)
    gates: dict[str, Gate] = Field(default_factory=dict)
    significance_level: float = Field(
        0.05, gt=0, lt=1, description="a drop against full precision is significant when the exact paired sign "
        "test over the items that changed gives a p-value below this (the *_drop gates and the reports)")
    arena_prompts: list[str] = Field(
        default_factory=list, description="open prompts put to every model side by side, next to the eval set's"
    )
    sweep: dict[SweepParameter, list[float]] = Field(
        default_factory=dict, description="sampling values to sweep the eval set over, e.g. temperature: [0, 0.7]"
    )
    benchmarks: Benchmarks = Field(default_factory=Benchmarks)

    def files(self) -> list[tuple[str, str]]:
        """(field, recipe-relative path) of every file the evaluation reads beside the artifacts."""
        named = [(f"lathe.eval.{key}", getattr(self, key)) for key in ("dataset", "heldout", "retained", "domain_text")]
        named += [("lathe.eval.benchmarks", f) for f in self.benchmarks.files()]
        return [(where, value) for where, value in named if value]


class Publish(_Strict):
    name: str | None = None
    targets: list[PublishTarget] = Field(default_factory=lambda: ["apple-silicon", "nvidia", "colocated", "cloud"])


class LatheBlock(_Strict):
    resources: Resources = Field(default_factory=Resources)
    failure: Failure = Field(default_factory=Failure)
    export: Export = Field(default_factory=Export)
    eval: Eval = Field(default_factory=Eval)
    publish: Publish = Field(default_factory=Publish)

    @model_validator(mode="after")
    def _gates_name_exported_levels(self) -> LatheBlock:
        known = {lvl.lower() for lvl in self.export.gguf_levels()} | {mlx_level(b) for b in self.export.mlx}
        for level in self.eval.gates:
            if level.lower() not in known:
                raise ValueError(f"gate for level {level!r} which is not exported (exported: {', '.join(sorted(known))})")
        return self


# A submitted job's directory for a GGUF base from outside the recipe's (see `Recipe.outside_base`).
SHIPPED_BASE_DIR = ".lathe-base"


@dataclass
class Recipe:
    path: Path
    text: str
    axolotl: dict[str, Any]  # everything but the lathe block, as written
    lathe: LatheBlock = field(default_factory=LatheBlock)
    warnings: list[str] = field(default_factory=list)  # one line each: what validation let through, and why
    cpu_changes: list[str] = field(default_factory=list)  # settings Lathe will change to train on CPU

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.directory / p)

    def outside_base(self) -> Path | None:
        """A GGUF base file outside the recipe's directory (`base_model: ~/models/x.gguf`, where the user's
        llama.cpp, Ollama or LM Studio keeps it), which a submit ships on its own: `shipped_base`."""
        from orchestrator import gguf_base

        base = self.axolotl.get("base_model")
        if not gguf_base.is_gguf(base) or not self.resolve(base).is_file():
            return None
        resolved = self.resolve(base).resolve()
        return None if resolved.is_relative_to(self.directory.resolve()) else resolved

    def shipped_base(self) -> str | None:
        """Where `outside_base` travels in a submitted job's working directory (and under the run's inputs in
        the store), relative to it; the job's `base_file` argument names it."""
        outside = self.outside_base()
        return f"{SHIPPED_BASE_DIR}/{outside.name}" if outside is not None else None

    def local_files(self) -> list[str]:
        """Recipe-relative paths of the local files and directories the recipe names (an `outside_base` is
        shipped apart)."""
        named: list[tuple[str, str]] = []
        for key in ("datasets", "test_datasets"):
            for n, ds in enumerate(self.axolotl.get(key) or []):
                if isinstance(ds, dict) and isinstance(ds.get("path"), str):
                    named.append((f"{key}[{n}].path", ds["path"]))
        for key in ("deepspeed", "base_model"):
            if isinstance(self.axolotl.get(key), str) and not (key == "base_model" and self.outside_base()):
                named.append((key, self.axolotl[key]))
        named += self.lathe.eval.files()
        if self.lathe.export.reference_text:
            named.append(("lathe.export.reference_text", self.lathe.export.reference_text))
        if self.lathe.export.imatrix.dataset:
            named.append(("lathe.export.imatrix.dataset", self.lathe.export.imatrix.dataset))
        out = []
        for where, value in named:
            if Path(value).is_absolute() or not self.resolve(value).exists():
                continue  # a path on the cluster's nodes, or a hub id
            resolved = self.resolve(value).resolve()
            if not resolved.is_relative_to(self.directory.resolve()):
                raise RecipeError(self.name, where, f"{value} is outside the recipe's directory; "
                                  "put it next to the recipe so it can be shipped")
            out.append(resolved.relative_to(self.directory.resolve()).as_posix())
        return sorted(set(out))


def read_yaml(path: Path) -> tuple[str, dict[str, Any]]:
    """Read a recipe file as text and mapping, or raise a one-line RecipeError."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(name, "", f"no such file '{path}'") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise RecipeError(name, "", f"cannot read: {exc.__class__.__name__}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise RecipeError(name, where, f"invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(name, "", "a recipe must be a YAML mapping of Axolotl settings")
    return text, data


def load(path: str | Path) -> Recipe:
    """Parse a recipe without validating its Axolotl part (see `orchestrator.validate`)."""
    from orchestrator.schema import parse_model  # local: keeps `import recipe` light

    path = Path(path)
    text, data = read_yaml(path)
    block = data.pop("lathe", None) or {}
    if not isinstance(block, dict):
        raise RecipeError(path.name, "lathe", "must be a mapping")
    lathe = parse_model(LatheBlock, block, path.name, "lathe")
    return Recipe(path=path, text=text, axolotl=data, lathe=lathe)


def lathe_block_of(recipe_file: Path) -> LatheBlock:
    """The lathe: block of a run's copy of its recipe (the defaults when the run has none)."""
    from orchestrator.schema import parse_model

    if not recipe_file.is_file():
        return LatheBlock()
    _, data = read_yaml(recipe_file)
    return parse_model(LatheBlock, data.get("lathe") or {}, recipe_file.name, "lathe")


# Axolotl auto-enables these Triton kernels for LoRA; they allocate on CUDA and crash on CPU.
CPU_UNSAFE_KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def for_cpu(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Axolotl config with what Lathe can make CPU-safe made so, and the keys it changed."""
    if cfg.get("adapter") not in ("lora", "qlora"):
        return cfg, []
    changed = [key for key in CPU_UNSAFE_KERNELS if cfg.get(key) is not False]
    return {**cfg, **dict.fromkeys(changed, False)}, changed


def cpu_note(changed: list[str]) -> str:
    return f"{', '.join(changed)} set to false: training on CPU (Axolotl's Triton LoRA kernels need CUDA)"
