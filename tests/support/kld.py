"""The exact KL(HF float32 || a GGUF level) over the whole vocabulary, beside the estimate Lathe reports
from its reference (each position's most likely tokens, the rest as a tail estimated from drawn tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator import reference_format
from orchestrator.evaluation.backends import LlamaCpp


@dataclass
class KldCheck:
    exact: float
    estimate: float
    estimate_se: float  # the estimate's own standard error (from the tail's drawn tokens)
    mean_top: float   # tokens the reference kept per position, on average
    coverage: float   # the probability each position's kept tokens reach
    vocabulary: int


def exact_beside_estimate(export_dir: Path, level: str) -> KldCheck:
    import torch
    from transformers import AutoModelForCausalLM

    from orchestrator.evaluation.quality import measure

    ref = reference_format.load(export_dir / "reference")
    hf = AutoModelForCausalLM.from_pretrained(export_dir / "hf", dtype=torch.float32).eval()
    gguf = LlamaCpp(export_dir / "gguf" / f"model-{level}.gguf", n_ctx=256, scoring=True)
    exact = []
    for window in ref.windows:
        with torch.no_grad():
            p = torch.log_softmax(hf(torch.tensor([window.tolist()])).logits[0, :-1].double(), -1).numpy()
        exact.append((np.exp(p) * (p - gguf.logprobs(window.tolist()))).sum(axis=1))
    measured = measure(gguf, ref)
    return KldCheck(exact=float(np.concatenate(exact).mean()), estimate=measured.mean_kld, estimate_se=measured.mean_kld_se,
                    mean_top=float(ref.meta["mean_top"]), coverage=float(ref.meta["coverage"]),
                    vocabulary=int(hf.config.vocab_size))
