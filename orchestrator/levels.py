"""The vocabulary of compression levels and of memory, said once.

A level is a GGUF type (``q4_k_m``) or an MLX export (``mlx-4bit``). The order
here, most precise first, is the order of every table and report. The memory
figures decide which machine a level "fits": the same numbers for the eval's
fits column and the deployment recipes.
"""

from __future__ import annotations

from typing import Any, Literal

# Most precise first: every table, plot and recipe lists levels in this order.
GGUF_LEVELS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_m", "q2_k")
GGUFLevel = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_m", "q2_k"]
# The full-precision reference a level is compared with, in order of preference.
FULL_PRECISION = ("f32", "bf16", "f16")
DEFAULT_GGUF = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")
MLX_BITS = (4, 8, 16)
DEFAULT_MLX_BITS = (4, 8)

GB = 1024**3
COMPUTE_ALLOWANCE = 256 * 1024**2  # llama.cpp's / MLX's compute buffers beside weights and KV cache
USABLE_FRACTION = 0.7  # what a model may take of a machine's memory next to the OS and apps
MEMORY_TIERS_GB = (8, 16, 24, 32)  # laptop RAM / unified memory the eval's "fits" column checks


def mlx_level(bits: int) -> str:
    return "mlx-f16" if bits == 16 else f"mlx-{bits}bit"


def rank(level: str) -> int:
    """A level's place in the order above (MLX levels by bits, after the GGUF ones)."""
    if level in GGUF_LEVELS:
        return GGUF_LEVELS.index(level)
    for i, bits in enumerate(sorted(MLX_BITS, reverse=True)):
        if level == mlx_level(bits):
            return len(GGUF_LEVELS) + i
    return len(GGUF_LEVELS) + len(MLX_BITS)


def kv_cache_bytes(hf_config: dict[str, Any], context: int) -> int:
    """An f16 KV cache for `context` tokens of the model that `hf_config` describes."""
    layers = hf_config.get("num_hidden_layers", 0)
    heads = hf_config.get("num_attention_heads", 1)
    kv_heads = hf_config.get("num_key_value_heads", heads)
    head_dim = hf_config.get("head_dim") or hf_config.get("hidden_size", 0) // max(heads, 1)
    return 2 * layers * kv_heads * head_dim * context * 2


def memory_need(size_bytes: int, hf_config: dict[str, Any], context: int) -> int:
    """Weights + f16 KV cache at `context` tokens + the compute-buffer allowance."""
    return size_bytes + kv_cache_bytes(hf_config, context) + COMPUTE_ALLOWANCE


def fits_gb(need_bytes: int) -> list[int]:
    """The memory tiers (GB) in which a model needing `need_bytes` stays under the usable fraction."""
    return [t for t in MEMORY_TIERS_GB if need_bytes <= t * GB * USABLE_FRACTION]
