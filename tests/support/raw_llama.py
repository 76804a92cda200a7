"""Answers from a GGUF through raw llama-cpp-python, Lathe's code not involved: the independent check
that a fine-tune's trained answers survive export (tests/test_real_model.py, bench/real_models.py)."""

from __future__ import annotations

from pathlib import Path


def greedy_answers(gguf: Path, prompts: list[str], max_tokens: int = 32) -> list[str]:
    """Each prompt as one user turn through the GGUF's own chat template, greedy."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=256, verbose=False, seed=0)
    try:
        return [llm.create_chat_completion([{"role": "user", "content": p}], temperature=0.0,
                                           max_tokens=max_tokens)["choices"][0]["message"]["content"].strip()
                for p in prompts]
    finally:
        llm.close()


def verbatim(gguf: Path, items: list[dict]) -> int:
    """How many items' `expected` answers come back word for word."""
    answers = greedy_answers(gguf, [i["prompt"] for i in items])
    return sum(a == i["expected"] for a, i in zip(answers, items, strict=True))
