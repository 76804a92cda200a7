"""Keep third-party import chatter (torch, bitsandbytes, DeepSpeed) off the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

# Library switches that stop the noise at its source; harmless where unused.
QUIET_ENV = {
    "AXOLOTL_DO_NOT_TRACK": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DS_ACCELERATOR": "cpu",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


@contextlib.contextmanager
def quiet_stderr(switches: bool = True) -> Iterator[None]:
    """Silence fd 2 (C-level writes included); on an exception, replay what was hidden. `switches`: also
    set QUIET_ENV (offline hub included), which code that may fetch from the hub must not."""
    for key, value in QUIET_ENV.items() if switches else ():
        if key != "DS_ACCELERATOR" or not _has_cuda_driver():
            os.environ.setdefault(key, value)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read()[-8000:])
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _has_cuda_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")
