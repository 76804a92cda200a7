"""The merge check: merged weights must predict what base + adapter predict, before anything is quantized.

Every GGUF and MLX level is made from the merged model, so a merge that went
wrong (an adapter applied to the wrong base, a scaling lost, a QLoRA adapter
merged into dequantized 4-bit weights) would be quantized faithfully and then
blamed on quantization. The check compares the next-token distributions of the
unmerged model (base with the adapter applied on the fly, as in training) and
the merged one on the reference windows, in float32, and stops the export when
the mean or largest per-token KL divergence passes its bound.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import LatheError

MAX_WINDOWS = 16  # enough tokens to see a wrong merge; a bounded cost on a large model


@dataclass
class MergeCheckResult:
    mean_kld: float
    max_kld: float
    tokens: int
    bound_mean_kld: float
    bound_max_kld: float
    merged_into: str  # what the adapter was merged into
    trained_on: str  # what it was trained on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refuse_quantized_base(base_model: str) -> None:
    """A base stored quantized (a bitsandbytes/GPTQ/AWQ checkpoint) would be merged in dequantized form. A
    local directory's config.json, or a hub id's as transformers finds it (the cache on an offline node)."""
    config = Path(base_model) / "config.json"
    if config.is_file():
        quantized = json.loads(config.read_text()).get("quantization_config")
    else:
        from transformers import AutoConfig

        quantized = getattr(AutoConfig.from_pretrained(base_model), "quantization_config", None)
    if quantized:
        raise LatheError(f"{base_model}: the base model is stored quantized; an adapter must be merged into "
                         "full-precision weights, so name the full-precision original as base_model")


def log_probs(model: Any, windows: list[list[int]]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [torch.log_softmax(model(torch.tensor([w])).logits[0].double(), dim=-1) for w in windows]


def compare(unmerged: list[Any], merged: list[Any]) -> tuple[float, float, int]:
    """(mean, max, tokens) of KL(unmerged || merged) per position."""
    import torch

    kld = torch.cat([(p.exp() * (p - q)).sum(-1) for p, q in zip(unmerged, merged, strict=True)])
    kld = kld.clamp_min(0.0)  # float rounding can give -1e-17 for identical rows
    return float(kld.mean()), float(kld.max()), int(kld.numel())


def check(unmerged: list[Any], merged: list[Any], bounds: Any, trained_on: str) -> MergeCheckResult:
    mean, worst, tokens = compare(unmerged, merged)
    result = MergeCheckResult(mean, worst, tokens, bounds.max_mean_kld, bounds.max_kld,
                              merged_into="the full-precision base (float32)", trained_on=trained_on)
    if mean > bounds.max_mean_kld or worst > bounds.max_kld:
        raise LatheError(f"merge check failed: the merged model differs from base + adapter on {tokens} "
                         f"reference tokens (mean KLD {mean:.2e}, max {worst:.2e}; bounds "
                         f"{bounds.max_mean_kld:.0e}, {bounds.max_kld:.0e}); nothing was quantized")
    return result
