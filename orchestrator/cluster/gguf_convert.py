"""Run llama.cpp's own `convert_hf_to_gguf.py`, with one fallback: the BPE pre-tokenizer.

The converter identifies a BPE pre-tokenizer by hashing how it splits a probe
string and refuses tokenizers it has not seen (every locally trained one). For a
byte-level BPE with GPT-2's split pattern the right answer is `gpt-2`; for any
other tokenizer the refusal stands. Run as a separate process:

    python -m orchestrator.cluster.gguf_convert LLAMA_CPP_DIR MODEL_DIR --outfile F --outtype f32
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

FALLBACK = "gpt-2"
MARKER = "LATHE_PRE_TOKENIZER_FALLBACK"


def is_gpt2_byte_level(model_dir: Path) -> bool:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return False
    pre = json.loads(path.read_text()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True)


def main(argv: list[str]) -> None:
    tools, model_dir = Path(argv[0]), Path(argv[1])
    sys.path.insert(0, str(tools))
    sys.path.insert(1, str(tools / "gguf-py"))
    import convert_hf_to_gguf
    from conversion.base import TextModel

    recognise = TextModel.get_vocab_base_pre

    def with_fallback(self, tokenizer) -> str:
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            if not is_gpt2_byte_level(model_dir):
                raise
            logging.getLogger("lathe").warning("pre-tokenizer not recognised; byte-level BPE: using %r", FALLBACK)
            print(f"{MARKER}={FALLBACK}", file=sys.stderr, flush=True)
            return FALLBACK

    TextModel.get_vocab_base_pre = with_fallback
    sys.argv = ["convert_hf_to_gguf.py", str(model_dir), *argv[2:]]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
