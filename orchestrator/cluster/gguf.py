"""GGUF: convert with llama.cpp's converter, quantize with llama.cpp's quantizer (via the binding)."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
from pathlib import Path

from orchestrator import cpus
from orchestrator.cluster.gguf_convert import MARKER, REFUSED
from orchestrator.errors import LatheError
from orchestrator.quiet import quiet_stderr

log = logging.getLogger(__name__)

FTYPES = {
    "f32": "LLAMA_FTYPE_ALL_F32",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
    "bf16": "LLAMA_FTYPE_MOSTLY_BF16",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "iq4_xs": "LLAMA_FTYPE_MOSTLY_IQ4_XS",
    "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
    "iq3_m": "LLAMA_FTYPE_MOSTLY_IQ3_M",
    "iq3_s": "LLAMA_FTYPE_MOSTLY_IQ3_S",
    "iq3_xxs": "LLAMA_FTYPE_MOSTLY_IQ3_XXS",
    "iq2_m": "LLAMA_FTYPE_MOSTLY_IQ2_M",
    "iq2_s": "LLAMA_FTYPE_MOSTLY_IQ2_S",
    "iq2_xs": "LLAMA_FTYPE_MOSTLY_IQ2_XS",
    "iq2_xxs": "LLAMA_FTYPE_MOSTLY_IQ2_XXS",
}


def converter_dir() -> Path:
    """Where bootstrap put llama.cpp's converter (same version as the installed binding)."""
    path = Path(os.environ.get("LATHE_LLAMA_CPP_DIR") or Path(sys.prefix) / "share" / "lathe" / "llama.cpp")
    if not (path / "convert_hf_to_gguf.py").is_file():
        raise LatheError(f"llama.cpp converter not found in {path}: run scripts/bootstrap.sh")
    return path


def last_line(output: str) -> str:
    """The last non-empty line a tool printed: what its one-line error quotes."""
    return next((ln for ln in reversed(output.splitlines()) if ln.strip()), "no output")


def tool(name: str) -> Path:
    """A llama.cpp tool bootstrap built beside the converter (or the Docker image put on PATH)."""
    from shutil import which

    try:
        beside = converter_dir() / "bin" / name
    except LatheError:
        beside = None
    if beside is not None and beside.is_file():
        return beside
    found = which(name)
    if found is None:
        raise LatheError(f"llama.cpp's {name} not found (run scripts/bootstrap.sh), or turn calibration off "
                         "with lathe.export.imatrix.enabled: false")
    return Path(found)


def convert(hf_dir: Path, out: Path, outtype: str = "f32", vocab_from: Path | None = None) -> str | None:
    """HF safetensors -> GGUF. Returns the pre-tokenizer fallback used, if any. With `vocab_from` (a
    GGUF), the tokenizer is that file's, copied as it is (gguf_convert's docstring says when and why)."""
    cmd = [sys.executable, "-m", "orchestrator.cluster.gguf_convert", str(converter_dir()), str(hf_dir),
           *(["--vocab-from", str(vocab_from)] if vocab_from is not None else []),
           "--outfile", str(out), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    refused = [ln.split("=", 1)[1] for ln in proc.stderr.splitlines() if ln.startswith(f"{REFUSED}=")]
    if refused:
        raise LatheError(f"{hf_dir}: llama.cpp has no pre-tokenizer for this tokenizer ({refused[0]}); "
                         "a GGUF would tokenize differently from the model, so none is written")
    if proc.returncode != 0 or not out.is_file():
        raise LatheError(f"convert_hf_to_gguf failed on {hf_dir}: {last_line(proc.stderr)[:300]}")
    for line in proc.stderr.splitlines():
        if line.startswith(f"{MARKER}="):
            fallback = line.split("=", 1)[1]
            log.warning("GGUF: the converter did not recognise the pre-tokenizer; used %r", fallback)
            return fallback
    return None


def quantize(src: Path, dst: Path, level: str, imatrix: Path | None = None) -> None:
    """`src` (f32 GGUF) -> `dst` at `level`. With an importance matrix this is llama.cpp's llama-quantize
    (the binding has no way to pass one); without, the binding's call to the same library function."""
    tmp = dst.with_suffix(".part")
    if imatrix is not None:
        cmd = [str(tool("llama-quantize")), "--imatrix", str(imatrix), str(src), str(tmp), level.upper(),
               str(cpus.threads())]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise LatheError(f"llama-quantize could not make {level} with the importance matrix: "
                             f"{last_line(proc.stderr + proc.stdout)[:200]}")
        os.replace(tmp, dst)
        return
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[level])
    params.nthread = cpus.threads()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise LatheError(f"llama.cpp could not quantize {src.name} to {level} (code {rc})")
    os.replace(tmp, dst)


# Spaces, newlines, tabs, digits, accents, emoji (one a ZWJ sequence), code, and chat markup; special
# tokens of the model's own are appended by check_tokenizer.
TOKENIZER_PROBE = (
    "Hello, world!\n\n  Two  spaces\tand a tab.\r\n 1234567 3.14159 -42 1e10 café naïve Ærø ß "
    "🦙🔥👩‍👩‍👧 {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lisbon\"}}\n"
    "def f(x):\n    return x ** 2  # I'll, you've, WE'RE\n"
)

FRAMING_PROBE = "Hello, world"


def check_tokenizer(gguf_path: Path, hf_dir: Path) -> int:
    """Prove llama.cpp tokenizes the probe (and the model's special tokens) exactly as HF does; return
    the probe's token count. A difference refuses the export: every number computed from the GGUF
    would be about other tokens than the model was trained on."""
    import llama_cpp
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_dir)
    text = TOKENIZER_PROBE + "".join(f"{t}x" for t in hf.all_special_tokens)
    want = hf(text, add_special_tokens=False)["input_ids"]
    framed_hf = hf(FRAMING_PROBE)["input_ids"]
    with quiet_stderr(switches=False):  # llama.cpp warns about the context of a model it will not run
        vocab = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        got = vocab.tokenize(text.encode(), add_bos=False, special=True)
        framed_gguf = vocab.tokenize(FRAMING_PROBE.encode(), add_bos=True, special=False)
    finally:
        vocab.close()
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        piece = hf.decode(want[max(at - 2, 0) : at + 3])
        raise LatheError(f"{gguf_path.name}: llama.cpp tokenizes differently from HF from token {at} "
                         f"(near {piece!r}); refusing a GGUF that would score other tokens than the model's")
    # The tokens each side adds on its own (BOS, EOS): Gemma without its <bos> is another model.
    if framed_hf != framed_gguf:
        raise LatheError(f"{gguf_path.name}: llama.cpp frames a text as {framed_gguf} and HF as {framed_hf} "
                         "(the BOS/EOS each adds on its own); refusing a GGUF that would score other tokens")
    return len(want)
