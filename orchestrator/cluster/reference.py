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


def default_text() -> str:
    return resources.files("orchestrator.data").joinpath("heldout.txt").read_text(encoding="utf-8")


def hf_fingerprint(tokenizer) -> str:
    return fingerprint(len(tokenizer), tokenizer(FINGERPRINT_PROBE, add_special_tokens=False)["input_ids"])


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


def compute(model_dir: Path, out_dir: Path, text: str, top_k: int = 16, ctx: int = 128) -> dict[str, Any]:
    """Write reference.npz + reference.json into `out_dir`; return the metadata."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = windows(ids, tok.bos_token_id, ctx)
    top_ids, top_lp, target_lp, tokens = [], [], [], []
    with torch.no_grad():
        for chunk in chunks:
            logits = model(torch.tensor([chunk])).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            values, indices = logprobs.topk(top_k, dim=-1)
            nxt = torch.tensor(chunk[1:])
            top_ids.append(indices.numpy().astype(np.int32))
            top_lp.append(values.numpy().astype(np.float32))
            target_lp.append(logprobs.gather(1, nxt[:, None])[:, 0].numpy().astype(np.float32))
            tokens.append(np.array(chunk, dtype=np.int32))
    out_dir.mkdir(parents=True, exist_ok=True)
    # Windows may differ in length (the last one): store them flat with offsets.
    lengths = np.array([len(t) for t in tokens], dtype=np.int32)
    np.savez_compressed(
        out_dir / "reference.npz",
        tokens=np.concatenate(tokens), lengths=lengths,
        top_ids=np.concatenate(top_ids), top_logprobs=np.concatenate(top_lp),
        target_logprob=np.concatenate(target_lp),
    )
    nll = -float(np.concatenate(target_lp).mean())
    meta = {
        "top_k": top_k, "context": ctx, "windows": len(chunks), "scored_tokens": int(sum(lengths - 1)),
        "add_bos": tok.bos_token_id is not None, "tokenizer_fingerprint": hf_fingerprint(tok),
        "perplexity": float(np.exp(nll)), "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    (out_dir / "reference.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
