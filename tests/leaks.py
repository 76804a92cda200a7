"""Planted credentials, and a sweep that finds them wherever a run wrote anything."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


def plant(tag: str) -> dict[str, str]:
    """Fresh fake credentials of the kinds a user has in the environment; `tag` makes them traceable."""
    tag = tag.upper()
    return {
        "AWS_ACCESS_KEY_ID": ("AKIA" + tag + secrets.token_hex(8).upper())[:20],
        "AWS_SECRET_ACCESS_KEY": f"{tag.lower()}-" + secrets.token_hex(16),
        "AWS_SESSION_TOKEN": "session-" + secrets.token_hex(16),
        "HF_TOKEN": "hf_" + secrets.token_hex(16),
        "HUGGING_FACE_HUB_TOKEN": "hf_" + secrets.token_hex(16),
    }


@dataclass
class Sweep:
    found: list[str] = field(default_factory=list)  # '<where>: <which value>' for every hit
    files: int = 0
    bytes: int = 0  # what was read: printed, so a reader sees the sweep was not empty


def sweep(values: Iterable[str], roots: Iterable[Path] = (), texts: Mapping[str, str | bytes] | None = None,
          max_file_bytes: int = 200 << 20) -> Sweep:
    """Look for `values` in the given texts and in every regular file under each root, read whole
    whatever its suffix: logs, JSON, SQLite databases, Ray's pickled state and model files alike."""
    needles = [(v, v.encode()) for v in values if v]
    out = Sweep()

    def check(where: str, data: bytes) -> None:
        out.files, out.bytes = out.files + 1, out.bytes + len(data)
        out.found.extend(f"{where}: {v[:6]}..." for v, raw in needles if raw in data)

    for where, text in (texts or {}).items():
        check(where, text.encode() if isinstance(text, str) else text)
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []:
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > max_file_bytes:
                    continue
                check(str(path), path.read_bytes())
            except OSError:
                continue  # a socket, or a file Ray removed while we walked
    return out
