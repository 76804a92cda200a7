"""GGUF: convert with llama.cpp's converter, quantize with llama.cpp's quantizer (via the binding)."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
from pathlib import Path

from orchestrator.cluster.gguf_convert import MARKER
from orchestrator.errors import LatheError

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
}


def converter_dir() -> Path:
    """Where bootstrap put llama.cpp's converter (same version as the installed binding)."""
    path = Path(os.environ.get("LATHE_LLAMA_CPP_DIR") or Path(sys.prefix) / "share" / "lathe" / "llama.cpp")
    if not (path / "convert_hf_to_gguf.py").is_file():
        raise LatheError(f"llama.cpp converter not found in {path}: run scripts/bootstrap.sh")
    return path


def convert(hf_dir: Path, out: Path, outtype: str = "f32") -> str | None:
    """HF safetensors -> GGUF. Returns the pre-tokenizer fallback used, if any."""
    cmd = [sys.executable, "-m", "orchestrator.cluster.gguf_convert", str(converter_dir()), str(hf_dir),
           "--outfile", str(out), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
        raise LatheError(f"convert_hf_to_gguf failed on {hf_dir}: {tail[0][:300]}")
    for line in proc.stderr.splitlines():
        if line.startswith(f"{MARKER}="):
            fallback = line.split("=", 1)[1]
            log.warning("GGUF: the converter did not recognise the pre-tokenizer; used %r", fallback)
            return fallback
    return None


def quantize(src: Path, dst: Path, level: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[level])
    params.nthread = os.cpu_count() or 1
    tmp = dst.with_suffix(".part")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise LatheError(f"llama.cpp could not quantize {src.name} to {level} (code {rc})")
    os.replace(tmp, dst)
