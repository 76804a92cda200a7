"""Quality of one quantization level against the full-precision reference.

Perplexity on the reference windows, and per token the KL divergence from the
full-precision distribution and whether the most likely token is the same. The
reference keeps, per position, the most likely tokens up to 99.9% of the
probability; the rest of the vocabulary is folded into one "tail" outcome on both
sides, which can only under-estimate the true KL (log-sum inequality) and, with
at most 0.1% left in the tail, stays within a few percent of it (a test checks
against the full-vocabulary computation).
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


def token_kld(ref_ids: np.ndarray, ref_lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    """KL(P_ref || Q) per position, from P's top-K and Q's full log-probs, tails folded."""
    p = np.exp(ref_lp.astype(np.float64))  # 0 where the reference row is padding (log-prob -inf)
    kept = p > 0
    q_top = np.take_along_axis(lq, ref_ids.astype(np.int64), axis=1)  # padding reads token 0: masked below
    p_tail = np.clip(1.0 - p.sum(axis=1), EPS, 1.0)
    q_tail = np.clip(1.0 - (np.exp(q_top) * kept).sum(axis=1), EPS, 1.0)
    head = (p * (np.where(kept, ref_lp, 0.0) - q_top)).sum(axis=1)
    return np.maximum(head + p_tail * (np.log(p_tail) - np.log(q_tail)), 0.0)


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
    nll, kld, agree = [], [], []
    for window, ids, lps in zip(ref.windows, ref.top_ids, ref.top_logprobs, strict=True):
        lq = backend.logprobs(window.tolist())
        nll.append(_target_nll(lq, window))
        kld.append(token_kld(ids, lps, lq))
        agree.append(lq.argmax(axis=1) == ids[:, 0])
    nll_all, kld_all = np.concatenate(nll), np.concatenate(kld)
    ppl = float(np.exp(nll_all.mean()))
    return Quality(
        perplexity=ppl,
        ppl_change_pct=(ppl / ref.perplexity - 1.0) * 100.0,
        mean_kld=float(kld_all.mean()),
        p99_kld=float(np.percentile(kld_all, 99)),
        top1_agreement=float(np.concatenate(agree).mean()),
        tokens=int(nll_all.size),
    )
