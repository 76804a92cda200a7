"""The reference file format shared by export (writes) and evaluation (reads).

reference/reference.npz holds, for each window of held-out text: the token ids
(flat, with `lengths`), and for each position but the last the full-precision
model's most likely token ids and their log-probs (as many per position as
`counts` says: enough to cover 99.9% of the probability, up to a cap), tokens drawn
from the rest in proportion to their probability (`tail_counts`, `tail_ids`,
`tail_logprobs`) and the log-prob of the actual next token.
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
    # Per window, the kept tokens of its positions (all but the last), flat and in position order: how many
    # each position kept (`counts`), their ids and their log-probs, the most likely first. Ragged, not
    # padded to the widest position: on a 262k vocabulary one uncertain position may keep thousands.
    counts: list[np.ndarray]  # (len-1,)
    top_ids: list[np.ndarray]  # (counts.sum(),)
    top_logprobs: list[np.ndarray]  # (counts.sum(),)
    target_logprob: list[np.ndarray]  # (len-1,) per window
    # Per window, likewise: tokens drawn from each position's tail (what its kept tokens leave), in proportion
    # to their probability, and their log-probs; 0 drawn where the tail is negligible (or in references
    # written before the tail was sampled).
    tail_counts: list[np.ndarray]
    tail_ids: list[np.ndarray]
    tail_logprobs: list[np.ndarray]

    @property
    def perplexity(self) -> float:
        return float(self.meta["perplexity"])


def load(directory: Path) -> Reference:
    data = np.load(directory / "reference.npz")
    meta = json.loads((directory / "reference.json").read_text())
    bounds = np.cumsum(np.concatenate([[0], data["lengths"]]))
    pred = np.cumsum(np.concatenate([[0], data["lengths"] - 1]))
    windows = [data["tokens"][a:b] for a, b in itertools.pairwise(bounds)]
    if "counts" in data:
        counts, flat_ids, flat_lp = data["counts"], data["top_ids"], data["top_logprobs"]
    else:  # a fixed top-K per position, (positions, K) (references written before coverage)
        counts = np.full(data["top_ids"].shape[0], data["top_ids"].shape[1], dtype=np.int32)
        flat_ids, flat_lp = data["top_ids"].reshape(-1), data["top_logprobs"].reshape(-1)
    if "tail_counts" in data:
        tail_counts, tail_ids, tail_lp = data["tail_counts"], data["tail_ids"], data["tail_logprobs"]
    else:
        tail_counts = np.zeros(len(counts), dtype=np.int32)
        tail_ids, tail_lp = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    by_window = [slice(a, b) for a, b in itertools.pairwise(pred)]

    def ragged(per_position: np.ndarray, flat: np.ndarray) -> list[np.ndarray]:
        """The flat entries of each window's positions."""
        ends = np.cumsum(np.concatenate([[0], per_position]))
        return [flat[ends[w.start]:ends[w.stop]] for w in by_window]

    return Reference(meta, windows, [counts[w] for w in by_window], ragged(counts, flat_ids), ragged(counts, flat_lp),
                     [data["target_logprob"][w] for w in by_window], [tail_counts[w] for w in by_window],
                     ragged(tail_counts, tail_ids), ragged(tail_counts, tail_lp))
