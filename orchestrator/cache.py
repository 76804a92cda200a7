"""Where Lathe keeps what it can make again (tiny bases, bases made from GGUF files, validations):
``$LATHE_CACHE``, or ``$XDG_CACHE_HOME/lathe``, or ``~/.cache/lathe``. Deleting it costs time only."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    base = os.environ.get("LATHE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lathe")
    return Path(base)
