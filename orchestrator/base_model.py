"""Where a recipe's base model comes from, made trainable: a hub id or a local directory as it is, a
`tiny://` URI built (`tinymodel`), a `.gguf` file dequantized (`gguf_base`). Both are made once, into
the cache, and found there afterwards by every process that asks (the run, its workers, its export)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator import gguf_base, tinymodel


def resolve(base_model: str, recipe_name: str = "recipe", say: Callable[[str], None] = lambda _: None) -> str:
    """A name Axolotl and transformers can load: the cache's directory for a built or converted base."""
    if gguf_base.is_gguf(base_model):
        return str(gguf_base.prepare(Path(base_model), say))
    return tinymodel.resolve_base_model(base_model, recipe_name)


def is_made(base_model: str) -> bool:
    """Whether resolving costs nothing now (nothing to build, or built already)."""
    if gguf_base.is_gguf(base_model):
        return Path(base_model).is_file() and gguf_base.cached_dir(Path(base_model)) is not None
    return not base_model.startswith(tinymodel.TINY_SCHEME) or tinymodel.is_built(base_model)
