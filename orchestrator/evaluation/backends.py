"""The runtimes a user will actually run: llama.cpp (GGUF) and MLX, behind one small interface.

Both score exactly the token ids they are given, so quality numbers compare the
same tokens as the full-precision reference, whatever each runtime's tokenizer
does. Chat goes through each runtime's own chat-template handling, as it will
for the user.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from orchestrator import cpus

if TYPE_CHECKING:
    from orchestrator.evaluation.tasks import Sampling


class Backend(Protocol):
    name: str

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        """Log-softmax over the vocabulary at every position but the last: shape (len-1, vocab)."""

    def tokenize(self, text: str) -> list[int]: ...

    def vocab_size(self) -> int: ...

    def generate(self, prompt: str, max_tokens: int) -> str: ...

    def chat(self, messages: list[dict[str, str]], sampling: Sampling, tools: list[dict] | None = None) -> str:
        """The assistant's reply through the model's own chat template (with `tools` when given)."""

    def takes_tools(self) -> bool:
        """Whether the model's chat template renders a `tools` list (if not, tools go in a system message)."""

    def speed(self, prompt: list[int], gen_tokens: int = 32) -> tuple[float, float]:
        """(prompt tokens/s, generated tokens/s)."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _stop_at(text: str, stops: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


REPEAT_WINDOW = 64  # tokens the repeat penalty looks back over, in both runtimes


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, model_path: Path, n_ctx: int = 512, n_threads: int = 0) -> None:
        """`n_threads`: 0 for every core (what a user's llama.cpp takes), fewer when levels run side by side."""
        from llama_cpp import Llama

        threads = n_threads or cpus.threads()
        # Both counts: llama-cpp-python's prompt batches otherwise take every core whatever n_threads says,
        # and ggml's spinning threads, oversubscribed, slow a level several times over.
        self.model = Llama(model_path=str(model_path), n_ctx=n_ctx, logits_all=True, verbose=False,
                           n_threads=threads, n_threads_batch=threads, seed=0)

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        self.model.reset()
        self.model.eval(tokens)
        return _log_softmax(np.array(self.model.scores[: len(tokens) - 1], dtype=np.float32))

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode(), add_bos=False, special=True)

    def vocab_size(self) -> int:
        return self.model.n_vocab()

    def generate(self, prompt: str, max_tokens: int) -> str:
        out = self.model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=0)
        return out["choices"][0]["text"]

    def chat(self, messages: list[dict[str, str]], sampling: Sampling, tools: list[dict] | None = None) -> str:
        out = self.model.create_chat_completion(
            messages=messages, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
            min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty, seed=sampling.seed, stop=sampling.stop or None,
            max_tokens=sampling.max_tokens, tools=tools,
        )
        return out["choices"][0]["message"]["content"] or ""

    def takes_tools(self) -> bool:
        return "tools" in self.model.metadata.get("tokenizer.chat_template", "")

    def speed(self, prompt: list[int], gen_tokens: int = 32) -> tuple[float, float]:
        model = self.model
        model.reset()
        start = time.perf_counter()
        model.eval(prompt)
        prompt_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(gen_tokens):  # greedy, a fixed count: EOS does not end it early
            model.eval([int(np.argmax(model.scores[model.n_tokens - 1]))])
        return len(prompt) / prompt_s, gen_tokens / (time.perf_counter() - start)


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

    def vocab_size(self) -> int:
        return int(self.model.args.vocab_size)

    def generate(self, prompt: str, max_tokens: int) -> str:
        from mlx_lm import generate

        return generate(self.model, self.tokenizer, prompt=prompt, max_tokens=max_tokens, verbose=False)

    def chat(self, messages: list[dict[str, str]], sampling: Sampling, tools: list[dict] | None = None) -> str:
        import mlx.core as mx
        from mlx_lm import generate
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        mx.random.seed(sampling.seed)
        prompt = self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
        processors = None
        if sampling.repeat_penalty != 1.0:
            # Over the last 64 tokens, as llama-cpp-python's (its fixed last_n_tokens_size); MLX's default is 20.
            processors = make_logits_processors(repetition_penalty=sampling.repeat_penalty,
                                                repetition_context_size=REPEAT_WINDOW)
        text = generate(
            self.model, self.tokenizer, prompt=prompt, max_tokens=sampling.max_tokens, verbose=False,
            sampler=make_sampler(temp=sampling.temperature, top_p=sampling.top_p, min_p=sampling.min_p,
                                 top_k=sampling.top_k),
            logits_processors=processors,
        )
        return _stop_at(text, sampling.stop)

    def takes_tools(self) -> bool:
        return "tools" in (getattr(self.tokenizer, "chat_template", None) or "")

    def speed(self, prompt: list[int], gen_tokens: int = 32) -> tuple[float, float]:
        from mlx_lm import stream_generate

        last = None
        for last in stream_generate(self.model, self.tokenizer, prompt=prompt, max_tokens=gen_tokens):
            pass
        return (float(last.prompt_tps), float(last.generation_tps)) if last else (0.0, 0.0)
