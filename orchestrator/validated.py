"""Recipes Axolotl's schema has already accepted, remembered so the next validation skips the import.

Axolotl's schema check (`validate.check_axolotl_schema`) imports torch, transformers and peft through
Axolotl's own `validate_config`: ~25 s of CPU on a laptop, for every `lathe validate` and `lathe run`.
The outcome depends only on the config Axolotl sees, the files it names and the installed versions,
so an acceptance is stored under a hash of exactly those, with the warnings it produced. A rejection
is never stored: a recipe with a problem is checked afresh every time. Anything that changes the
hash (an edited value, a touched file, another Axolotl, transformers, pydantic or Lathe) means the
schema runs again. `LATHE_NO_VALIDATION_CACHE=1` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.cache import cache_home

_SOURCES = ("validate.py", "schema.py", "trainability.py", "recipe.py", "installed_source.py", "validated.py",
            "schema_daemon.py", "axolotl_schema.py")
_VERSIONED = ("axolotl", "transformers", "pydantic", "lathe")


def _cache_dir() -> Path:
    return cache_home() / "validated"


def _files_named(value: Any, out: dict[str, list[int]]) -> None:
    """Size and mtime of every existing file a string in the config names (datasets, templates, a
    DeepSpeed config): a touched file is a new key."""
    if isinstance(value, dict):
        for item in value.values():
            _files_named(item, out)
    elif isinstance(value, list):
        for item in value:
            _files_named(item, out)
    elif isinstance(value, str) and value.startswith("/") and len(value) < 4096:
        try:
            st = os.stat(value)
        except OSError:
            return
        out[value] = [st.st_size, st.st_mtime_ns]


def key(cfg: dict[str, Any]) -> str | None:
    """The hash an acceptance of `cfg` is stored under; None when it must not be cached (plugins:
    their code is not in the hash)."""
    if os.environ.get("LATHE_NO_VALIDATION_CACHE") or cfg.get("plugins"):
        return None
    files: dict[str, list[int]] = {}
    _files_named(cfg, files)
    digest = hashlib.sha256()
    digest.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    digest.update(json.dumps(files, sort_keys=True).encode())
    digest.update(code_key().encode())
    return digest.hexdigest()


def code_key() -> str:
    """The installed versions and Lathe's checker sources: what a verdict depends on besides the config."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for dist in _VERSIONED:
        try:
            digest.update(f"{dist}=={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist} absent\n".encode())
    for name in _SOURCES:  # Lathe's own checks: an edited checker re-checks (an editable install's version does not move)
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def recall(cache_key: str | None) -> list[str] | None:
    """The warnings of an earlier acceptance under this key, or None if there was none."""
    if cache_key is None:
        return None
    try:
        entry = json.loads((_cache_dir() / f"{cache_key}.json").read_text())
    except (OSError, ValueError):
        return None
    warnings = entry.get("warnings") if isinstance(entry, dict) else None
    return [str(w) for w in warnings] if isinstance(warnings, list) else None


def remember(cache_key: str | None, warnings: list[str]) -> None:
    """Store an acceptance, atomically; a cache that cannot be written is only a slower next time."""
    if cache_key is None:
        return
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{cache_key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"warnings": warnings}))
        tmp.replace(folder / f"{cache_key}.json")
    except OSError:
        pass
