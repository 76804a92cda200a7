"""The reference's KL divergence estimate against the exact full-vocabulary value, on synthetic
distributions (pure numpy): ragged kept tokens, the tail folded into one outcome."""

from __future__ import annotations

import numpy as np

from orchestrator.evaluation.quality import most_likely, token_kld


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _kept(lp: np.ndarray, counts: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-lp, axis=1)
    ids = np.concatenate([order[r, :n] for r, n in enumerate(counts)])
    rows = np.repeat(np.arange(len(counts)), counts)
    return np.array(counts), ids, lp[rows, ids]


def test_kept_tokens_estimate_the_kl_from_below_and_all_of_them_give_it_exactly() -> None:
    rng = np.random.default_rng(0)
    vocab = 5000
    p = _log_softmax(rng.normal(0, 3, (6, vocab)))
    q = _log_softmax(np.log(np.exp(p)) + rng.normal(0, 0.3, (6, vocab)))  # a noisy copy, as a quantization is
    exact = (np.exp(p) * (p - q)).sum(axis=1)

    every = _kept(p, [vocab] * 6)
    assert np.allclose(token_kld(*every, q)[0], exact, rtol=1e-9)
    # Ragged: each position keeps its own number of tokens (one keeps 3, one keeps 4,000).
    counts = [3, 4000, 50, 700, 16, 2500]
    some = _kept(p, counts)
    estimate = token_kld(*some, q)[0]
    assert (estimate <= exact + 1e-12).all(), "folding the tail can only lose divergence (log-sum inequality)"
    assert estimate[1] > 0.9 * exact[1] and estimate[0] < estimate[1], (estimate, exact)
    assert (most_likely(*some[:2]) == p.argmax(axis=1)).all()


def test_tokens_drawn_from_the_tail_recover_what_folding_it_lost_with_an_honest_error() -> None:
    """Each position keeps 20 tokens of 5,000 and leaves most of the probability in its tail: folding it
    alone loses most of the divergence. 128 tokens drawn from each tail, in proportion to P, give an
    unbiased estimate of the rest; over 300 positions it lands within a few standard errors of the exact
    value, and the standard error it reports matches the spread over independent draws."""
    rng = np.random.default_rng(1)
    positions, vocab, m = 300, 5000, 128
    p = _log_softmax(rng.normal(0, 2, (positions, vocab)))
    q = _log_softmax(p + rng.normal(0, 0.3, (positions, vocab)))
    exact = (np.exp(p) * (p - q)).sum(axis=1).mean()
    counts, ids, lps = _kept(p, [20] * positions)
    folded = token_kld(counts, ids, lps, q)[0].mean()
    assert folded < 0.5 * exact, (folded, exact)

    def draw(seed: int) -> tuple[float, float]:
        pick = np.random.default_rng(seed)
        rest = np.exp(p)
        rest[np.repeat(np.arange(positions), counts), ids] = 0.0
        drawn = np.concatenate([pick.choice(vocab, size=m, p=row / row.sum()) for row in rest])
        rows = np.repeat(np.arange(positions), m)
        kld, variance = token_kld(counts, ids, lps, q, np.full(positions, m), drawn, p[rows, drawn])
        return kld.mean(), np.sqrt(variance.sum()) / positions

    estimates = [draw(seed) for seed in range(20)]
    means, errors = np.array([e[0] for e in estimates]), np.array([e[1] for e in estimates])
    assert abs(means.mean() - exact) < 3 * errors.mean() / np.sqrt(len(means)), (means.mean(), exact)
    assert all(abs(mean - exact) < 4 * se for mean, se in estimates)
    assert 0.5 < means.std() / errors.mean() < 1.5, "the reported standard error is the draws' real spread"
