"""Axolotl's own checks of a recipe's config: its pydantic models (unknown keys, with did-you-means), the
names it accepts (optimizers, schedulers, dataset types) and its `validate_config`.

Importing them costs ~20 s of CPU (torch, transformers, peft), so `validate` asks for them last, and only
for a config not accepted before (`validated`); they run here in the validating process, or in the schema
daemon that keeps them imported (`schema_daemon`), alike.
"""

from __future__ import annotations

from typing import Any

from orchestrator import trainability
from orchestrator.errors import RecipeError, RecipeErrors
from orchestrator.quiet import quiet_stderr


def _axolotl_models(cfg: dict[str, Any]):
    with quiet_stderr():
        from axolotl.utils.config import merge_input_args
        from axolotl.utils.schemas.config import AxolotlInputConfig

    if cfg.get("plugins"):
        from axolotl.utils.config import prepare_plugins
        from axolotl.utils.dict import DictDefault

        prepare_plugins(DictDefault(cfg))
        return merge_input_args()[1]
    return AxolotlInputConfig


def warm() -> None:
    """Import what `verdict` needs (the schema daemon does it once, before its first request)."""
    with quiet_stderr():
        _axolotl_models({})
        trainability.known_names()
        from axolotl.utils.config import validate_config  # noqa: F401


def verdict(name: str, cfg: dict[str, Any]) -> list[str]:
    """Axolotl's own checks of `cfg` (recipe file `name`): raise its problems as RecipeErrors, or return
    the warnings. Run here, or in the schema daemon (`orchestrator.schema_daemon`), alike."""
    from pydantic import ValidationError

    from orchestrator.schema import errors_from, unknown_keys

    model = _axolotl_models(cfg)
    ignored: list[RecipeError] = []
    errors = unknown_keys(cfg, [model], name, "", ignored)
    with quiet_stderr():  # importing Axolotl's data modules warns about experimental TRL APIs
        known = trainability.known_names()
    errors += trainability.check_names(cfg, name, known)
    if errors:
        raise RecipeErrors(errors)

    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.datasets import SFTDataset

    # Axolotl converts dataset entries before validating and loses their index; do it here first.
    if not cfg.get("rl"):
        for i, ds in enumerate(cfg.get("datasets") or []):
            try:
                SFTDataset(**ds)
            except ValidationError as exc:
                raise RecipeErrors(errors_from(exc, ds, name, f"datasets[{i}]")) from None
    # validate_config logs its normalisations; a problem comes back as an error, caught inside the
    # quiet block so that block does not replay the chatter it hid.
    problem: Exception | None = None
    with quiet_stderr():
        try:
            validate_config(DictDefault(cfg))
            return [str(e) for e in ignored]
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            problem = exc
    if isinstance(problem, ValidationError):
        raise RecipeErrors(errors_from(problem, cfg, name, "")) from None
    raise RecipeError(name, "", str(problem).splitlines()[0]) from None
