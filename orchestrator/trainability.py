"""Recipe values Axolotl's schema lets through but that cannot train: caught at validate time.

Axolotl types most settings loosely (a learning rate is `str | float`, an optimizer any string), so a
zero batch size, a misspelled scheduler or evaluation without an eval set only fail minutes into a
run, on the GPUs. `check` covers ranges and combinations (no imports); `check_names` the names that
must come from a known set (optimizers, schedulers, dataset types), read from the installed
transformers and Axolotl.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import RecipeError
from orchestrator.schema import suggest


@dataclass(frozen=True)
class Range:
    key: str
    ok: Callable[[float], bool]
    wanted: str  # what the value must be, as the error says it
    integer: bool = False
    only_with_adapter: bool = False  # lora_* settings matter only when an adapter is trained


STEPS_OR_FRACTION = "a whole number of steps, or a fraction of the run between 0 and 1"

RANGES = (
    Range("learning_rate", lambda v: 0 < v < 1, "more than 0 and less than 1 (a rate of 1 or more diverges at once)"),
    # As HF's TrainingArguments takes them: epochs are a float (0.5 trains on half the data once), max_steps
    # -1 is its "not set" (the epochs decide), and a logging/saving interval below 1 is a fraction of the
    # run's steps, while one above 1 must be whole.
    Range("num_epochs", lambda v: v > 0, "more than 0 (a fraction trains on part of the data)"),
    Range("max_steps", lambda v: v >= 1 or v == -1, "at least 1, or -1 (not set: the epochs decide)", integer=True),
    Range("micro_batch_size", lambda v: v >= 1, "at least 1", integer=True),
    Range("gradient_accumulation_steps", lambda v: v >= 1, "at least 1", integer=True),
    Range("sequence_len", lambda v: v >= 1, "at least 1", integer=True),
    Range("lora_r", lambda v: v >= 1, "at least 1", integer=True, only_with_adapter=True),
    Range("lora_alpha", lambda v: v > 0, "more than 0", only_with_adapter=True),
    Range("lora_dropout", lambda v: 0 <= v < 1, "at least 0 and less than 1", only_with_adapter=True),
    Range("warmup_ratio", lambda v: 0 <= v < 1, "at least 0 and less than 1"),
    Range("warmup_steps", lambda v: v >= 0, "at least 0", integer=True),
    Range("weight_decay", lambda v: v >= 0, "at least 0"),
    Range("max_grad_norm", lambda v: v > 0, "more than 0"),
    Range("logging_steps", lambda v: v > 0 and (v < 1 or v == int(v)), STEPS_OR_FRACTION),
    Range("save_steps", lambda v: v > 0 and (v < 1 or v == int(v)), STEPS_OR_FRACTION),
    Range("save_total_limit", lambda v: v >= 1, "at least 1 when set", integer=True),
    Range("cosine_min_lr_ratio", lambda v: 0 <= v <= 1, "between 0 and 1"),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)  # YAML reads 2e-4 as text; Axolotl converts it, so must this
    except (TypeError, ValueError):
        return None


def _ranges(cfg: dict[str, Any], name: str) -> list[RecipeError]:
    errors = []
    adapter = cfg.get("adapter") in ("lora", "qlora")
    for r in RANGES:
        value = cfg.get(r.key)
        if value is None or (r.only_with_adapter and not adapter):
            continue
        number = _number(value)
        if number is None:
            errors.append(RecipeError(name, r.key, f"{value!r} is not a number"))
        elif r.integer and number != int(number):
            errors.append(RecipeError(name, r.key, f"{value!r} must be a whole number, {r.wanted}"))
        elif not r.ok(number):
            errors.append(RecipeError(name, r.key, f"{value!r} must be {r.wanted}"))
    val = _number(cfg.get("val_set_size"))
    if val is not None and (val < 0 or (val >= 1 and val != int(val))):
        errors.append(RecipeError(name, "val_set_size", f"{cfg['val_set_size']!r} must be a fraction of the data "
                                                         "(0 to 1) or a whole number of rows"))
    return errors


def _combinations(cfg: dict[str, Any], name: str, max_positions: int | None) -> list[RecipeError]:
    errors = []
    no_eval_set = not (_number(cfg.get("val_set_size")) or 0) and not cfg.get("test_datasets")
    for key in ("evals_per_epoch", "eval_steps", "load_best_model_at_end", "do_bench_eval"):
        if no_eval_set and cfg.get(key):
            errors.append(RecipeError(name, key, "needs an eval set: set val_set_size above 0, or test_datasets"))
    if cfg.get("adapter") in ("lora", "qlora") and not cfg.get("lora_target_linear") \
            and not cfg.get("lora_target_modules") and not cfg.get("peft_layers_to_transform"):
        errors.append(RecipeError(name, "adapter", f"{cfg['adapter']} with no target modules trains nothing: set "
                                                   "lora_target_linear: true or lora_target_modules"))
    seq = _number(cfg.get("sequence_len"))
    if max_positions and seq and seq > max_positions:
        errors.append(RecipeError(name, "sequence_len", f"{int(seq)} is longer than the base model's "
                                                        f"{max_positions} positions"))
    return errors


def check(cfg: dict[str, Any], name: str, max_positions: int | None = None) -> list[RecipeError]:
    """Ranges and combinations, one line each; `max_positions`: the base model's, when known offline."""
    return _ranges(cfg, name) + _combinations(cfg, name, max_positions)


@dataclass(frozen=True)
class KnownNames:
    optimizers: frozenset[str]
    schedulers: frozenset[str]
    dataset_types: frozenset[str]  # the part of `type:` before any ':' or '.'


def known_names() -> KnownNames:
    """What the installed transformers and Axolotl accept, read from their source files: importing the
    modules that hold these lists costs ~20 s (`orchestrator.installed_source`)."""
    from orchestrator.installed_source import dict_keys, enum_values, submodule_names

    strategies = {name for name in submodule_names("axolotl.prompt_strategies") if not name.startswith("_")}
    return KnownNames(
        optimizers=enum_values("transformers.training_args", "OptimizerNames")
        | enum_values("axolotl.utils.schemas.enums", "CustomSupportedOptimizers"),
        schedulers=enum_values("transformers.trainer_utils", "SchedulerType") | {"one_cycle", "rex"},  # Axolotl's two
        dataset_types=frozenset(strategies | dict_keys("axolotl.utils.data.wrappers", "DATASET_HANDLERS")
                                | {"stepwise_supervised"}),
    )


def check_names(cfg: dict[str, Any], name: str, known: KnownNames) -> list[RecipeError]:
    errors = []
    for key, allowed in (("optimizer", known.optimizers), ("lr_scheduler", known.schedulers)):
        value = cfg.get(key)
        if isinstance(value, str) and value not in allowed:
            errors.append(RecipeError(name, key, f"unknown {key.replace('lr_', '')} {value!r}{suggest(value, allowed)}"))
    for field in ("datasets", "test_datasets"):
        for i, ds in enumerate(cfg.get(field) or []):
            kind = ds.get("type") if isinstance(ds, dict) else None
            if not isinstance(kind, str):
                continue  # a user-defined format (a mapping): Axolotl checks it
            base = kind.split(":")[0]
            if "." in base:
                continue  # a module path: the user's own strategy, importable only where it trains
            if base not in known.dataset_types:
                errors.append(RecipeError(name, f"{field}[{i}].type",
                                          f"unknown dataset type {kind!r}{suggest(base, known.dataset_types)}"))
    return errors
