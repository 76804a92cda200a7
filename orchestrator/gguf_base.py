"""A GGUF file as the base model: the very file a user runs in llama.cpp, Ollama or LM Studio.

`base_model: models/SmolLM2-135M-Instruct.Q4_1.gguf` is dequantized once into a float32 Hugging Face
directory that Axolotl trains, cached by the file's sha256. Its "full precision" is the GGUF's
quantized weights made float again: the source's quantization noise is baked in, and every place the
base is named says so (`provenance`).

The GGUF's own tokenizer is the truth. transformers rebuilds an HF tokenizer from the GGUF's
vocabulary and merges but not its pre-tokenizer (which splits text before BPE: SmolLM2 splits digits
one by one); the one llama.cpp names is restored here, and the result is proven token for token
against llama.cpp on a probe, special tokens included, before any training is paid for. A SentencePiece
tokenizer (Gemma) becomes a BPE tokenizer.json that llama.cpp's converter cannot turn back, so the export
copies this file's tokenizer into every GGUF it writes (`export.vocab_source`), proven again there.

Validation (`problems`) reads the header only: cheap, with no torch.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.cache import cache_home
from orchestrator.errors import LatheError

SUFFIX = ".gguf"
# tokenizer.ggml.model values an export can write back: gpt2 (byte-level BPE), llama (SentencePiece).
EXPORTABLE_TOKENIZERS = frozenset({"gpt2", "llama"})
PROVENANCE = "lathe-base-provenance.json"

# llama.cpp's pre-tokenizer names (tokenizer.ggml.pre) -> the HF pre-tokenizer that splits the same way.
# Only those whose split transformers' GGUF conversion loses; any other is left as converted, and the
# probe decides.
_PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    # llama.cpp: "\p{N}" (each digit alone), then GPT-2's split.
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
}


def is_gguf(base_model: object) -> bool:
    return isinstance(base_model, str) and base_model.lower().endswith(SUFFIX)


@dataclass(frozen=True)
class Header:
    architecture: str
    quantization: str        # the file's type as llama.cpp names it: Q4_1, Q4_K_M, F16...
    tokenizer_model: str     # gpt2 (byte-level BPE) or llama (SentencePiece)
    pre_tokenizer: str | None
    chat_template: str | None = None
    # The BOS/EOS llama.cpp adds to a text (tokenizer.ggml.add_*_token); None where the file says nothing.
    add_bos_token: bool | None = None
    add_eos_token: bool | None = None
    eos_token: str | None = None  # its text, e.g. Gemma's "<eos>"

    @property
    def has_chat_template(self) -> bool:
        return self.chat_template is not None


def read_header(path: Path) -> Header:
    """The few header fields Lathe needs, via gguf-py (llama.cpp's own reader). gguf-py parses every
    token of the vocabulary to open a file (10 s for Gemma's 262,144), so a header is kept on disk per
    file version (path, size, mtime): validation reads it again for free."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_HEADER_VERSION}".encode()).hexdigest()
    kept = cache_home() / "gguf-headers" / f"{key[:32]}.json"
    try:
        return Header(**json.loads(kept.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    header = _parse_header(path)
    try:  # a cache that cannot be written is only a slower next time
        kept.parent.mkdir(parents=True, exist_ok=True)
        staging = kept.with_suffix(f".{os.getpid()}.partial")
        staging.write_text(json.dumps(asdict(header)))
        staging.replace(kept)
    except OSError:
        pass
    return header


_HEADER_VERSION = 2  # bump when Header's fields change: older kept headers are then read again


def _parse_header(path: Path) -> Header:
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise LatheError(f"{path.name}: not a readable GGUF file ({exc})") from None

    def field(key: str) -> Any:
        found = reader.fields.get(key)
        return None if found is None else found.contents()

    file_type = field("general.file_type")
    try:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quantization = f"file type {file_type}"
    eos_id, tokens = field("tokenizer.ggml.eos_token_id"), reader.fields.get("tokenizer.ggml.tokens")
    eos = tokens.contents(int(eos_id)) if eos_id is not None and tokens is not None else None
    return Header(architecture=str(field("general.architecture")), quantization=quantization,
                  tokenizer_model=str(field("tokenizer.ggml.model")), pre_tokenizer=field("tokenizer.ggml.pre"),
                  chat_template=field("tokenizer.chat_template"),
                  add_bos_token=_flag(field("tokenizer.ggml.add_bos_token")),
                  add_eos_token=_flag(field("tokenizer.ggml.add_eos_token")), eos_token=eos)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def loadable_architectures() -> frozenset[str]:
    """Architectures transformers can load from a GGUF (its own mapping, read without importing it)."""
    from orchestrator.installed_source import dict_keys

    return dict_keys("transformers.integrations.ggml", "GGUF_CONFIG_MAPPING") - {"general", "tokenizer"}


def problems(path: Path) -> list[str]:
    """Why this GGUF cannot be a base, one reason each (validate time: the header only)."""
    if not path.is_file():
        return [f"no such file '{path}'"]
    try:
        header = read_header(path)
    except LatheError as exc:
        return [str(exc)]
    except ImportError:
        return ["reading a GGUF base needs the gguf package (lathe[node])"]
    found: list[str] = []
    if header.architecture not in loadable_architectures():
        found.append(f"{path.name}: architecture '{header.architecture}' cannot be loaded from GGUF by this "
                     f"transformers (it can: {', '.join(sorted(loadable_architectures()))})")
    if header.tokenizer_model not in EXPORTABLE_TOKENIZERS:
        # Byte-level BPE goes back through llama.cpp's converter; SentencePiece is copied from this file
        # into every exported GGUF (cluster/gguf_convert). Anything else has no tested route back.
        found.append(f"{path.name}: its tokenizer is '{header.tokenizer_model}'; Lathe exports "
                     f"{' and '.join(sorted(EXPORTABLE_TOKENIZERS))} tokenizers only, so it refuses it before "
                     "the training is paid for")
    return found


def sha256(path: Path) -> str:
    """The file's sha256, read once per file version (path, size, mtime) in a process: a run asks for it
    several times (is it made? make it; its provenance), and a Gemma GGUF is 253 MB."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from orchestrator.manifest import sha256_file

    return sha256_file(Path(path))


@dataclass(frozen=True)
class Provenance:
    source: str          # the file the user named, absolute
    sha256: str
    quantization: str
    architecture: str
    full_precision: str  # what "full precision" means for this base

    @classmethod
    def read(cls, model_dir: str | Path) -> Provenance | None:
        """The provenance of a base made from a GGUF, or None for any other base."""
        path = Path(model_dir) / PROVENANCE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def provenance_of(path: Path, digest: str | None = None, named: str | None = None) -> Provenance:
    """What a base made from this GGUF file records, read from the file alone (its header and sha256);
    `named`: how the user named it, where this machine's path means nothing to them (a cluster job's copy)."""
    header = read_header(path)
    return Provenance(source=named or str(path), sha256=digest or sha256(path), quantization=header.quantization,
                      architecture=header.architecture, full_precision=f"dequantized from {header.quantization}")


def for_manifest(model_dir: str | Path) -> dict[str, str] | None:
    """The provenance a manifest carries (and with it the report and the card): the file's name, not
    where it sat on the machine that trained; None for a base not made from a GGUF."""
    provenance = Provenance.read(model_dir)
    if provenance is None:
        return None
    return {"file": Path(provenance.source).name, "sha256": provenance.sha256,
            "quantization": provenance.quantization, "architecture": provenance.architecture,
            "full_precision": provenance.full_precision}


def line(provenance: dict[str, str] | None) -> str | None:
    """One line naming where the base's full precision came from, for the terminal and report.md."""
    if not provenance:
        return None
    return (f"base: {provenance['file']} (sha256 {provenance['sha256'][:12]}, {provenance['quantization']}, "
            f"{provenance['architecture']}): full precision = {provenance['full_precision']}, with the source "
            "file's quantization noise in it; every level is compared with that")


def _cache_root() -> Path:
    return cache_home() / "gguf-bases"


def cached_dir(path: Path) -> Path | None:
    """The HF directory already made from this file, if any."""
    target = _cache_root() / sha256(path)
    return target if (target / PROVENANCE).is_file() else None


def prepare(path: Path, say: Callable[[str], None] = lambda _: None) -> Path:
    """The trainable HF directory for this GGUF: made once per file content, under a lock."""
    path = path.expanduser().resolve()
    digest = sha256(path)
    target = _cache_root() / digest
    if (target / PROVENANCE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / PROVENANCE).is_file():
            staging = target.parent / f".{digest}.{os.getpid()}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                _make(path, digest, staging, say)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _make(path: Path, digest: str, out: Path, say: Callable[[str], None]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from orchestrator.cluster.gguf import check_tokenizer
    from orchestrator.quiet import quiet_stderr

    header = read_header(path)
    began = time.monotonic()
    say(f"{path.name}: reading its tokenizer (first use of this file only)")
    with quiet_stderr(switches=False):
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _restore_pre_tokenizer(tokenizer, header.pre_tokenizer)
    _restore_framing(tokenizer, header)
    say(f"{path.name}: dequantizing its {header.quantization} weights to float32")
    with quiet_stderr(switches=False):
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # transformers marks a model loaded from GGUF as quantized and will not save it; the same weights in
    # a model built from the same config, minus that mark, save as plain safetensors.
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()  # the output head is the embedding: loaded once, shared again
        missing = [m for m in missing if not m.startswith("lm_head.")]
    if missing or unexpected:
        raise LatheError(f"{path.name}: its weights do not fit the model transformers builds for it "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    say(f"{path.name}: proving the tokenizer against llama.cpp's")
    check_tokenizer(path, out)
    provenance = provenance_of(path, digest)
    (out / PROVENANCE).write_text(json.dumps(asdict(provenance), indent=2) + "\n")
    say(f"{path.name}: ready in {time.monotonic() - began:.0f} s ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
        f"parameters, full precision = {provenance.full_precision})")


def _restore_framing(tokenizer: Any, header: Header) -> None:
    """Add the BOS/EOS the GGUF says a text gets: transformers' conversion drops Gemma's `<bos>`, and
    Gemma without it is another model (the tokenizer proof checks this framing too)."""
    for flag in ("add_bos_token", "add_eos_token"):
        wanted = getattr(header, flag)
        if wanted is not None and wanted != bool(getattr(tokenizer, flag, False)):
            setattr(tokenizer, flag, wanted)


def _restore_pre_tokenizer(tokenizer: Any, pre: str | None) -> None:
    """Put back the pre-tokenizer llama.cpp names, where transformers' conversion dropped it."""
    wanted = _PRE_TOKENIZERS.get(pre or "")
    if wanted is None:
        return
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state["pre_tokenizer"] = wanted
    tokenizer._tokenizer = Tokenizer.from_str(json.dumps(state))
