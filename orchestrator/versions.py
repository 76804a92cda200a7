"""Installed versions of the packages a run depends on, for run records and manifests."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


def installed(distributions: Iterable[str]) -> dict[str, str]:
    """Version of each installed distribution; absent ones are left out, not guessed."""
    out: dict[str, str] = {}
    for dist in distributions:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
