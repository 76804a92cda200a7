"""The runtimes a user will actually run: llama.cpp (GGUF) and MLX, behind one small interface.

Both score exactly the token ids they are given, so quality numbers compare the
same tokens as the full-precision reference, whatever each runtime's tokenizer
does. Chat goes through each runtime's own chat-template handling, as it will
for the user.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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

    def complete(self, prompt: str, max_tokens: int, stop: list[str]) -> str:
        """Greedy continuation of plain text (no chat template; the BOS the model's tokenizer adds), cut at
        the first of `stop`."""

    def chat(self, messages: list[dict[str, str]], sampling: Sampling, tools: list[dict] | None = None) -> str:
        """The assistant's reply through the model's own chat template (with `tools` when given)."""

    def takes_tools(self) -> bool:
        """Whether the model's chat template renders a `tools` list (if not, tools go in a system message)."""

    def speed(self, prompt: list[int], gen_tokens: int = 32) -> tuple[float, float]:
        """(prompt tokens/s, generated tokens/s)."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64, in place where it can be: a 262k vocabulary makes each copy of a 128-token window's
    log-probs 270 MB, and the scorer's memory is counted apart from the level's."""
    out = logits.astype(np.float64)
    out -= out.max(axis=-1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=-1, keepdims=True))
    return out


def scoring_bytes(vocab: int, window: int) -> int:
    """What scoring a window adds to a level's memory, roughly: llama.cpp's logits for every position (its
    output buffer and llama-cpp-python's copy, float32) and the float64 log-softmax with its temporary."""
    return window * vocab * (4 + 4 + 8 + 8)


def _stop_at(text: str, stops: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


REPEAT_WINDOW = 64  # tokens the repeat penalty looks back over, in both runtimes


def _release_samplers() -> None:
    """llama-cpp-python builds a sampler chain for every request, with native buffers the size of the
    vocabulary, and the Python objects around it are in a reference cycle: they are freed only when the
    cycle collector runs, which counts Python objects, not native bytes. On Gemma 3 (262,144 tokens)
    each request left ~3 MB behind, and a level's served peak grew with the number of questions asked
    (+150 MB after 20). Collected after each request, the peak is the model's."""
    gc.collect()


def fine_tune_template(hf_dir: Path) -> str | None:
    """The chat template the fine-tune was exported with (export/hf, which every pull brings): what a base
    without one of its own is asked through, so that base and fine-tune answer the same prompts."""
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = hf_dir / "tokenizer_config.json"
    found = json.loads(config.read_text(encoding="utf-8")).get("chat_template") if config.is_file() else None
    return found if isinstance(found, str) else None


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, model_path: Path, n_ctx: int = 512, n_threads: int = 0, scoring: bool = False,
                 template: str | None = None) -> None:
        """`n_threads`: 0 for every core (what a user's llama.cpp takes), fewer when levels run side by side.
        `scoring`: logits at every position (`logits_all`), which `logprobs` needs and serving does not: a row
        of n_vocab floats per position, hundreds of MB for a large vocabulary, and slower prompts. Without it
        the model is loaded as a user serves it, and its memory and tokens/s are the user's.
        `template`: the chat template to ask through when the file has none of its own (a pretrained
        base): without it llama-cpp-python falls back to Llama 2's [INST] format, which neither the base
        nor the fine-tune was asked in."""
        from llama_cpp import Llama

        self.path, self.n_ctx, self.n_threads, self.scoring = Path(model_path), n_ctx, n_threads, scoring
        threads = n_threads or cpus.threads()
        # Both counts: llama-cpp-python's prompt batches otherwise take every core whatever n_threads says,
        # and ggml's spinning threads, oversubscribed, slow a level several times over.
        # Read, not mapped: on a CPU, llama.cpp repacks k-quant weights into buffers of its own, and with the
        # file mapped their original pages stay resident beside the copies (reclaimable, but counted): SmolLM2
        # q2_k showed 170 MB resident for an 88 MB file, against 126 MB read. Read, the resident memory is what
        # the level must hold: weights (as llama.cpp keeps them), KV cache, buffers.
        self.model = Llama(model_path=str(model_path), n_ctx=n_ctx, logits_all=scoring, verbose=False,
                           n_threads=threads, n_threads_batch=threads, seed=0, use_mmap=False)
        own = self.model.metadata.get("tokenizer.chat_template")
        self.template = own or template
        if template and not own:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self.model
            eos, bos = model.token_eos(), model.token_bos()
            self.model.chat_handler = Jinja2ChatFormatter(
                template, eos_token=model.detokenize([eos], special=True).decode(errors="replace"),
                bos_token=model.detokenize([bos], special=True).decode(errors="replace"),
                stop_token_ids=[eos]).to_chat_handler()

    def scorer(self, n_ctx: int | None = None) -> LlamaCpp:
        """The same file loaded for scoring, at `n_ctx` (default: this instance's); this serving instance is
        closed first, so that the two are never in memory together."""
        n_ctx = n_ctx or self.n_ctx
        if self.scoring and self.n_ctx == n_ctx:
            return self
        self.close()
        return LlamaCpp(self.path, n_ctx, self.n_threads, scoring=True, template=self.template)

    def close(self) -> None:
        self.model.close()

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        if not self.scoring:
            raise RuntimeError("logprobs needs a scorer: LlamaCpp(..., scoring=True) or .scorer()")
        self.model.reset()
        self.model.eval(tokens)
        return _log_softmax(np.array(self.model.scores[: len(tokens) - 1], dtype=np.float32))

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode(), add_bos=False, special=True)

    def vocab_size(self) -> int:
        return self.model.n_vocab()

    def complete(self, prompt: str, max_tokens: int, stop: list[str]) -> str:
        out = self.model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, seed=0, stop=stop)
        _release_samplers()
        return out["choices"][0]["text"]

    def chat(self, messages: list[dict[str, str]], sampling: Sampling, tools: list[dict] | None = None) -> str:
        out = self.model.create_chat_completion(
            messages=messages, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
            min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty, seed=sampling.seed, stop=sampling.stop or None,
            max_tokens=sampling.max_tokens, tools=tools,
        )
        _release_samplers()
        return out["choices"][0]["message"]["content"] or ""

    def takes_tools(self) -> bool:
        return "tools" in (self.template or "")

    def speed(self, prompt: list[int], gen_tokens: int = 32) -> tuple[float, float]:
        import llama_cpp

        model, vocab = self.model, self.model.n_vocab()
        model.reset()
        start = time.perf_counter()
        model.eval(prompt)
        prompt_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(gen_tokens):  # greedy, a fixed count: EOS does not end it early
            # The last position's logits, from llama.cpp itself: a serving instance keeps no `scores`.
            last = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, -1), shape=(vocab,))
            model.eval([int(np.argmax(last))])
        return len(prompt) / prompt_s, gen_tokens / (time.perf_counter() - start)


class MLX:
    name = "mlx"

    def __init__(self, model_dir: Path) -> None:
        from mlx_lm import load

        self.model, self.tokenizer = load(str(model_dir))
        # `complete`'s KV cache, the tokens of the prompt it was last filled with, and prompt tokens prefilled
        self._cache: list[Any] | None = None
        self._cached: list[int] = []
        self.prefilled = 0

    def scorer(self, n_ctx: int | None = None) -> MLX:
        """MLX computes the logits it is asked for, whatever it serves: one instance does both (it has no
        fixed context to size)."""
        return self

    def close(self) -> None:
        pass

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        import mlx.core as mx

        logits = self.model(mx.array([tokens]))[0, :-1].astype(mx.float32)
        return _log_softmax(np.array(logits))

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def vocab_size(self) -> int:
        return int(self.model.args.vocab_size)

    def complete(self, prompt: str, max_tokens: int, stop: list[str]) -> str:
        """As llama.cpp does for consecutive prompts, the KV cache of the part this prompt shares with the
        previous one is kept, and only the rest is prefilled: few-shot prompts share their shots, and MLX
        on a CPU prefills ~15 tokens/s (Gemma 3 270M's 26 true facts: 171 s per level prefilling each
        whole prompt). Streamed, to end at the stop as llama.cpp does (greedy: mlx-lm's default)."""
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        bos = self.tokenizer.bos_token
        tokens = self.tokenizer.encode(prompt, add_special_tokens=bos is None or not prompt.startswith(bos))
        keep = 0
        if self._cache is not None and can_trim_prompt_cache(self._cache):
            while keep < min(len(tokens) - 1, len(self._cached)) and tokens[keep] == self._cached[keep]:
                keep += 1  # at least one token is fed: the next token's logits come from it
            trim_prompt_cache(self._cache, self._cache[0].offset - keep)
        else:
            self._cache = make_prompt_cache(self.model)
        self._cached, self.prefilled = tokens, self.prefilled + len(tokens) - keep
        text = ""
        for chunk in stream_generate(self.model, self.tokenizer, prompt=tokens[keep:], max_tokens=max_tokens,
                                     prompt_cache=self._cache):
            text += chunk.text
            if any(s in text for s in stop):
                break
        return _stop_at(text, stop)

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
