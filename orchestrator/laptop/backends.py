"""The runtimes a user will actually run: llama.cpp (GGUF) and MLX, behind one small interface.

Both score exactly the token ids they are given, so quality numbers compare the
same tokens as the full-precision reference, whatever each runtime's tokenizer does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np


class Backend(Protocol):
    name: str

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        """Log-softmax over the vocabulary at every position but the last: shape (len-1, vocab)."""

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, prompt: str, max_tokens: int) -> str: ...


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, model_path: Path, n_ctx: int = 512) -> None:
        from llama_cpp import Llama

        self.model = Llama(model_path=str(model_path), n_ctx=n_ctx, logits_all=True, verbose=False,
                           n_threads=os.cpu_count() or 1, seed=0)

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        self.model.reset()
        self.model.eval(tokens)
        scores = np.array(self.model.scores[: len(tokens) - 1], dtype=np.float32)
        return _log_softmax(scores)

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode(), add_bos=False, special=True)

    def generate(self, prompt: str, max_tokens: int) -> str:
        out = self.model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=0)
        return out["choices"][0]["text"]


class MLX:
    name = "mlx"

    def __init__(self, model_dir: Path) -> None:
        from mlx_lm import load

        self.model, self.tokenizer = load(str(model_dir))

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        import mlx.core as mx

        logits = self.model(mx.array([tokens]))[0, :-1].astype(mx.float32)
        return _log_softmax(np.array(logits))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def generate(self, prompt: str, max_tokens: int) -> str:
        from mlx_lm import generate

        return generate(self.model, self.tokenizer, prompt=prompt, max_tokens=max_tokens, verbose=False)
