"""Stage 1, validate: is this recipe going to train, checked offline before anything ships.

Cheap checks first (the ``lathe:`` block, files, dataset rows, CPU safety), then
Axolotl's own pydantic schema and `validate_config`, which import torch, transformers and peft
(~25 s of CPU): a config it accepted is remembered (`orchestrator.validated`) and not checked again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import axolotl_schema, gguf_base, schema_daemon, tinymodel, trainability, turn_end, validated
from orchestrator.datasets import RowError, check_dataset, iter_rows
from orchestrator.errors import RecipeError, RecipeErrors
from orchestrator.recipe import Recipe, for_cpu, load


def _check_base_model(recipe: Recipe) -> list[RecipeError]:
    base = recipe.axolotl.get("base_model")
    if not isinstance(base, str) or not base:
        return [RecipeError(recipe.name, "base_model", "missing: a hub id, a local path or tiny://llama")]
    if gguf_base.is_gguf(base):
        return [RecipeError(recipe.name, "base_model", problem)
                for problem in gguf_base.problems(recipe.resolve(base))]
    if recipe.lathe.export.base_gguf == "source":
        return [RecipeError(recipe.name, "lathe.export.base_gguf",
                            "'source' is a GGUF base's own file, and base_model is not a .gguf file")]
    if base.startswith(tinymodel.TINY_SCHEME):
        try:
            tinymodel.TinySpec.from_uri(base)
        except (ValueError, TypeError) as exc:
            return [RecipeError(recipe.name, "base_model", str(exc))]
    elif base.startswith((".", "/", "~")) and not recipe.resolve(base).exists():
        return [RecipeError(recipe.name, "base_model", f"no such directory '{base}'")]
    return []


def _check_datasets(recipe: Recipe) -> list[RecipeError]:
    errors: list[RecipeError] = []
    for key in ("datasets", "test_datasets"):
        entries = recipe.axolotl.get(key)
        if entries is None:
            if key == "datasets":
                errors.append(RecipeError(recipe.name, key, "missing: at least one dataset is needed"))
            continue
        if not isinstance(entries, list) or not entries:
            errors.append(RecipeError(recipe.name, key, "must be a non-empty list"))
            continue
        for i, ds in enumerate(entries):
            errors.extend(check_dataset(ds, f"{key}[{i}]", recipe.name, recipe.directory))
    return errors


def _check_trainable(recipe: Recipe) -> list[RecipeError]:
    base = recipe.axolotl.get("base_model")
    max_positions = None
    if isinstance(base, str) and base.startswith(tinymodel.TINY_SCHEME):
        try:
            max_positions = tinymodel.TinySpec.from_uri(base).max_positions
        except (ValueError, TypeError):
            pass  # _check_base_model says what is wrong with it
    return trainability.check(recipe.axolotl, recipe.name, max_positions)


def _check_turn_end(recipe: Recipe) -> list[RecipeError]:
    return [RecipeError(recipe.name, field, problem) for field, problem in turn_end.problems(recipe)]


def _check_lathe_files(recipe: Recipe) -> list[RecipeError]:
    errors: list[RecipeError] = []
    for where, ref in (("lathe.export.reference_text", recipe.lathe.export.reference_text),
                       ("lathe.export.imatrix.dataset", recipe.lathe.export.imatrix.dataset),
                       ("lathe.eval.domain_text", recipe.lathe.eval.domain_text)):
        if ref and not recipe.resolve(ref).is_file():
            errors.append(RecipeError(recipe.name, where, f"no such file '{ref}'"))
    for key in ("dataset", "heldout"):
        evalset = getattr(recipe.lathe.eval, key)
        if not evalset:
            continue
        path = recipe.resolve(evalset)
        if not path.is_file():
            errors.append(RecipeError(recipe.name, f"lathe.eval.{key}", f"no such file '{evalset}'"))
            continue
        try:
            rows = [row for _, row in iter_rows(path)]
            if not rows:
                raise RowError("has no items")
            bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
            if bad is not None:
                raise RowError(f"item {bad} must be a JSON object")
        except RowError as exc:
            errors.append(RecipeError(recipe.name, f"lathe.eval.{key}", f"{path.name}: {exc}"))
    return errors


def _check_benchmarks(recipe: Recipe) -> list[RecipeError]:
    from orchestrator.evaluation.benchmarks import suites as benchmarks

    return [RecipeError(recipe.name, f"lathe.eval.benchmarks.{suite}", problem)
            for suite, problem in benchmarks.problems(recipe.lathe.eval.benchmarks, recipe.directory)]


def _check_deepspeed(recipe: Recipe) -> list[RecipeError]:
    ds = recipe.axolotl.get("deepspeed")
    if not ds:
        return []
    if not isinstance(ds, str):
        return [RecipeError(recipe.name, "deepspeed", "must be a path to a DeepSpeed JSON config")]
    path = recipe.resolve(ds)
    if not path.is_file():
        return [RecipeError(recipe.name, "deepspeed", f"no such file '{ds}'")]
    try:
        json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [RecipeError(recipe.name, "deepspeed", f"{path.name}: invalid JSON ({exc.__class__.__name__})")]
    return []


def _on_cpu(recipe: Recipe, gpus_per_node: int | None) -> bool:
    gpus = recipe.lathe.resources.gpus_per_node
    return (gpus if gpus is not None else gpus_per_node) == 0


def _check_cpu_safety(recipe: Recipe, gpus_per_node: int | None) -> list[RecipeError]:
    """On CPU: what Lathe sets itself is said once (a warning); what it cannot fix is an error."""
    if not _on_cpu(recipe, gpus_per_node):
        return []
    cfg, name = recipe.axolotl, recipe.name
    errors: list[RecipeError] = []
    recipe.cpu_changes = for_cpu(cfg)[1]
    gpu_only = {
        "load_in_4bit": "4-bit loading (bitsandbytes) needs a GPU",
        "load_in_8bit": "8-bit loading (bitsandbytes) needs a GPU",
        "fp16": "fp16 mixed precision needs a GPU; use bf16 or fp32 on CPU",
        "flash_attention": "flash attention needs a GPU",
        "deepspeed": "DeepSpeed training needs GPUs",
    }
    for key, why in gpu_only.items():
        if cfg.get(key):
            errors.append(RecipeError(name, key, f"{why} (this recipe trains on CPU: lathe.resources.gpus_per_node is 0)"))
    if str(cfg.get("attn_implementation") or "").startswith("flash_attention"):
        errors.append(RecipeError(name, "attn_implementation", "flash attention needs a GPU; use sdpa or eager on CPU"))
    if cfg.get("adapter") == "qlora":
        errors.append(RecipeError(name, "adapter", "qlora needs a GPU (bitsandbytes)"))
    return errors


def axolotl_config(recipe: Recipe) -> dict[str, Any]:
    """The recipe as Axolotl will see it: relative paths made absolute against the recipe's directory."""
    cfg = json.loads(json.dumps(recipe.axolotl))  # deep copy of plain data
    for key in ("datasets", "test_datasets"):
        for ds in cfg.get(key) or []:
            if isinstance(ds, dict) and isinstance(ds.get("path"), str):
                resolved = recipe.resolve(ds["path"])
                if resolved.exists():
                    ds["path"] = str(resolved.resolve())
    for key in ("deepspeed", "base_model"):
        value = cfg.get(key)
        local = isinstance(value, str) and (value.startswith((".", "~")) or gguf_base.is_gguf(value))
        if local and recipe.resolve(value).exists():
            cfg[key] = str(recipe.resolve(value).resolve())
    return cfg


def check_axolotl_schema(recipe: Recipe, on_cpu: bool = False, say: Callable[[str], None] = lambda _: None,
                         start_schema_process: bool = False) -> None:
    """Validate against Axolotl's pydantic model (the config as it will train: made CPU-safe on CPU).
    A config accepted before, unchanged, is not checked again (`orchestrator.validated`)."""
    cfg = axolotl_config(recipe)
    if on_cpu:
        cfg = for_cpu(cfg)[0]
    cache_key = validated.key(cfg)
    warnings = validated.recall(cache_key)
    if warnings is None:
        warnings = schema_daemon.ask(recipe.name, cfg, start_schema_process, say)
        if warnings is None:
            warnings = axolotl_schema.verdict(recipe.name, cfg)
        validated.remember(cache_key, warnings)
    recipe.warnings += warnings


def validate(path: str | Path, *, gpus_per_node: int | None = None, axolotl_schema: bool = True,
             say: Callable[[str], None] = lambda _: None, start_schema_process: bool = False) -> Recipe:
    """Check a recipe; return it parsed, or raise RecipeError(s) with one line per problem.

    `gpus_per_node` is what the target cluster offers, when known; the recipe's
    own ``lathe.resources.gpus_per_node`` wins over it.
    """
    recipe = load(path)
    errors = (
        _check_base_model(recipe)
        + _check_datasets(recipe)
        + _check_lathe_files(recipe)
        + _check_benchmarks(recipe)
        + _check_deepspeed(recipe)
        + _check_cpu_safety(recipe, gpus_per_node)
        + _check_trainable(recipe)
    )
    if not errors:  # the base is known good: does the chat template let its turns' ends be trained?
        errors = _check_turn_end(recipe)
    if errors:
        raise RecipeErrors(errors) if len(errors) > 1 else errors[0]
    if axolotl_schema:
        check_axolotl_schema(recipe, _on_cpu(recipe, gpus_per_node), say, start_schema_process)
    return recipe
