"""Planted credentials, and a sweep that finds them wherever a run wrote anything."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


def plant(tag: str, seed: str | None = None) -> dict[str, str]:
    """Fresh fake credentials of the kinds a user has in the environment; `tag` makes them traceable.
    With a `seed` (a test run's id), every process that plants the same tag gets the same values."""

    def token(name: str, size: int) -> str:
        if seed is None:
            return secrets.token_hex(size)
        return hashlib.sha256(f"{seed}/{tag}/{name}".encode()).hexdigest()[:2 * size]

    tag = tag.upper()
    return {
        "AWS_ACCESS_KEY_ID": ("AKIA" + tag + token("key-id", 8).upper())[:20],
        "AWS_SECRET_ACCESS_KEY": f"{tag.lower()}-" + token("secret", 16),
        "AWS_SESSION_TOKEN": "session-" + token("session", 16),
        "HF_TOKEN": "hf_" + token("hf", 16),
        "HUGGING_FACE_HUB_TOKEN": "hf_" + token("hub", 16),
    }


@dataclass
class Sweep:
    found: list[str] = field(default_factory=list)  # '<where>: <which value>' for every hit
    files: int = 0
    bytes: int = 0  # what was read: printed, so a reader sees the sweep was not empty
    skipped: list[str] = field(default_factory=list)  # '<path> (why)': links, oversized or unreadable files

    def summary(self) -> str:
        """What was read and what was not, for the figures."""
        kinds: dict[str, int] = {}
        for entry in self.skipped:
            why = entry.rsplit(" (", 1)[-1].rstrip(")").split(":")[0]
            kinds[why] = kinds.get(why, 0) + 1
        left = ", ".join(f"{n} {why}" for why, n in sorted(kinds.items())) or "none"
        return f"{self.files} files and outputs ({self.bytes / 1e6:.0f} MB); not read: {left}"


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
                if path.is_symlink():
                    out.skipped.append(f"{path} (link)")
                elif path.is_dir():
                    continue
                elif not path.is_file():
                    out.skipped.append(f"{path} (not a regular file)")  # a socket or a pipe
                elif path.stat().st_size > max_file_bytes:
                    out.skipped.append(f"{path} (over {max_file_bytes >> 20} MB)")
                else:
                    check(str(path), path.read_bytes())
            except OSError as exc:
                out.skipped.append(f"{path} (unreadable: {exc.__class__.__name__})")  # e.g. removed by Ray meanwhile
    return out
