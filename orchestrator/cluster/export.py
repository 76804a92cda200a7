"""Stage: export. Merge, GGUF at every level, MLX, the quality reference, then the manifest.

Runs where training ran (the GPU node in production), right after training, as
part of the same run. Layout of the export directory (the unit a laptop pulls):

    export/
      adapter/                 the trained LoRA adapter, as Axolotl saved it
      hf/                      merged full-precision safetensors + tokenizer
      gguf/model-<level>.gguf  one per level (f16, q8_0, q6_k, q5_k_m, q4_k_m, ...)
      mlx/mlx-<bits>bit/       mlx-lm models (mlx-4bit, mlx-8bit; mlx-f16 unquantized)
      reference/               top-K log-probs of hf/ on held-out text
      base/model-<level>.gguf  the untrained base, only when the recipe asks (for the arena)
      manifest.json            written last
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import manifest as mf
from orchestrator.cluster import gguf, reference
from orchestrator.levels import DEFAULT_GGUF, DEFAULT_MLX_BITS, mlx_level
from orchestrator.versions import installed

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".gguf")
VERSIONED = ("lathe", "axolotl", "transformers", "torch", "peft", "llama-cpp-python", "mlx", "mlx-lm")


@dataclass
class ExportPlan:
    run_id: str
    recipe_sha256: str
    base_model: str  # a local path (tiny models are resolved before export)
    weights_dir: Path  # the adapter (LoRA) or full weights Axolotl saved
    out_dir: Path
    gguf_levels: list[str] = field(default_factory=lambda: list(DEFAULT_GGUF))
    mlx_bits: list[int] = field(default_factory=lambda: list(DEFAULT_MLX_BITS))
    reference_text: str | None = None
    top_k: int = 16
    context: int = 128
    base_gguf: str | None = None


def _versions() -> dict[str, str]:
    out = installed(VERSIONED)
    version_file = gguf.converter_dir() / "VERSION"
    if version_file.is_file():
        out["llama.cpp-converter"] = version_file.read_text().strip()
    return out


def merge(base_model: str, weights_dir: Path, out: Path) -> int:
    """Merge a LoRA adapter into its base (or copy full weights); return the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_adapter = (weights_dir / "adapter_config.json").is_file()
    if is_adapter:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, weights_dir).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(weights_dir, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer_src = weights_dir if (weights_dir / "tokenizer_config.json").is_file() else Path(base_model)
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def to_mlx(hf_dir: Path, out: Path, bits: int) -> None:
    """mlx-lm conversion; 16 means unquantized float16 (MLX's full-precision baseline)."""
    from mlx_lm import convert

    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        convert(str(hf_dir), mlx_path=str(out), dtype="float16")
    else:
        convert(str(hf_dir), mlx_path=str(out), quantize=True, q_bits=bits, q_group_size=64)


def local_model_dir(base_model: str) -> Path:
    """A local directory for a base model: as given, or the hub snapshot transformers already cached."""
    if Path(base_model).is_dir():
        return Path(base_model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(base_model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


def export_base(base_model: Path, out: Path, level: str) -> Path:
    """The base as GGUF, through the same converter and quantizer as the fine-tune, so the arena is fair."""
    out.mkdir(parents=True, exist_ok=True)
    master = out / ".model-f32.gguf"
    gguf.convert(base_model, master, "f32")
    target = out / f"model-{level}.gguf"
    if level == "f32":
        os.replace(master, target)
    else:
        gguf.quantize(master, target, level)
        master.unlink()
    return target


def export(plan: ExportPlan, step: Callable[[str], None] = lambda _msg: None) -> mf.Manifest:
    out = plan.out_dir
    if (out / mf.MANIFEST).exists():
        raise FileExistsError(f"{out}: already exported")
    out.mkdir(parents=True, exist_ok=True)
    levels: dict[str, tuple[mf.Format, str | None]] = {}  # relative path prefix -> (format, level)

    step("copying the adapter")
    shutil.copytree(plan.weights_dir, out / "adapter", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("checkpoint-*", "*.log", "prepared", "final"))
    levels["adapter/"] = ("adapter", None)

    step("merging into the base model")
    params = merge(plan.base_model, plan.weights_dir, out / "hf")
    levels["hf/"] = ("hf-safetensors", "hf")

    step("converting to GGUF (llama.cpp)")
    gguf_dir = out / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    master = gguf_dir / ".model-f32.gguf"
    fallback = gguf.convert(out / "hf", master, "f32")
    if fallback:
        step(f"converter did not know the pre-tokenizer; used {fallback!r} (byte-level BPE)")
    for level in plan.gguf_levels:
        step(f"quantizing GGUF {level}")
        target = gguf_dir / f"model-{level}.gguf"
        if level == "f32":
            shutil.copyfile(master, target)
        else:
            gguf.quantize(master, target, level)
        levels[f"gguf/model-{level}.gguf"] = ("gguf", level)
    master.unlink()

    if plan.base_gguf:
        step(f"converting the base model to GGUF {plan.base_gguf} (for the arena)")
        export_base(local_model_dir(plan.base_model), out / "base", plan.base_gguf)
        levels[f"base/model-{plan.base_gguf}.gguf"] = ("gguf", plan.base_gguf)

    for bits in plan.mlx_bits:
        level = mlx_level(bits)
        step(f"converting to MLX ({level})")
        to_mlx(out / "hf", out / "mlx" / level, bits)
        levels[f"mlx/{level}/"] = ("mlx", level)

    step("computing reference log-probs")
    meta = reference.compute(out / "hf", out / "reference", plan.reference_text or reference.default_text(),
                             top_k=plan.top_k, ctx=plan.context)
    levels["reference/"] = ("reference", None)

    step("writing the manifest")
    artifacts = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != mf.MANIFEST):
        rel = path.relative_to(out).as_posix()
        prefix = next((k for k in levels if rel == k or (k.endswith("/") and rel.startswith(k))), None)
        fmt, level = levels[prefix] if prefix else ("file", None)
        is_weights = path.suffix in WEIGHT_SUFFIXES and fmt != "adapter"
        artifacts.append(mf.describe(out, rel, fmt if is_weights or fmt in ("adapter", "reference") else "file",
                                     level, params if is_weights else None,
                                     role="base" if rel.startswith("base/") else "model"))
    manifest = mf.Manifest(
        run_id=plan.run_id, recipe_sha256=plan.recipe_sha256, base_model=plan.base_model, parameters=params,
        tokenizer_fingerprint=meta["tokenizer_fingerprint"], versions=_versions(), artifacts=artifacts,
    )
    mf.write(out, manifest)
    return manifest
