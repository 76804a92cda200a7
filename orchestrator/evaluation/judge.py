"""The arena's optional judge: any chat GGUF grading each answer against the expected one, and a check
of whether its grades can be believed.

A grade is the judge's expected grade, not its single likeliest digit: after the prompt, its next-token
probabilities over the digits 1-9, renormalised, weighted by the digit. A small judge's likeliest digit
is often the same whatever it reads (SmolLM2-135M said "10" to every answer, right or wrong, and Gemma 3
270M "2"); the expectation still moves with the answer, so the grades can be compared, and the control
pairs say whether they move the right way.

The controls (orchestrator/data/judge_controls.jsonl): questions of common knowledge, each with a right
answer and a wrong one. The judge grades both; it "separates" when it put the right one above the wrong
one in more pairs than chance would (an exact one-sided sign test at the recipe's significance level).
A judge that does not separate is shown as such beside every grade it gave.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import LatheError

if TYPE_CHECKING:
    from orchestrator.evaluation.arena import Round

SYSTEM = "You grade answers. Reply with one digit from 1 (wrong) to 9 (same meaning as the reference)."
GRADES = tuple(range(1, 10))
METHOD = ("the judge's expected grade: its next-token probabilities over the digits 1-9 after the prompt, "
          "renormalised, weighted by the digit")


@dataclass(frozen=True)
class JudgeCheck:
    """How the judge did on the control pairs."""

    judge: str  # its file name
    pairs: int
    right_above: int  # pairs where the right answer got the higher grade (a tie counts against)
    p_value: float  # one-sided exact sign test: P(at least right_above of pairs by chance)
    alpha: float

    @property
    def separates(self) -> bool:
        return self.pairs > 0 and self.p_value < self.alpha

    def line(self) -> str:
        verdict = ("its grades separate right from wrong" if self.separates else
                   "its grades do not separate right from wrong: read them as noise")
        return (f"judge {self.judge}: the right answer above a wrong one in {self.right_above} of {self.pairs} "
                f"control pairs (one-sided sign test p = {self.p_value:.3g}, alpha {self.alpha}): {verdict}")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "separates": self.separates, "method": METHOD}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> JudgeCheck:
        """Back from `as_json` (report.json's `judge`): its derived keys are dropped."""
        return cls(**{f.name: raw[f.name] for f in fields(cls)})


def sign_test_p(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2): the one-sided twin of deltas.sign_test_p."""
    from scipy.stats import binomtest

    return 1.0 if trials == 0 else float(binomtest(successes, trials, 0.5, alternative="greater").pvalue)


def controls() -> list[dict[str, str]]:
    text = resources.files("orchestrator.data").joinpath("judge_controls.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _messages(task: dict[str, str]) -> list[dict[str, str]]:
    user = (f"Question: {task['prompt']}\nReference answer: {task['reference']}\n"
            f"Answer to grade: {task['answer']}\nGrade:")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _grade_all(judge_path: str, tasks: list[dict[str, str]]) -> list[float]:
    """Runs in a fresh process: one expected grade per task. Only the last position's logits are read
    (llama.cpp's own, no `logits_all`), so a large-vocabulary judge costs no more memory than serving."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    judge = Llama(model_path=judge_path, n_ctx=1024, verbose=False, seed=0)
    try:
        template = judge.metadata.get("tokenizer.chat_template")
        if not template:
            raise LatheError(f"{Path(judge_path).name}: no chat template in the file: a judge must be a chat model")
        text = judge._model.token_get_text  # what llama-cpp-python's own chat formatting reads the tokens with
        formatter = Jinja2ChatFormatter(template, eos_token=text(judge.token_eos()), bos_token=text(judge.token_bos()))
        digits = [judge.tokenize(str(g).encode(), add_bos=False, special=False)[0] for g in GRADES]
        weights, vocab = np.array(GRADES, dtype=np.float64), judge.n_vocab()
        grades = []
        for task in tasks:
            formatted = formatter(messages=_messages(task))
            tokens = judge.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)
            judge.reset()
            judge.eval(tokens)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(judge.ctx, -1), shape=(vocab,))
            chosen = logits[digits].astype(np.float64)
            probs = np.exp(chosen - chosen.max())
            grades.append(float(probs @ weights / probs.sum()))
        return grades
    finally:
        judge.close()


def grade(rounds: list[Round], judge_path: Path, full_precision: str | None, alpha: float = 0.05) -> JudgeCheck:
    """Fill `Round.judge` for every answer that has something to be compared with (the expected answer,
    or else full precision's), and grade the control pairs in the same process."""
    tasks, slots = [], []
    for r in rounds:
        reference = r.expected or (r.answers.get(full_precision) if full_precision else None)
        if not reference:
            continue
        for name, answer in r.answers.items():
            tasks.append({"prompt": r.prompt, "reference": reference, "answer": answer})
            slots.append((r, name))
    pairs = controls()
    for c in pairs:
        tasks += [{"prompt": c["question"], "reference": c["reference"], "answer": c[side]}
                  for side in ("right", "wrong")]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        grades = pool.submit(_grade_all, str(judge_path), tasks).result()
    answered, control = grades[:len(slots)], grades[len(slots):]
    for (r, name), value in zip(slots, answered, strict=True):
        r.judge[name] = round(value, 2)
    right_above = sum(control[2 * i] > control[2 * i + 1] for i in range(len(pairs)))
    return JudgeCheck(judge_path.name, len(pairs), right_above, sign_test_p(right_above, len(pairs)), alpha)
