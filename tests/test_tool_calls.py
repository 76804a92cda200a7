"""The tool-calling training data (scripts/make_tool_calls.py, recipes/data/tool_calls.jsonl): what the
committed file holds is what the script writes, every answer decodes to the calls it was made from, and
nothing in it is BFCL's (function names, or a run of six words of any BFCL question)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator.evaluation.benchmarks import bfcl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import make_tool_calls


def test_the_committed_data_is_the_scripts_and_shares_nothing_with_bfcl() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_tool_calls.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "0 names and 0 requests in common" in proc.stdout and "7156 questions" in proc.stdout, proc.stdout
    rows = make_tool_calls.make(260, 4)
    committed = (REPO / "recipes" / "data" / "tool_calls.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in committed] == [{"messages": r["messages"]} for r in rows]
    kinds = {k: sum(r["kind"] == k for r in rows) for k in make_tool_calls.KINDS}
    assert kinds == {"simple": 65, "multiple": 52, "parallel": 39, "irrelevance": 104}
    names = {f.name for f in make_tool_calls.FUNCTIONS}
    assert set(make_tool_calls.NEAR_MISSES) == names == set(make_tool_calls.WRONG_OPERATION), "near misses for each"


def test_the_overlap_check_finds_a_bfcl_question_and_a_bfcl_function_name() -> None:
    """The check can fail: a row asking a BFCL question word for word is found, and so is a BFCL name."""
    entry = json.loads((bfcl.data_dir() / "BFCL_v4_simple_python.json").read_text().splitlines()[0])
    row = {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": entry["question"][0][0]["content"]}]}
    _, _, _, shared = make_tool_calls.overlap([row])
    assert shared == [entry["question"][0][0]["content"]]
    named = make_tool_calls.Function(entry["function"][0]["name"], "", (), ("x",))
    original = make_tool_calls.FUNCTIONS
    try:
        make_tool_calls.FUNCTIONS = (*original, named)
        assert make_tool_calls.overlap([])[2] == {entry["function"][0]["name"]}
    finally:
        make_tool_calls.FUNCTIONS = original


def test_every_answer_decodes_to_its_calls_and_the_tools_are_offered_as_the_evaluation_offers_them() -> None:
    by_name = {f.name: f for f in make_tool_calls.FUNCTIONS}
    for row in make_tool_calls.make(260, 4):
        system, user, answer = (m["content"] for m in row["messages"])
        calls = bfcl.decode(answer)
        offered = [json.loads(line)["function"]["name"] for line in system.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()]
        assert system == bfcl.tools_system_message(bfcl.as_tools([by_name[n].doc() for n in offered]))
        if row["kind"] == "irrelevance":
            assert calls == [] and not any(n in answer for n in by_name), answer
            assert len(offered) <= 2, "one function offered, as in BFCL's irrelevance items, now and then two"
            continue
        assert calls and all(name in offered for call in calls for name in call), (offered, calls)
        assert (len(calls) == 1) == (row["kind"] != "parallel") and len(calls) <= 3
        for call in calls:
            (name, args), = call.items()
            required = {p.name for p in by_name[name].params if p.required}
            assert required <= set(args), (name, args)
            for value in args.values():
                # Every argument is said in the request, in words or as written (enums and numbers too).
                spoken = str(value) if not isinstance(value, bool) else ""
                assert spoken in user, (user, args)
