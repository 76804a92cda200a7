"""Instruction following that a program can check: IFEval's instructions, lm-eval's checker functions.

A prompt carries instruction ids and their arguments ("answer in at most 40 words", "no commas", "JSON
only"). lm-evaluation-harness's IFEval checkers decide, per instruction, whether the answer obeys;
the scores are IFEval's four: prompt-level (every instruction obeyed) and instruction-level, each
strict and loose (loose forgives a first or last line of chatter and markdown asterisks). The main
score, paired across levels, is prompt-level strict.

Prompts: a set written for Lathe ships with it (instruction kinds that need no downloaded data);
a recipe may name its own file in IFEval's format, or `hub` for google/IFEval itself.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Container
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.errors import LatheError, one_line
from orchestrator.evaluation.benchmarks.common import Prompt, SuiteScore, read_jsonl
from orchestrator.recipe_benchmarks import IFEval

HUB_DATASET = "google/IFEval"


class Row(BaseModel):
    """One line of IFEval's data."""

    model_config = ConfigDict(extra="ignore")

    key: int | str
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


@cache
def _lm_eval() -> Any:
    """lm-eval's IFEval module. Importing it asks nltk to fetch its sentence splitter (punkt_tab) when
    none is installed. Set-up installs it (scripts/fetch_nltk_data.py); without it the fetch fails offline,
    harmlessly (only `length_constraints:number_sentences` needs it), but prints a screenful, hence the
    muffling."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            from lm_eval.tasks.ifeval import utils
        except ImportError:
            raise LatheError("lathe.eval.benchmarks.ifeval needs lm-eval with its ifeval extra: "
                             "pip install 'lm-eval[ifeval]'") from None
    return utils


def shipped() -> Path:
    return Path(str(resources.files("orchestrator.evaluation.benchmarks") / "data" / "ifeval.jsonl"))


def _from_hub() -> list[dict[str, Any]]:
    try:
        import datasets

        return list(datasets.load_dataset(HUB_DATASET, split="train"))
    # No network, offline mode, or no such dataset: datasets raises ConnectionError, FileNotFoundError
    # (DatasetNotFoundError) or an HTTP error, all OSErrors.
    except (ImportError, OSError) as exc:
        raise LatheError(f"lathe.eval.benchmarks.ifeval.prompts: hub: {HUB_DATASET} could not be loaded "
                         f"({exc.__class__.__name__}); name a local file instead") from None


def rows(config: IFEval, recipe_dir: Path) -> list[Row]:
    if config.prompts == "hub":
        raw, where = _from_hub(), HUB_DATASET
    else:
        path = recipe_dir / config.prompts if config.prompts else shipped()
        where = path.name
        raw = read_jsonl(path)
    out = parse(raw, where, _lm_eval().instructions_registry.INSTRUCTION_DICT)
    return out[: config.limit] if config.limit else out


def parse(raw: list[dict[str, Any]], where: str, known: Container[str]) -> list[Row]:
    """IFEval-format rows, each instruction one the checkers know; one line naming the file and line if not."""
    out = []
    for n, item in enumerate(raw, 1):
        try:
            row = Row.model_validate(item)
        except ValidationError as exc:
            raise LatheError(one_line(exc, f"{where}: line {n}")) from None
        unknown = [i for i in row.instruction_id_list if i not in known]
        if unknown or len(row.kwargs) != len(row.instruction_id_list):
            what = f"unknown instruction {unknown[0]!r}" if unknown else "kwargs must have one entry per instruction"
            raise LatheError(f"{where}: line {n}: {what}")
        out.append(row)
    return out


def prompts(config: IFEval, recipe_dir: Path) -> list[Prompt]:
    return [Prompt(suite="ifeval", id=str(row.key), messages=[{"role": "user", "content": row.prompt}],
                   max_tokens=config.max_tokens, data=row.model_dump())
            for row in rows(config, recipe_dir)]


def check(row: dict[str, Any], output: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose): per instruction, whether `output` obeys it, as lm-eval's checkers decide."""
    utils = _lm_eval()
    example = utils.InputExample(key=row["key"], instruction_id_list=row["instruction_id_list"],
                                 prompt=row["prompt"], kwargs=row["kwargs"])
    return verdicts("IFEval", row["key"], lambda: (utils.test_instruction_following_strict(example, output),
                                                   utils.test_instruction_following_loose(example, output)))


def verdicts(suite: str, key: Any, both: Callable[[], tuple[Any, Any]]) -> tuple[list[bool], list[bool]]:
    """Per instruction (strict, loose), from a checker package's two tests (`both`, each giving IFEval's
    OutputExample); one line naming the prompt when NLTK data a checker needs is not installed."""
    try:
        strict, loose = both()
    except LookupError as exc:  # NLTK's text is a boxed page: its first line of words says what is missing
        first = next((line.strip() for line in str(exc).splitlines() if line.strip("* \n")), "")
        raise LatheError(f"{suite} prompt {key}: a checker needs NLTK data that is missing ({first})") from None
    return list(strict.follow_instruction_list), list(loose.follow_instruction_list)


def score(asked: list[Prompt], outputs: dict[str, str]) -> SuiteScore:
    return scored(asked, outputs, check)


Checker = Callable[[dict[str, Any], str], tuple[list[bool], list[bool]]]


def scored(asked: list[Prompt], outputs: dict[str, str], checker: Checker) -> SuiteScore:
    """IFEval's four scores from per-instruction (strict, loose) verdicts: prompt-level (every instruction
    obeyed) and instruction-level, each strict and loose; prompt-level strict is the paired item score."""
    items: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    strict_all: list[bool] = []
    loose_all: list[bool] = []
    loose_prompts = 0
    for prompt in asked:
        output = outputs.get(prompt.id, "")
        strict, loose = checker(prompt.data, output)
        items[prompt.id] = 1.0 if all(strict) else 0.0
        loose_prompts += all(loose)
        strict_all += strict
        loose_all += loose
        details[prompt.id] = {"output": output, "instructions": prompt.data["instruction_id_list"],
                              "strict": strict, "loose": loose}
    metrics = {
        "prompt_strict": sum(items.values()) / len(items),
        "instruction_strict": sum(strict_all) / len(strict_all),
        "prompt_loose": loose_prompts / len(items),
        "instruction_loose": sum(loose_all) / len(loose_all),
    }
    return SuiteScore(main="prompt_strict", metrics=metrics, items=items, details=details)
