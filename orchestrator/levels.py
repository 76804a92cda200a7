"""The vocabulary of compression levels and of memory, said once.

A level is a GGUF type (``q4_k_m``) or an MLX export (``mlx-4bit``). The order
here, most precise first, is the order of every table and report. The memory
figures decide which machine a level "fits": the same numbers for the eval's
fits column and the deployment recipes.
"""

from __future__ import annotations

import re
from typing import Any, Literal

# Most precise first: every table, plot and recipe lists levels in this order.
GGUF_LEVELS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "iq4_nl", "iq4_xs",
               "q3_k_l", "q3_k_m", "iq3_m", "q3_k_s", "iq3_s", "iq3_xxs", "q2_k", "iq2_m", "iq2_s", "iq2_xs",
               "iq2_xxs")
GGUFLevel = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "iq4_nl", "iq4_xs",
                    "q3_k_l", "q3_k_m", "iq3_m", "q3_k_s", "iq3_s", "iq3_xxs", "q2_k", "iq2_m", "iq2_s", "iq2_xs",
                    "iq2_xxs"]
# The full-precision reference a level is compared with, in order of preference.
FULL_PRECISION = ("f32", "bf16", "f16")
# Levels that do not use an importance matrix (llama.cpp ignores one for them).
UNCALIBRATED = ("f32", "f16", "bf16", "q8_0")
# i-quants llama.cpp refuses to make without an importance matrix: they have no static twin.
NEEDS_IMATRIX = ("iq3_xxs", "iq2_m", "iq2_s", "iq2_xs", "iq2_xxs")
# A calibrated level quantized again without the matrix is named with this suffix ("q4_k_m-static"), so
# the report can set what calibration bought beside it.
STATIC = "-static"
DEFAULT_GGUF = ("f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "iq4_xs", "q3_k_m", "iq3_xxs", "q2_k")
MLX_BITS = (4, 8, 16)
DEFAULT_MLX_BITS = (4, 8)

GB = 1024**3
COMPUTE_ALLOWANCE = 256 * 1024**2  # llama.cpp's / MLX's compute buffers beside weights and KV cache
USABLE_FRACTION = 0.7  # what a model may take of a machine's memory next to the OS and apps
MEMORY_TIERS_GB = (8, 16, 24, 32)  # laptop RAM / unified memory the eval's "fits" column checks


# MLX exports a recipe may ask for: bits (affine, group size 64), bits with another group size ("4bit-g32"),
# or one of mlx-lm's mixed-precision recipes ("mixed_3_6": 3-bit, with 6 bits where it matters most).
MLX_QUANT_BITS = (2, 3, 4, 5, 6, 8)
MLX_GROUP_SIZES = (32, 64, 128)
MLX_MIXED = ("mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6")
_MLX_GROUPED = re.compile(r"^([2-8])bit-g(32|64|128)$")


def mlx_level(spec: int | str) -> str:
    """The level name of an MLX export spec: 16 -> mlx-f16, 4 -> mlx-4bit, "4bit-g32" -> mlx-4bit-g32."""
    if spec == 16:
        return "mlx-f16"
    return f"mlx-{spec}bit" if isinstance(spec, int) else f"mlx-{spec}"


def mlx_options(spec: int | str) -> dict[str, Any]:
    """mlx_lm.convert's keyword arguments for a spec; ValueError names what is wrong with it."""
    if spec == 16:
        return {"dtype": "float16"}
    if isinstance(spec, int):
        if spec not in MLX_QUANT_BITS:
            raise ValueError(f"MLX bits must be one of {MLX_QUANT_BITS} or 16, got {spec}")
        return {"quantize": True, "q_bits": spec, "q_group_size": 64}
    if spec in MLX_MIXED:
        return {"quantize": True, "quant_predicate": spec, "q_group_size": 64}
    grouped = _MLX_GROUPED.match(spec)
    if grouped and int(grouped[1]) in MLX_QUANT_BITS:
        return {"quantize": True, "q_bits": int(grouped[1]), "q_group_size": int(grouped[2])}
    raise ValueError(f"unknown MLX export {spec!r}: use bits ({', '.join(map(str, MLX_QUANT_BITS))}, 16), "
                     f"bits with a group size (e.g. 4bit-g32) or a mixed recipe ({', '.join(MLX_MIXED)})")


def _mlx_bits(level: str) -> float:
    """Nominal bits of an MLX level, for ordering: mixed recipes sit just above their low bits."""
    name = level.removeprefix("mlx-")
    if name == "f16":
        return 16.0
    if name.startswith("mixed_"):
        return int(name.split("_")[1]) + 0.5
    bits = re.match(r"^(\d)bit(?:-g(\d+))?$", name)
    return int(bits[1]) + (64 - int(bits[2])) / 1000 if bits and bits[2] else float(bits[1]) if bits else 0.0


def is_calibrated(level: str) -> bool:
    """Whether export quantizes this GGUF level with the importance matrix (when there is one)."""
    return level in GGUF_LEVELS and level not in UNCALIBRATED


def static_twin(level: str) -> str | None:
    """The uncalibrated twin's name of a calibrated level, or None where there is no twin."""
    return f"{level}{STATIC}" if is_calibrated(level) and level not in NEEDS_IMATRIX else None


def calibrated_of(level: str) -> str | None:
    """For a static twin, the calibrated level it is the twin of."""
    return level.removesuffix(STATIC) if level.endswith(STATIC) else None


def without_redundant_twins(names: list[str]) -> set[str]:
    """The names worth recommending: a static twin only where its calibrated level is not among them (the
    twins are the same size, and are exported to be compared, not chosen over a level that passes)."""
    return {n for n in names if calibrated_of(n) not in names}


def gguf_type(level: str) -> str:
    """The llama.cpp quantization type of a GGUF level (a twin has its calibrated level's type)."""
    return calibrated_of(level) or level


def rank(level: str) -> float:
    """A level's place in the order above (a static twin right after its calibrated level; MLX levels
    by bits, after the GGUF ones)."""
    if calibrated_of(level) in GGUF_LEVELS:
        return GGUF_LEVELS.index(calibrated_of(level)) + 0.5
    if level in GGUF_LEVELS:
        return GGUF_LEVELS.index(level)
    if level.startswith("mlx-"):
        return len(GGUF_LEVELS) + 16 - _mlx_bits(level)
    return len(GGUF_LEVELS) + 17


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
