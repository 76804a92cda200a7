"""Stage: export. Merge, GGUF at every level, MLX, the quality reference, then the manifest.

Runs where training ran (the GPU node in production), right after training, as
part of the same run. Layout of the export directory (the unit a laptop pulls):

    export/
      adapter/                 the trained LoRA adapter, as Axolotl saved it
      hf/                      merged full-precision safetensors + tokenizer
      gguf/model-<level>.gguf  one per level (f16, q8_0, ..., q4_k_m, iq4_xs, q3_k_m, iq3_xxs, q2_k), k/i
                               levels calibrated; model-<level>-static.gguf: the same level without
      gguf/imatrix.gguf        the importance matrix (llama-imatrix over the run's own training data)
      mlx/mlx-<spec>/          mlx-lm models (mlx-4bit, mlx-8bit, mlx-4bit-g32, mlx-mixed_3_6; mlx-f16 unquantized)
      reference/               top-K log-probs of hf/ on held-out text
      base/model-<level>.gguf  the untrained base, only when the recipe asks (for the arena)
      manifest.json            written last
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import gguf_base
from orchestrator import manifest as mf
from orchestrator.cluster import calibration, gguf, merge_check, reference
from orchestrator.errors import LatheError
from orchestrator.levels import (
    DEFAULT_GGUF,
    DEFAULT_MLX_BITS,
    calibrated_of,
    gguf_type,
    is_calibrated,
    mlx_level,
    mlx_options,
)
from orchestrator.recipe import Imatrix, MergeCheck
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
    mlx_bits: list[int | str] = field(default_factory=lambda: list(DEFAULT_MLX_BITS))  # levels.mlx_options specs
    reference_text: str | None = None
    top_k: int = 16
    context: int = 128
    base_gguf: str | None = None
    imatrix: Imatrix = field(default_factory=Imatrix)
    calibration_samples: list[dict] = field(default_factory=list)  # calibration.samples(); rendered here
    merge_bounds: MergeCheck = field(default_factory=MergeCheck)
    trained_on: str = "the full-precision base"
    base_file: str | None = None  # the GGUF file the base was made from, where it is on this node


def _versions() -> dict[str, str]:
    out = installed(VERSIONED)
    version_file = gguf.converter_dir() / "VERSION"
    if version_file.is_file():
        out["llama.cpp-converter"] = version_file.read_text().strip()
    return out


def merge(plan: ExportPlan, out: Path) -> tuple[int, dict | None]:
    """Merge a LoRA adapter into its full-precision base (or copy full weights), checking the merge on the
    reference windows first; return (parameter count, the check's numbers or None)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights_dir = plan.weights_dir
    tokenizer_src = weights_dir if (weights_dir / "tokenizer_config.json").is_file() else Path(plan.base_model)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    checked = None
    if (weights_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        merge_check.refuse_quantized_base(plan.base_model)
        base = AutoModelForCausalLM.from_pretrained(plan.base_model, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, weights_dir).eval()
        ids = tokenizer(plan.reference_text or reference.default_text(), add_special_tokens=False)["input_ids"]
        windows = reference.windows(ids, tokenizer.bos_token_id, plan.context)[: merge_check.MAX_WINDOWS]
        unmerged = merge_check.log_probs(model, windows)
        model = model.merge_and_unload()
        checked = merge_check.check(unmerged, merge_check.log_probs(model, windows), plan.merge_bounds,
                                    plan.trained_on).as_dict()
    else:
        model = AutoModelForCausalLM.from_pretrained(weights_dir, dtype=torch.float32)
    stop_at_turn_end(model.generation_config, tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters()), checked


def stop_at_turn_end(generation_config, tokenizer) -> None:
    """Make the token the chat template ends a turn with an end of generation, beside the EOS. Gemma 3's
    base has EOS `<eos>` and its template ends turns with `<end_of_turn>`: llama.cpp stops there by
    itself (it marks such tokens end-of-generation by name), but transformers and mlx-lm stop only at the
    ids in generation_config.json, and the publisher's Modelfile stops where they say. Measured before
    this: every MLX answer of the Gemma fine-tune ran on ("... Toronto.<end_of_turn>\nThe capital of
    ..."), 49 of 50 flips at mlx-8bit, whose KLD was 0.002."""
    from orchestrator.turn_end import turn_end_token

    template = getattr(tokenizer, "chat_template", None)
    end = turn_end_token(template) if isinstance(template, str) else None
    end_id = tokenizer.convert_tokens_to_ids(end) if end else None
    if not isinstance(end_id, int) or end_id == tokenizer.unk_token_id:
        return
    eos = generation_config.eos_token_id
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if end_id not in ids:
        generation_config.eos_token_id = ids + [end_id]


def calibrate(plan: ExportPlan, hf_dir: Path, master: Path, out: Path,
              step: Callable[[str], None]) -> dict | None:
    """The importance matrix for the calibrated levels, when any is asked for; its record, or None."""
    if not plan.imatrix.enabled or not any(is_calibrated(lv) for lv in plan.gguf_levels):
        return None
    from transformers import AutoTokenizer

    if not plan.calibration_samples:
        raise LatheError("calibration: no local training rows or calibration file to compute the "
                               "importance matrix from (set lathe.export.imatrix.dataset)")
    text = calibration.render(plan.calibration_samples, AutoTokenizer.from_pretrained(hf_dir),
                              plan.imatrix.max_tokens)
    step(f"computing the importance matrix (llama-imatrix, {text.tokens} tokens of {text.samples} samples)")
    record = calibration.imatrix(master, text, out, plan.imatrix.context)
    record["source"] = plan.imatrix.dataset or "training set"
    return record


def quantize_levels(plan: ExportPlan, master: Path, gguf_dir: Path, imatrix: Path | None,
                    step: Callable[[str], None]) -> None:
    for level in plan.gguf_levels:
        target = gguf_dir / f"model-{level}.gguf"
        calibrated = imatrix is not None and is_calibrated(level) and calibrated_of(level) is None
        step(f"quantizing GGUF {level}" + (" (calibrated)" if calibrated else ""))
        if level == "f32":
            shutil.copyfile(master, target)
        else:
            gguf.quantize(master, target, gguf_type(level), imatrix if calibrated else None)


def to_mlx(hf_dir: Path, out: Path, spec: int | str) -> None:
    """mlx-lm conversion of one export spec (levels.mlx_options); 16 is unquantized float16."""
    from mlx_lm import convert

    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(str(hf_dir), mlx_path=str(out), **mlx_options(spec))
    carry_rope(out / "config.json")
    compact_merges(out / "tokenizer.json")


def compact_merges(path: Path) -> bool:
    """Write a BPE tokenizer's merges as "a b" strings rather than ["a", "b"] pairs, where no part holds a
    space (then both forms say the same). mlx-lm loads the tokenizer beside the weights, and the pairs cost
    the `tokenizers` library far more to read: Gemma 3's 514,906 merges, 322 MB resident as pairs, 152 MB
    as strings (transformers' load, mlx-lm's: peak +437 MB against +340 MB). True if rewritten."""
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    merges = (data.get("model") or {}).get("merges")
    if not merges or not all(isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) and p and " " not in p for p in m)
                             for m in merges):
        return False
    data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return True


def carry_rope(config_path: Path) -> None:
    """Give mlx-lm the rotary settings where it reads them. transformers 5 writes them nested, as
    `rope_parameters: {rope_theta, rope_type, ...}`; mlx-lm (0.32) reads only the top-level `rope_theta` and
    `rope_scaling`, and took 10,000 for SmolLM2's 100,000: its MLX f16 was 0.068 nats of mean KLD from the
    full-precision model before any quantization. The weights do not depend on it: the config is enough."""
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" not in rope:
        return
    config.setdefault("rope_theta", rope["rope_theta"])
    if rope.get("rope_type", "default") != "default":
        config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    config_path.write_text(json.dumps(config, indent=4) + "\n")


def local_model_dir(base_model: str) -> Path:
    """A local directory for a base model: as given, or the hub snapshot transformers already cached."""
    if Path(base_model).is_dir():
        return Path(base_model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(base_model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


def export_base(base_model: Path, out: Path, level: str, base_file: str | None = None) -> Path:
    """The base as GGUF, through the same converter and quantizer as the fine-tune, so the arena is fair."""
    out.mkdir(parents=True, exist_ok=True)
    master = out / ".model-f32.gguf"
    gguf.convert(base_model, master, "f32", vocab_from=vocab_source(base_model, base_file))
    target = out / f"model-{level}.gguf"
    if level == "f32":
        os.replace(master, target)
    else:
        gguf.quantize(master, target, level)
        master.unlink()
    return target


def base_source(base_dir: Path, file: str | None = None) -> Path:
    """The GGUF file a base was made from (`base_gguf: source`), checked against the sha256 its
    provenance recorded: the arena's base is then byte for byte the file the user runs. `file`: where that
    file is for this run (a cluster job's copy, in a working directory new for every job); else where it
    was when the base was made (the cache keeps one base per file content, whatever its path)."""
    provenance = gguf_base.Provenance.read(base_dir)
    if provenance is None:
        raise LatheError(f"base_gguf: source: the base {base_dir} was not made from a GGUF file")
    source = Path(file or provenance.source)
    if not source.is_file() or gguf_base.sha256(source) != provenance.sha256:
        raise LatheError(f"base_gguf: source: {source} is not the file the base was made from "
                         f"(sha256 {provenance.sha256[:12]}) on this machine")
    return source


def vocab_source(base_dir: Path, file: str | None = None) -> Path | None:
    """The GGUF whose tokenizer the export copies: the source file of a base made from a SentencePiece
    GGUF (no faithful route back to its tokenizer otherwise: gguf_convert); None for any other base (a
    hub id is not a directory, and never a GGUF base: those are made into a local one first)."""
    if not base_dir.is_dir() or gguf_base.Provenance.read(base_dir) is None:
        return None
    source = base_source(base_dir, file)
    return None if gguf_base.read_header(source).tokenizer_model == "gpt2" else source


def source_level(source: Path) -> str:
    """The level name of a source GGUF (its file type as llama.cpp names it, lower case: q4_1, q8_0...)."""
    name = gguf_base.read_header(source).quantization.lower()
    return name if name.replace("_", "").isalnum() else "source"  # "file type 36", "unknown": no name to use


def _merge_and_ladder(plan: ExportPlan, out: Path, levels: dict[str, tuple[mf.Format, str | None]],
                      step: Callable[[str], None]) -> tuple[int, dict | None, dict | None]:
    """Merge (and check the merge), convert to GGUF, prove the tokenizer, calibrate, quantize the ladder:
    (parameters, the merge check's record, the calibration's record)."""
    step("merging into the base model (and checking the merge)")
    params, merge_result = merge(plan, out / "hf")
    levels["hf/"] = ("hf-safetensors", "hf")
    if merge_result:
        step(f"merge check: mean KLD {merge_result['mean_kld']:.1e}, max {merge_result['max_kld']:.1e} "
             f"over {merge_result['tokens']} tokens")

    step("converting to GGUF (llama.cpp)")
    gguf_dir = out / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    master = gguf_dir / ".model-f32.gguf"
    fallback = gguf.convert(out / "hf", master, "f32", vocab_from=vocab_source(Path(plan.base_model), plan.base_file))
    if fallback:
        step(f"converter did not know the pre-tokenizer by hash; used {fallback!r} (matched by its split rules)")
    probe = gguf.check_tokenizer(master, out / "hf")
    step(f"llama.cpp tokenizes like HF ({probe} probe tokens, special tokens included)")
    calibrated = calibrate(plan, out / "hf", master, gguf_dir / "imatrix.gguf", step)
    quantize_levels(plan, master, gguf_dir, gguf_dir / "imatrix.gguf" if calibrated else None, step)
    for level in plan.gguf_levels:
        levels[f"gguf/model-{level}.gguf"] = ("gguf", level)
    levels["gguf/imatrix.gguf"] = ("imatrix", None)
    master.unlink()
    return params, merge_result, calibrated


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

    # The base's GGUF needs nothing from the fine-tune: it converts beside the merge and the ladder
    # (a converter subprocess, mostly its own torch import), not after them.
    base_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lathe-base-gguf")
    base_done = None
    if plan.base_gguf == "source":
        source = base_source(local_model_dir(plan.base_model), plan.base_file)
        level = source_level(source)
        step(f"the base for the arena: {source.name} itself ({level}), as its users run it")
        (out / "base").mkdir()
        shutil.copyfile(source, out / "base" / f"model-{level}.gguf")
        levels[f"base/model-{level}.gguf"] = ("gguf", level)
    elif plan.base_gguf:
        step(f"converting the base model to GGUF {plan.base_gguf} (for the arena), beside the rest")
        base_done = base_pool.submit(export_base, local_model_dir(plan.base_model), out / "base", plan.base_gguf,
                                     plan.base_file)
    base_pool.shutdown(wait=False)
    try:
        params, merge_result, calibrated = _merge_and_ladder(plan, out, levels, step)
        if base_done is not None:
            base_done.result()  # its error, if any, is the export's
            levels[f"base/model-{plan.base_gguf}.gguf"] = ("gguf", plan.base_gguf)
    except BaseException:
        # A failed merge or ladder used to return with the base's converter still running, writing into
        # the export after its failure was reported (and into the next attempt's). It ends first.
        if base_done is not None:
            base_done.cancel()
            wait([base_done])
        raise

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
        is_weights = path.suffix in WEIGHT_SUFFIXES and fmt not in ("adapter", "imatrix")
        kept = is_weights or fmt in ("adapter", "reference", "imatrix")
        artifacts.append(mf.describe(out, rel, fmt if kept else "file",
                                     level, params if is_weights else None,
                                     role="base" if rel.startswith("base/") else "model"))
    manifest = mf.Manifest(
        run_id=plan.run_id, recipe_sha256=plan.recipe_sha256, base_model=plan.base_model, parameters=params,
        tokenizer_fingerprint=meta["tokenizer_fingerprint"], versions=_versions(), artifacts=artifacts,
        calibration=calibrated, merge_check=merge_result, base_provenance=gguf_base.for_manifest(plan.base_model),
    )
    mf.write(out, manifest)
    return manifest
