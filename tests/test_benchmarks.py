"""The benchmarks' scorers against known-right and known-wrong answers: BFCL's own checker (bfcl-eval),
lm-eval's IFEval checkers, the document-QA verdicts; their deltas and gates (pure functions, no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import LatheError
from orchestrator.evaluation.benchmarks import bfcl, docqa, ifeval
from orchestrator.evaluation.benchmarks import suites as benchmarks
from orchestrator.evaluation.benchmarks.common import Prompt, SuiteScore
from orchestrator.evaluation.deltas import describe
from orchestrator.evaluation.gates import add_benchmark_deltas, as_delta, gate_failures
from orchestrator.recipe import Gate
from orchestrator.recipe_benchmarks import BFCL, Benchmarks, DocQA, IFEval
from tests.test_gates_and_levels import _level

CATEGORIES = ["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"]


def _first(accepted: dict[str, list[Any]]) -> dict[str, Any]:
    """Each argument's first accepted value in BFCL's ground truth ("" means "may be left out"; a nested
    dict lists accepted values for its own keys)."""
    def value(v: Any) -> Any:
        if isinstance(v, dict):
            return _first(v)
        return [value(x) for x in v] if isinstance(v, list) else v

    return {k: value(next(v for v in values if v != "")) for k, values in accepted.items()
            if any(v != "" for v in values)}


def _right_calls(prompt: Prompt) -> str:
    """BFCL's ground truth as the model would say it: one <tool_call> per call."""
    out = []
    for call in prompt.data["answer"]:
        for name, accepted in call.items():
            out.append(f"<tool_call>\n{json.dumps({'name': name, 'arguments': _first(accepted)})}\n</tool_call>")
    return "\n".join(out)


def _wrong_argument(prompt: Prompt) -> str:
    first = prompt.data["answer"][0]
    name, accepted = next(iter(first.items()))
    args = _first(accepted)
    key = next(iter(args))
    args[key] = "a value BFCL never accepts" if not isinstance(args[key], str) else 987654321
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


def test_bfcl_checker_scores_its_own_answers_right_and_a_wrong_argument_wrong() -> None:
    asked = bfcl.prompts(BFCL(categories=CATEGORIES, per_category=3))
    assert [p.data["category"] for p in asked] == [c for c in CATEGORIES for _ in range(3)]
    assert asked[0].id == "simple_python_0" and asked[1].id != "simple_python_1", "spread over the category"
    callable_ = [p for p in asked if p.data["category"] != "irrelevance"]
    right = bfcl.score(callable_, {p.id: _right_calls(p) for p in callable_})
    assert right.metrics["accuracy"] == 1.0, right.details
    wrong = bfcl.score(callable_, {p.id: _wrong_argument(p) for p in callable_})
    assert wrong.metrics["accuracy"] == 0.0 and all(d["error"] for d in wrong.details.values())


def test_bfcls_own_decoder_and_checker_agree_with_lathes_verdict_item_by_item() -> None:
    """The re-judge bench/tool_calls.py applies to a real run's answers: bfcl-eval's own decoder (its Qwen
    handler's, for `<tool_call>` answers) and checker, against Lathe's verdict, on right calls, a wrong
    argument, no call, and a call where none fits."""
    from tests.support.bfcl_rejudge import verdict

    asked = bfcl.prompts(BFCL(categories=CATEGORIES, per_category=4))
    seen = {True: 0, False: 0}
    for prompt in asked:
        callable_ = prompt.data["category"] != "irrelevance"
        name = prompt.tools[0]["function"]["name"]
        outputs = ["I cannot help with that.",
                   f"<tool_call>\n{json.dumps({'name': name, 'arguments': {}})}\n</tool_call>"]
        # The malformed answers a real run gave (bench/tool_calls.py): one closing brace too many, and the
        # closing tag missing. Neither is a call to bfcl-eval's decoder.
        outputs += [f"<tool_call>\n{json.dumps({'name': name, 'arguments': {}})}}}\n</tool_call>",
                    f"<tool_call>\n{json.dumps({'name': name, 'arguments': {}})}"]
        if callable_:
            outputs += [_right_calls(prompt), _wrong_argument(prompt).replace("<tool_call>", "<tool_call>\n")
                        .replace("</tool_call>", "\n</tool_call>"), _right_calls(prompt).removesuffix("\n</tool_call>")]
        for output in outputs:
            lathe = bfcl.check(prompt, output)[0]
            assert verdict(prompt, output) == lathe, (prompt.id, output)
            seen[lathe] += 1
    assert seen[True] >= 20 and seen[False] >= 40, seen


def test_bfcl_irrelevance_is_right_only_when_nothing_is_called() -> None:
    asked = bfcl.prompts(BFCL(categories=["irrelevance"], per_category=2))
    some_call = {p.id: f"<tool_call>{json.dumps({'name': p.tools[0]['function']['name'], 'arguments': {}})}</tool_call>"
                 for p in asked}
    assert bfcl.score(asked, some_call).metrics["accuracy"] == 0.0
    assert bfcl.score(asked, {p.id: "None of these functions can answer that." for p in asked}).metrics == \
        {"accuracy": 1.0, "irrelevance": 1.0}


def test_bfcl_calls_are_decoded_from_tool_call_tags_or_bare_json() -> None:
    tagged = '<tool_call>\n{"name": "a.b", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>{"name": "c", ' \
             '"arguments": "{\\"y\\": [2]}"}</tool_call>'
    assert bfcl.decode(tagged) == [{"a.b": {"x": 1}}, {"c": {"y": [2]}}]
    assert bfcl.decode('Sure: [{"name": "f", "parameters": {"z": "q"}}]') == [{"f": {"z": "q"}}]
    assert bfcl.decode("The area is 25.") == [] and bfcl.decode('{"answer": 3}') == []
    # Tagged, a call is a closed block holding one JSON value, as bfcl-eval's decoder reads it.
    assert bfcl.decode('<tool_call>\n{"name": "f", "arguments": {}}}\n</tool_call>') == []
    assert bfcl.decode('<tool_call>\n{"name": "f", "arguments": {}}') == []
    assert bfcl.decode('<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g"') == [{"f": {}}]


def test_bfcl_functions_become_json_schema_tools_and_a_system_message_without_template_support() -> None:
    prompt = bfcl.prompts(BFCL(categories=["simple_python"], per_category=1))[0]
    tool = prompt.tools[0]["function"]
    assert tool["name"] == "calculate_triangle_area" and tool["parameters"]["type"] == "object"
    assert prompt.data["functions"][0]["parameters"]["type"] == "dict", "BFCL's own docs go to the checker"
    messages = bfcl.with_tools_in_system(prompt.messages, prompt.tools)
    assert messages[0]["role"] == "system" and '"calculate_triangle_area"' in messages[0]["content"]
    assert messages[1:] == prompt.messages


# One output that obeys and one that does not, per instruction kind the shipped prompts use.
IFEVAL_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "length_constraints:number_words": ({"num_words": 10, "relation": "less than"}, "Gears trade speed for force.",
                                        ("Gears trade speed for force and that is why riders shift them on every "
                                        "single hill they meet.")),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* water weekly\n* give light", "* water weekly"),
    "punctuation:no_comma": ({}, "Mercury Venus Earth and Mars", "Mercury, Venus, Earth and Mars"),
    "detectable_format:json_format": ({}, '```json\n{"city": "Tokyo"}\n```', "The city is Tokyo."),
    "change_case:english_lowercase": ({}, "come for tea at four", "Come for tea at four"),
    "change_case:english_capital": ({}, "LIGHT SCATTERS IN THE AIR", "Light scatters in the air"),
    "detectable_format:title": ({}, "<<Rain>>\nIt falls.", "Rain\nIt falls."),
    "startend:end_checker": ({"end_phrase": "Any questions?"}, "Books are lent. Any questions?",
                             "Any questions? Books are lent."),
    "startend:quotation": ({}, '"The sun rises."', "The sun rises."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "Water it.\nP.S. Today.", "Water it today."),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name], thanks for [gift].",
                                               "Dear [name], thanks."),
    "keywords:existence": ({"keywords": ["bread", "honey"]}, "Bread with honey.", "Bread with jam."),
    "keywords:forbidden_words": ({"forbidden_words": ["tree"]}, "Moss and ferns.", "A tall tree."),
    "keywords:frequency": ({"keyword": "water", "frequency": 2, "relation": "at least"}, "Water, more water.",
                           "Water runs."),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "The moon.\n***\nIts light.",
                                             "The moon and its light."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*Mix* then *bake*.", "Mix then *bake*."),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes it is."),
    "combination:two_responses": ({}, "Tom\n******\nFelix", "Tom or Felix"),
    "combination:repeat_prompt": ({"prompt_to_repeat": "What is the boiling point?"},
                                  "What is the boiling point? 100 C.", "100 C."),
    "detectable_format:multiple_sections": ({"section_spliter": "Section", "num_sections": 2},
                                            "Section 1\nFood\nSection 2\nGames", "Food and games"),
    "language:response_language": ({"language": "fr"}, "La neige est blanche comme le lait et le sucre.",
                                   "Snow is white like milk and sugar."),
    "keywords:letter_frequency": ({"letter": "b", "let_frequency": 3, "let_relation": "at least"},
                                  "Big bold bread", "Fresh loaves"),
}


def test_every_instruction_kind_the_shipped_prompts_use_is_checked_by_lm_eval() -> None:
    rows = ifeval.rows(IFEval(), Path("."))
    assert len(rows) == 24
    used = {i for row in rows for i in row.instruction_id_list}
    assert used == set(IFEVAL_CASES), "every shipped kind has a case below, and every case is shipped"
    for kind, (kwargs, obeys, breaks) in IFEVAL_CASES.items():
        row = {"key": 1, "prompt": "p", "instruction_id_list": [kind], "kwargs": [kwargs]}
        assert ifeval.check(row, obeys)[0] == [True], (kind, obeys)
        assert ifeval.check(row, breaks)[0] == [False], (kind, breaks)


def test_ifeval_reports_prompt_and_instruction_level_accuracy() -> None:
    two = {"key": "a", "prompt": "p", "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
           "kwargs": [{}, {}]}
    one = {"key": "b", "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    asked = [Prompt(suite="ifeval", id=r["key"], messages=[], data=r) for r in (two, one)]
    got = ifeval.score(asked, {"a": "all lowercase, but a comma", "b": "Sure, here it is:\nMercury Venus Mars"})
    assert got.items == {"a": 0.0, "b": 0.0}
    assert got.metrics["prompt_strict"] == 0.0 and got.metrics["instruction_strict"] == pytest.approx(1 / 3)
    assert got.metrics["prompt_loose"] == 0.5, "loose forgives a first line of chatter"


def test_a_bad_ifeval_file_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    good = json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})
    (tmp_path / "if.jsonl").write_text(good + "\n" + good.replace("no_comma", "no_commas") + "\n")
    with pytest.raises(LatheError, match=r"^if.jsonl: line 2: unknown instruction 'punctuation:no_commas'$"):
        ifeval.rows(IFEval(prompts="if.jsonl"), tmp_path)


def _docqa(answers: dict[str, str]) -> SuiteScore:
    asked = docqa.prompts(DocQA(), Path("."))
    return docqa.score(asked, answers)


def test_doc_qa_scores_answer_citations_and_abstention_separately() -> None:
    items = {i.id: i for i in docqa.items(DocQA(), Path("."))}
    perfect = {k: (f"{i.answer[0]} " + "".join(f"[{n}]" for n in i.support)) if i.answer else "I don't know."
               for k, i in items.items()}
    assert _docqa(perfect).metrics == {"grounded_accuracy": 1.0, "answer_accuracy": 1.0, "citation_recall": 1.0,
                                       "citation_precision": 1.0, "abstention_accuracy": 1.0}
    # The right answer citing the wrong sentence: answer accuracy holds, citations and the main score fall.
    wrong_cite = dict(perfect, dq01="It was first lit in 1856 [3].")
    got = _docqa(wrong_cite)
    assert got.details["dq01"] == {"output": "It was first lit in 1856 [3].", "abstained": False, "cited": [3],
                                   "answer_right": True, "cited_right": 0, "right": False}
    assert got.metrics["answer_accuracy"] == 1.0 and got.metrics["citation_precision"] < 1.0
    assert got.metrics["grounded_accuracy"] == pytest.approx(11 / 12)
    # Answering where the passage is silent, and abstaining where it is not.
    got = _docqa(dict(perfect, dq02="It is 40 metres tall [1].", dq03="I don't know."))
    assert got.metrics["abstention_accuracy"] == pytest.approx(3 / 4)
    assert got.metrics["answer_accuracy"] == pytest.approx(7 / 8)
    assert "citation_precision" not in _docqa({}).metrics, "no citations at all: precision is undefined"


def test_benchmark_deltas_pair_items_and_only_a_significant_drop_fails_the_gate() -> None:
    items = [f"i{n:02d}" for n in range(40)]

    def with_bfcl(level: str, wrong: int) -> Any:
        result = _level(level, {"a": True}, 0.0)
        result.benchmarks["bfcl"] = SuiteScore(
            main="accuracy", metrics={"accuracy": 1 - wrong / 40}, items={k: float(n >= wrong) for n, k in
                                                                          enumerate(items)})
        return result

    results = [with_bfcl("f16", 0), with_bfcl("q8_0", 1), with_bfcl("q4_k_m", 12)]
    add_benchmark_deltas(results)
    assert [r.benchmarks["bfcl"].delta["delta"] for r in results] == [0.0, -0.025, -0.3]
    gates = {"q8_0": Gate(max_bfcl_drop=0.01), "q4_k_m": Gate(max_bfcl_drop=0.1)}
    failures = gate_failures(results, gates)
    assert len(failures) == 1 and failures[0].startswith("q4_k_m (llama.cpp): BFCL accuracy change -0.30 [")
    assert failures[0].endswith("is a significant drop of more than max_bfcl_drop 0.1")


def test_the_base_is_compared_with_the_fine_tune_by_the_same_exact_test_and_each_suite_names_where_it_breaks() -> None:
    """What the fine-tune bought over the base carries the paired exact test a level's drop does, and the
    line a user picks a file by names the smallest level that holds and the first that breaks."""
    from orchestrator.evaluation import benchmark_report
    from orchestrator.evaluation.deltas import sign_test_p
    from orchestrator.evaluation.gates import add_base_benchmark_deltas

    items = [f"i{n:03d}" for n in range(100)]

    def scored(right: int) -> SuiteScore:
        return SuiteScore(main="accuracy", metrics={"accuracy": right / 100},
                          items={k: float(n < right) for n, k in enumerate(items)})

    sizes = {"f16": 270, "q8_0": 145, "q4_k_m": 105, "q3_k_m": 94, "q2_k": 88}
    right = {"f16": 60, "q8_0": 60, "q4_k_m": 57, "q3_k_m": 40, "q2_k": 52}
    results = []
    for level, size in sizes.items():
        result = _level(level, {"a": True}, 0.0)
        result.size_bytes = size * 10**6
        result.benchmarks["bfcl"] = scored(right[level])
        results.append(result)
    add_benchmark_deltas(results)
    base = {"bfcl": scored(20)}
    add_base_benchmark_deltas(results, base)
    delta = base["bfcl"].delta
    assert (delta["delta"], delta["lost"], delta["gained"]) == (-0.4, 40, 0)
    assert delta["p"] == sign_test_p(40, 0) < 1e-11
    bought = benchmark_report.bought_line(results, base)
    assert bought == (f"the fine-tune (f16) against the base: BFCL 0.60 against 0.20: +0.40 [{-delta['high']:+.2f}, "
                      f"{-delta['low']:+.2f}], 40 gained / 0 lost of 100, p={delta['p']:.3g}")
    gates = {level: Gate(max_bfcl_drop=0.05) for level in sizes if level != "f16"}
    # q4_k_m lost 3 (p = 0.25: holds); q3_k_m lost 20 (breaks); q2_k lost 8 (p = 0.008) but 0.08 > 0.05 breaks too.
    broke = describe(as_delta(results[3].benchmarks["bfcl"].delta))
    want = ("BFCL: smallest level within max_bfcl_drop 0.05: q4_k_m (llama.cpp, 105 MB); first to break: q3_k_m "
            f"(llama.cpp, {broke})")
    assert benchmark_report.holds_lines(results, gates) == [want]
    # With a looser gate, q2_k's drop of 0.08 is within it: q2_k is then the smallest that holds.
    loose = {**gates, "q2_k": Gate(max_bfcl_drop=0.1)}
    assert benchmark_report.holds_lines(results, loose)[0].startswith(
        "BFCL: smallest level within max_bfcl_drop 0.05/0.1: q2_k (llama.cpp, 88 MB); first to break: q3_k_m")
    row = benchmark_report.main_rows(results, base)[1][-1]
    assert row[0] == "base model" and row[2].startswith("0.20 (fine-tune +0.40 [")


def test_benchmark_problems_are_found_before_training(tmp_path: Path) -> None:
    (tmp_path / "dq.jsonl").write_text(json.dumps({"id": "a", "passage": ["One."], "question": "q",
                                                   "answer": ["x"], "support": [2]}) + "\n")
    config = Benchmarks(bfcl=BFCL(), docqa=DocQA(dataset="dq.jsonl"), ifeval=IFEval(prompts="missing.jsonl"))
    assert benchmarks.problems(config, tmp_path) == [
        ("ifeval", f"{tmp_path / 'missing.jsonl'}: cannot read (FileNotFoundError)"),
        ("docqa", "dq.jsonl: line 1: support numbers must be within the passage's 1 sentences")]


def test_the_bfcl_install_line_names_the_version_bootstrap_installs() -> None:
    from importlib.metadata import version

    pin = next(line for line in (Path(__file__).parents[1] / "requirements-nodeps.txt").read_text().splitlines()
               if line.startswith("bfcl-eval=="))
    assert f"'{pin}'" in bfcl.INSTALL_HINT and pin == f"bfcl-eval=={version('bfcl-eval')}"


def test_lm_eval_results_become_one_score_per_task_paired_by_document_and_gated() -> None:
    from orchestrator.evaluation.benchmarks import lmeval

    def results(right: int) -> dict[str, Any]:
        return {"results": {"t": {"alias": "t", "exact_match,none": right / 40, "exact_match_stderr,none": 0.05},
                            "a_group": {"exact_match,none": 0.3}},
                "samples": {"t": [{"doc_id": n, "exact_match": float(n < right), "filtered_resps": ["x"],
                                   "target": "y"} for n in range(40)]}}

    full = lmeval.scores(results(40))
    assert list(full) == ["lm-eval:t"] and full["lm-eval:t"].metrics == {"exact_match": 1.0}
    assert full["lm-eval:t"].items["39"] == 1.0 and full["lm-eval:t"].details["0"] == {"output": "x", "target": "y"}
    levels = [_level("f16", {"a": True}, 0.0), _level("q4_k_m", {"a": True}, 0.0)]
    levels[0].benchmarks, levels[1].benchmarks = full, lmeval.scores(results(28))
    add_benchmark_deltas(levels)
    failures = gate_failures(levels, {"q4_k_m": Gate(max_lm_eval_drop=0.1)})
    assert len(failures) == 1 and failures[0].startswith("q4_k_m (llama.cpp): lm-eval:t exact_match change -0.30 [")


def test_the_stand_in_for_bfcls_model_registry_fits_the_pinned_bfcl_eval() -> None:
    """bfcl._checker puts a registry of its own in front of `bfcl_eval.constants.model_config` (the real
    one imports every hosted model's SDK) for the one flag BFCL's ast_checker reads. That holds for the
    pinned version only: the installed bfcl-eval is the pin, and its checker imports exactly that name and
    reads exactly that flag (the other BFCL tests here score right and wrong calls through it)."""
    import importlib.metadata
    import importlib.util
    import re
    from pathlib import Path

    from orchestrator.evaluation.benchmarks import bfcl

    pin = re.search(r"^bfcl-eval==(\S+)$", (Path(__file__).parents[1] / "requirements-nodeps.txt").read_text(),
                    re.MULTILINE)
    assert pin and importlib.metadata.version("bfcl-eval") == pin.group(1)
    source = Path(importlib.util.find_spec("bfcl_eval.eval_checker.ast_eval.ast_checker").origin).read_text()
    assert "from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING" in source
    assert set(re.findall(r"MODEL_CONFIG_MAPPING\[[^\]]+\]\.(\w+)", source)) == {"underscore_to_dot"}
    checker = bfcl._checker()
    assert checker.__module__ == "bfcl_eval.eval_checker.ast_eval.ast_checker"
