"""Run llama.cpp's own `convert_hf_to_gguf.py`, knowing more byte-level BPE pre-tokenizers than it does.

The converter identifies a BPE pre-tokenizer by hashing how it splits a probe
string, and refuses any tokenizer whose hash it has not seen: every tokenizer
trained for a fine-tune, however standard its splitting rules. What llama.cpp
needs to know is only those rules, so an unknown tokenizer is matched by them
instead: its pre-tokenizer's split pattern and its normaliser, against the
patterns llama.cpp implements (GPT-2's, Qwen2's, Llama 3's). No match: refused
with one line. Whatever was chosen, export then proves llama.cpp's token ids
equal HF's on a probe text (`gguf.check_tokenizer`).

A base made from a GGUF file with a SentencePiece tokenizer (Gemma) has no faithful route through the
converter: transformers rebuilt that vocabulary as a BPE tokenizer.json without the `tokenizer.model`
llama.cpp reads, and the scores and token types are not in it (the converter then writes a byte-level
BPE stand-in, named by whichever known tokenizer's hash it matches: Gemma 3's, with its <bos>, matches
`granite-embed-multi-311m`). The source file holds the tokenizer itself, so
`--vocab-from SOURCE.gguf` copies its `tokenizer.ggml.*` fields as they are (the chat template is the
fine-tune's own, from the model directory); the probe then proves the HF tokenizer against the result.
Run as a separate process:

    python -m orchestrator.cluster.gguf_convert LLAMA_CPP_DIR MODEL_DIR [--vocab-from SOURCE.gguf] \
        --outfile F --outtype f32
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

MARKER = "LATHE_PRE_TOKENIZER_FALLBACK"
REFUSED = "LATHE_PRE_TOKENIZER_REFUSED"
REFUSED_EXIT = 3

# Split patterns as tokenizer.json writes them -> llama.cpp's name for the pre-tokenizer that implements
# them (src/llama-vocab.cpp quotes each original pattern beside its adaptation).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
KNOWN_PATTERNS = {
    GPT2_PATTERN: "gpt-2",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""":
        "qwen2",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""":
        "llama-bpe",
}
# llama.cpp's Llama 3 pre-tokenizer also takes a whole split piece that is in the vocabulary as one token
# before trying merges (tokenizer.json's `ignore_merges`); the others merge always.
IGNORES_MERGES = {"gpt-2": False, "qwen2": False, "llama-bpe": True}
# llama.cpp does not normalise; NFC is accepted for Qwen2 as llama.cpp itself accepts Qwen2's own tokenizer
# (text already in NFC, which is what editors and the web produce, tokenizes the same).
ALLOWED_NORMALISERS = {"gpt-2": {None}, "qwen2": {None, "NFC"}, "llama-bpe": {None}}


def _split_pattern(step: dict[str, Any]) -> str | None:
    pattern = step.get("pattern") or {}
    return pattern.get("Regex") or pattern.get("String")


def match_pre_tokenizer(tokenizer_json: dict[str, Any]) -> tuple[str | None, str]:
    """(llama.cpp pre-tokenizer name or None, what the tokenizer does, in words) for a byte-level BPE."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        return None, "not a BPE model"
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        pattern = GPT2_PATTERN  # ByteLevel's built-in regex is GPT-2's
    elif (kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True)
          and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert", False)):
        pattern = _split_pattern(steps[0]) or ""
    else:
        return None, f"pre-tokenizer steps {kinds}"
    name = KNOWN_PATTERNS.get(pattern)
    if name is None:
        return None, f"split pattern {pattern!r} is none of {', '.join(sorted(set(KNOWN_PATTERNS.values())))}"
    normaliser = (tokenizer_json.get("normalizer") or {}).get("type")
    if normaliser not in ALLOWED_NORMALISERS[name]:
        return None, f"{name} split pattern with normaliser {normaliser}"
    if bool(model.get("ignore_merges", False)) != IGNORES_MERGES[name]:
        return None, f"{name} split pattern with ignore_merges={bool(model.get('ignore_merges', False))}"
    return name, f"{name} split pattern"


def _pipeline(tokenizer, model_dir: Path) -> dict[str, Any]:
    """The tokenizer as transformers runs it. Not always tokenizer.json: transformers 5 rebuilds some
    families' pipelines in code (Qwen2Tokenizer sets Qwen2's pattern whatever the file says)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return json.loads(backend.to_str())
    path = model_dir / "tokenizer.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _chat_template(model_dir: Path) -> str | None:
    """The chat template the model directory carries (transformers 5 writes chat_template.jinja)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = model_dir / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) else None


def copy_vocab(writer: Any, source: Path, model_dir: Path) -> None:
    """Write the source GGUF's tokenizer fields into `writer`, and the model directory's chat template."""
    from gguf import GGUFReader, GGUFValueType

    for name, field in GGUFReader(str(source)).fields.items():
        if not name.startswith("tokenizer.") or name == "tokenizer.chat_template":
            continue
        kind = field.types[0]
        sub_kind = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub_kind)
    template = _chat_template(model_dir)
    if template:
        writer.add_chat_template(template)


def main(argv: list[str]) -> None:
    tools, model_dir = Path(argv[0]), Path(argv[1])
    rest = list(argv[2:])
    vocab_from = None
    if "--vocab-from" in rest:
        at = rest.index("--vocab-from")
        vocab_from = Path(rest[at + 1])
        del rest[at:at + 2]
    sys.path.insert(0, str(tools))
    sys.path.insert(1, str(tools / "gguf-py"))
    import convert_hf_to_gguf
    from conversion.base import TextModel

    if vocab_from is not None:
        def from_source(self) -> None:
            copy_vocab(self.gguf_writer, vocab_from, model_dir)

        # The converter imports the model's class by architecture, lazily; the class it picks (Gemma3Model
        # defines a set_vocab of its own) takes the source's vocabulary instead. One conversion per process.
        pick = convert_hf_to_gguf.get_model_class

        def with_source_vocab(*args: Any, **kwargs: Any) -> type:
            cls = pick(*args, **kwargs)
            cls.set_vocab = from_source
            return cls

        convert_hf_to_gguf.get_model_class = with_source_vocab

    recognise = TextModel.get_vocab_base_pre

    def by_split_rules(self, tokenizer) -> str:
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            name, what = match_pre_tokenizer(_pipeline(tokenizer, model_dir))
            if name is None:
                print(f"{REFUSED}={what}", file=sys.stderr, flush=True)
                sys.exit(REFUSED_EXIT)
            logging.getLogger("lathe").warning("pre-tokenizer not recognised by hash; %s: using %r", what, name)
            print(f"{MARKER}={name}", file=sys.stderr, flush=True)
            return name

    TextModel.get_vocab_base_pre = by_split_rules
    sys.argv = ["convert_hf_to_gguf.py", str(model_dir), *rest]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
