"""The quality reference: top-K log-probs of the full-precision model on held-out text.

Stored with the exact token ids and a tokenizer fingerprint, it lets the laptop
compute perplexity, KL divergence and top-1 agreement for any quantization level,
in any runtime (llama.cpp, MLX), without the full-precision model at hand.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.reference_format import FINGERPRINT_PROBE, fingerprint

# Per position, keep the top tokens holding this much probability (bounded below by the recipe's top-K and
# above by MAX_TOP): with the top 16 only, folding the rest into one outcome hid 10-16% of the quickstart's
# mean KL divergence at q4_k_m. On a real vocabulary the cap binds: SmolLM2's uncertain positions kept
# 1,024 of 49,152 tokens with up to 42% of the probability left, and the folded estimate was 2-5% low.
COVERAGE = 0.999
MAX_TOP = 1024
# So the tail is also sampled: TAIL_SAMPLES tokens per position drawn in proportion to their probability
# (with replacement, a fixed seed), from which the laptop estimates the KL divergence within the tail that
# folding it into one outcome loses. Unbiased, with a standard error; measured on SmolLM2 at q8_0, within
# 0.5% of the exact full-vocabulary value for ~100 more stored tokens per position (keeping every token to
# 99.9%, uncapped, got 0.15% but kept up to 42,365 per position).
TAIL_SAMPLES = 128
TAIL_FLOOR = 1e-6  # below this much left, the tail is not sampled (its fold is exact enough)
SEED = 0


def default_text() -> str:
    return resources.files("orchestrator.data").joinpath("heldout.txt").read_text(encoding="utf-8")


def hf_fingerprint(tokenizer, vocab_size: int) -> str:
    """`vocab_size`: the model's, the width of its logits (config.vocab_size), as llama.cpp's n_vocab and
    MLX's vocab_size report it. Not len(tokenizer): a padded vocabulary (Qwen3: 151,936 rows for 151,669
    tokens) has more rows than tokens, and the runtimes would never match the reference."""
    return fingerprint(vocab_size, tokenizer(FINGERPRINT_PROBE, add_special_tokens=False)["input_ids"])


def windows(ids: list[int], bos: int | None, ctx: int) -> list[list[int]]:
    """Non-overlapping windows of at most `ctx` tokens, each starting with BOS when the model has one."""
    body = ctx - (1 if bos is not None else 0)
    out = []
    for start in range(0, len(ids), body):
        chunk = ids[start : start + body]
        if len(chunk) < 2:
            break
        out.append(([bos] if bos is not None else []) + chunk)
    return out


def covering(logprobs, min_top: int, coverage: float, max_top: int) -> list[int]:
    """Per position, how many of the most likely tokens hold `coverage` of the probability (at least
    `min_top`, at most `max_top`): the rest then carries at most 1 - coverage, which bounds what folding
    it into one outcome can hide from the KL divergence."""
    import torch

    values = logprobs.topk(min(max_top, logprobs.shape[-1]), dim=-1).values.exp().double()
    reached = (values.cumsum(-1) >= coverage).int().argmax(-1) + 1  # first index at coverage, 1-based
    never = values.sum(-1) < coverage
    counts = torch.where(never, torch.full_like(reached, values.shape[-1]), reached).clamp(min=min_top)
    return counts.tolist()


def compute(model_dir: Path, out_dir: Path, text: str, top_k: int = 16, ctx: int = 128,
            coverage: float = COVERAGE, max_top: int = MAX_TOP) -> dict[str, Any]:
    """Write reference.npz + reference.json into `out_dir`; return the metadata. Each position keeps its
    most likely tokens up to `coverage` of the probability (at least `top_k`, at most `max_top`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = windows(ids, tok.bos_token_id, ctx)
    top_ids, top_lp, counts, target_lp, tokens, tail = [], [], [], [], [], []
    tail_ids, tail_lp, tail_counts = [], [], []
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for chunk in chunks:
            logits = model(torch.tensor([chunk])).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits.double(), dim=-1)
            keep = covering(logprobs, top_k, coverage, max_top)
            values, indices = logprobs.topk(max(keep), dim=-1)
            rest = logprobs.exp()  # what is left once each position's kept tokens are taken out
            for row, n in enumerate(keep):
                top_ids.append(indices[row, :n].numpy().astype(np.int32))
                top_lp.append(values[row, :n].numpy().astype(np.float32))
                tail.append(max(0.0, 1.0 - float(values[row, :n].exp().sum())))
                rest[row, indices[row, :n]] = 0.0
                drawn = torch.multinomial(rest[row], TAIL_SAMPLES, replacement=True, generator=generator) \
                    if tail[-1] > TAIL_FLOOR and bool((rest[row] > 0).any()) else torch.zeros(0, dtype=torch.long)
                tail_ids.append(drawn.numpy().astype(np.int32))
                tail_lp.append(logprobs[row, drawn].numpy().astype(np.float32))
                tail_counts.append(len(drawn))
            counts += keep
            nxt = torch.tensor(chunk[1:])
            target_lp.append(logprobs.gather(1, nxt[:, None])[:, 0].numpy().astype(np.float32))
            tokens.append(np.array(chunk, dtype=np.int32))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Windows differ in length (the last one) and positions in how many tokens they keep: stored flat,
    # with window lengths and per-position counts.
    lengths = np.array([len(t) for t in tokens], dtype=np.int32)
    np.savez_compressed(
        out_dir / "reference.npz",
        tokens=np.concatenate(tokens), lengths=lengths, counts=np.array(counts, dtype=np.int32),
        top_ids=np.concatenate(top_ids), top_logprobs=np.concatenate(top_lp),
        target_logprob=np.concatenate(target_lp), tail_counts=np.array(tail_counts, dtype=np.int32),
        tail_ids=np.concatenate(tail_ids), tail_logprobs=np.concatenate(tail_lp),
    )
    nll = -float(np.concatenate(target_lp).mean())
    meta = {
        "top_k": top_k, "coverage": coverage, "max_top": max_top, "mean_top": float(np.mean(counts)),
        "tail_mass_max": float(max(tail)), "tail_mass_mean": float(np.mean(tail)), "tail_samples": TAIL_SAMPLES,
        "context": ctx, "windows": len(chunks),
        "scored_tokens": int(sum(lengths - 1)), "add_bos": tok.bos_token_id is not None,
        "tokenizer_fingerprint": hf_fingerprint(tok, model.get_output_embeddings().weight.shape[0]),
        "perplexity": float(np.exp(nll)), "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    (out_dir / "reference.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
