"""The reference file format shared by export (writes) and evaluation (reads).

reference/reference.npz holds, for each window of held-out text: the token ids
(flat, with `lengths`), and for each position but the last the full-precision
model's most likely token ids and their log-probs (as many per position as
`counts` says: enough to cover 99.9% of the probability) and the log-prob of the
actual next token.
reference/reference.json holds the metadata, the tokenizer fingerprint included.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A probe that exercises spaces, newlines, digits, accents and emoji; its ids identify a tokenizer.
FINGERPRINT_PROBE = "Hello, world!\n\n  Two  spaces\tand a tab. 1234567 café naïve 🦙🔥 {\"k\": [1, 2]}"


def fingerprint(vocab_size: int, probe_ids: list[int]) -> str:
    """Same tokenizer -> same fingerprint, whichever runtime produced the ids."""
    blob = json.dumps({"vocab_size": vocab_size, "probe": [int(i) for i in probe_ids]}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Reference:
    meta: dict[str, Any]
    windows: list[np.ndarray]  # token ids per window
    top_ids: list[np.ndarray]  # (len-1, K) per window; K the widest position's count, the rest padding
    top_logprobs: list[np.ndarray]  # -inf where padded
    target_logprob: list[np.ndarray]  # (len-1,) per window

    @property
    def perplexity(self) -> float:
        return float(self.meta["perplexity"])


def load(directory: Path) -> Reference:
    data = np.load(directory / "reference.npz")
    meta = json.loads((directory / "reference.json").read_text())
    bounds = np.cumsum(np.concatenate([[0], data["lengths"]]))
    pred = np.cumsum(np.concatenate([[0], data["lengths"] - 1]))
    windows = [data["tokens"][a:b] for a, b in itertools.pairwise(bounds)]

    def split(arr: np.ndarray) -> list[np.ndarray]:
        return [arr[a:b] for a, b in itertools.pairwise(pred)]

    if "counts" not in data:  # a fixed top-K per position (references written before coverage)
        return Reference(meta, windows, split(data["top_ids"]), split(data["top_logprobs"]),
                         split(data["target_logprob"]))
    ids, logprobs = padded(data["counts"], data["top_ids"], data["top_logprobs"])
    return Reference(meta, windows, split(ids), split(logprobs), split(data["target_logprob"]))


def padded(counts: np.ndarray, flat_ids: np.ndarray, flat_lp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-position top tokens as rectangles: padding has id 0 and log-prob -inf (probability 0)."""
    width = int(counts.max()) if counts.size else 0
    ids = np.zeros((counts.size, width), dtype=np.int32)
    logprobs = np.full((counts.size, width), -np.inf, dtype=np.float32)
    mask = np.arange(width)[None, :] < counts[:, None]
    ids[mask] = flat_ids
    logprobs[mask] = flat_lp
    return ids, logprobs
