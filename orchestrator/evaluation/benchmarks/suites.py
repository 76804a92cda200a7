"""Every enabled benchmark at once: its prompts, its scores, and what would stop it, found early."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from orchestrator.errors import LatheError
from orchestrator.evaluation.benchmarks import bfcl, docqa, ifbench, ifeval
from orchestrator.evaluation.benchmarks.common import SUITES, Prompt, SuiteScore
from orchestrator.recipe_benchmarks import Benchmarks


def prompts(config: Benchmarks, recipe_dir: Path) -> list[Prompt]:
    """Every enabled suite's prompts, suite by suite."""
    out: list[Prompt] = []
    if config.bfcl is not None:
        out += bfcl.prompts(config.bfcl)
    if config.ifeval is not None:
        out += ifeval.prompts(config.ifeval, recipe_dir)
    if config.ifbench is not None:
        out += ifbench.prompts(config.ifbench, recipe_dir)
    if config.docqa is not None:
        out += docqa.prompts(config.docqa, recipe_dir)
    return out


def problems(config: Benchmarks, recipe_dir: Path) -> list[tuple[str, str]]:
    """(field, problem) for what would stop the benchmarks at evaluation time, found before training:
    bfcl-eval or IFBench's package missing here, a recipe's own prompt file absent or malformed. The shipped prompt files
    are not re-read (the suite tests them)."""
    found = []
    if config.bfcl is not None and importlib.util.find_spec("bfcl_eval") is None:
        found.append(("bfcl", f"needs bfcl-eval on this machine: {bfcl.INSTALL_HINT}"))
    checks = [("ifeval", config.ifeval is not None and config.ifeval.prompts not in (None, "hub"),
               lambda: ifeval.rows(config.ifeval, recipe_dir)),  # type: ignore[arg-type]
              # The package, its checkers' NLTK data and the prompts: nothing of IFBench ships with Lathe.
              ("ifbench", config.ifbench is not None, lambda: ifbench.rows(config.ifbench, recipe_dir)),  # type: ignore[arg-type]
              ("docqa", config.docqa is not None and config.docqa.dataset is not None,
               lambda: docqa.items(config.docqa, recipe_dir))]  # type: ignore[arg-type]
    for suite, given, load in checks:
        if given:
            try:
                load()
            except LatheError as exc:
                found.append((suite, str(exc)))
    return found


def score(asked: list[Prompt], outputs: dict[str, str]) -> dict[str, SuiteScore]:
    """Each suite's score for one level's outputs (keyed by `Prompt.key`)."""
    scorers = {"bfcl": bfcl.score, "ifeval": ifeval.score, "ifbench": ifbench.score, "docqa": docqa.score}
    out = {}
    for suite in SUITES:
        mine = [p for p in asked if p.suite == suite]
        if mine:
            out[suite] = scorers[suite](mine, {p.id: outputs.get(p.key, "") for p in mine})
    return out
