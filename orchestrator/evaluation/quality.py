"""Quality of one quantization level against the full-precision reference.

Perplexity on the reference windows, and per token the KL divergence from the
full-precision distribution and whether the most likely token is the same. The
reference keeps, per position, the most likely tokens up to 99.9% of the
probability (up to a cap) and tokens drawn from the rest: the kept tokens count
exactly, the rest as one "tail" outcome on each side plus the divergence within
the tails, estimated from the drawn tokens with a standard error (a test checks
the whole against the full-vocabulary computation on a real model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from orchestrator.errors import TokenizerMismatch
from orchestrator.evaluation.backends import Backend
from orchestrator.reference_format import FINGERPRINT_PROBE, Reference, fingerprint

EPS = 1e-10



@dataclass
class Quality:
    perplexity: float
    ppl_change_pct: float
    mean_kld: float
    # The standard error of mean_kld from the tail's drawn tokens (the only sampled part; the reference's
    # own tokens and the windows are fixed): 0 for a reference without them.
    mean_kld_se: float
    p99_kld: float
    top1_agreement: float
    tokens: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def check_tokenizer(backend: Backend, expected: str, vocab_size: int, label: str) -> None:
    got = fingerprint(vocab_size, backend.tokenize(FINGERPRINT_PROBE))
    if got != expected:
        raise TokenizerMismatch(
            f"{label}: tokenizer fingerprint {got[:12]} differs from the reference's {expected[:12]}: "
            "this artifact does not use the tokenizer the reference was computed with; refusing to compare"
        )


def token_kld(counts: np.ndarray, ref_ids: np.ndarray, ref_lp: np.ndarray, lq: np.ndarray,
              tail_counts: np.ndarray | None = None, tail_ids: np.ndarray | None = None,
              tail_lp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """KL(P_ref || Q) per position, and the variance of that estimate, from P's kept tokens (ragged: `counts`
    per position, flat ids and log-probs), tokens drawn from P's tail, and Q's full log-probs.

    Exactly: the kept tokens' terms, plus the tail folded into one outcome on each side, plus the tail's
    mass times the divergence between the two tails' own distributions, which folding loses. That last
    part is estimated from the drawn tokens (drawn from P's tail in proportion to P: an unbiased mean of
    log(P/Q) within the tails), with a variance; without drawn tokens it is left out, and the estimate can
    only be low (log-sum inequality)."""
    positions = len(counts)
    rows = np.repeat(np.arange(positions), counts)
    p = np.exp(ref_lp.astype(np.float64))
    q_lp = lq[rows, ref_ids.astype(np.int64)]
    head = np.bincount(rows, weights=p * (ref_lp - q_lp), minlength=positions)
    p_tail = np.clip(1.0 - np.bincount(rows, weights=p, minlength=positions), EPS, 1.0)
    q_tail = np.clip(1.0 - np.bincount(rows, weights=np.exp(q_lp), minlength=positions), EPS, 1.0)
    kld = head + p_tail * (np.log(p_tail) - np.log(q_tail))
    variance = np.zeros(positions)
    if tail_counts is not None and tail_ids is not None and tail_lp is not None and tail_counts.sum():
        drawn_rows = np.repeat(np.arange(positions), tail_counts)
        log_ratio = (tail_lp.astype(np.float64) - np.log(p_tail[drawn_rows])) \
            - (lq[drawn_rows, tail_ids.astype(np.int64)] - np.log(q_tail[drawn_rows]))
        m = np.maximum(tail_counts, 1)
        mean = np.bincount(drawn_rows, weights=log_ratio, minlength=positions) / m
        square = np.bincount(drawn_rows, weights=log_ratio**2, minlength=positions) / m
        kld += p_tail * mean
        # The mean's variance: the drawn values' sample variance over m (zero where fewer than two were drawn).
        variance = np.where(tail_counts > 1, p_tail**2 * np.maximum(square - mean**2, 0.0) / np.maximum(m - 1, 1), 0.0)
    return kld, variance


def most_likely(counts: np.ndarray, ref_ids: np.ndarray) -> np.ndarray:
    """Per position, the reference's most likely token: the first of its kept tokens."""
    return ref_ids[np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)]


def _target_nll(lq: np.ndarray, tokens: list[int] | np.ndarray) -> np.ndarray:
    """Per position, the negative log-prob the model gave the token that came next."""
    targets = np.asarray(tokens[1:], dtype=np.int64)
    return -lq[np.arange(len(targets)), targets]


def perplexity(backend: Backend, text: str, window: int) -> float:
    """Perplexity of `text` in the backend's own tokenization (special tokens parsed, so chat-rendered
    text scores as the model sees it), over consecutive windows of `window` tokens."""
    tokens = backend.tokenize(text)
    nll = []
    for start in range(0, max(len(tokens) - 1, 1), window):
        chunk = tokens[start : start + window + 1]
        if len(chunk) < 2:
            break
        nll.append(_target_nll(backend.logprobs(chunk), chunk))
    return float(np.exp(np.concatenate(nll).mean())) if nll else float("nan")


def reference_perplexity(backend: Backend, ref: Reference) -> float:
    """Perplexity on the reference's own token ids: for a model the reference was not computed from
    (the base), where KLD against it would measure the training, not a quantization."""
    nll = []
    for window in ref.windows:
        nll.append(_target_nll(backend.logprobs(window.tolist()), window))
    return float(np.exp(np.concatenate(nll).mean()))


def measure(backend: Backend, ref: Reference) -> Quality:
    nll, kld, variance, agree = [], [], [], []
    for n, window in enumerate(ref.windows):
        lq = backend.logprobs(window.tolist())
        nll.append(_target_nll(lq, window))
        found, var = token_kld(ref.counts[n], ref.top_ids[n], ref.top_logprobs[n], lq,
                               ref.tail_counts[n], ref.tail_ids[n], ref.tail_logprobs[n])
        kld.append(found)
        variance.append(var)
        agree.append(lq.argmax(axis=1) == most_likely(ref.counts[n], ref.top_ids[n]))
    nll_all, kld_all = np.concatenate(nll), np.concatenate(kld)
    ppl = float(np.exp(nll_all.mean()))
    return Quality(
        perplexity=ppl,
        ppl_change_pct=(ppl / ref.perplexity - 1.0) * 100.0,
        mean_kld=float(kld_all.mean()),
        mean_kld_se=float(np.sqrt(np.concatenate(variance).sum()) / kld_all.size),
        p99_kld=float(np.percentile(kld_all, 99)),
        top1_agreement=float(np.concatenate(agree).mean()),
        tokens=int(nll_all.size),
    )
