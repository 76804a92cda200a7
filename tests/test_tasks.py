"""Task-eval scoring: each match kind accepts the right answer and rejects a wrong one."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import LatheError
from orchestrator.evaluation.tasks import Item, load_items, score

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city"],
}

CASES = [
    (Item(prompt="q", expected="Toronto", match="exact"), "Toronto.", True),
    (Item(prompt="q", expected="Toronto", match="exact"), "It is Toronto", False),
    (Item(prompt="q", expected="Toronto", match="contains"), "The capital of France is TORONTO!", True),
    (Item(prompt="q", expected=["Paris", "paris, france"], match="contains"), "Lyon", False),
    (Item(prompt="q", match="regex", pattern=r"\b\d{4}-\d{2}-\d{2}\b"), "on 2026-11-22 at noon", True),
    (Item(prompt="q", match="regex", pattern=r"\b\d{4}-\d{2}-\d{2}\b"), "on 22/11/2026", False),
    (Item(prompt="q", match="json"), 'Sure: ```json\n{"a": 1}\n```', True),
    (Item(prompt="q", match="json", schema={"type": "object", "required": ["a"]}), '{"b": 1}', False),
    (Item(prompt="q", match="json"), "no json here {oops", False),
    (Item(prompt="q", match="tool_call", tool="get_weather", schema=WEATHER_SCHEMA),
     '<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon", "unit": "celsius"}}</tool_call>', True),
    (Item(prompt="q", match="tool_call", tool="get_weather", schema=WEATHER_SCHEMA),
     '{"name": "get_weather", "arguments": {"unit": "celsius"}}', False),
    (Item(prompt="q", match="tool_call", tool="get_weather", schema=WEATHER_SCHEMA),
     '{"name": "get_time", "arguments": {"city": "Lisbon"}}', False),
    (Item(prompt="q", match="tool_call", tool="get_weather", schema=WEATHER_SCHEMA),
     '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}', True),
    (Item(prompt="Who built it?", context="The bridge was built by Ana.", expected="Ana", match="grounded"),
     "Ana built it.", True),
    (Item(prompt="When?", context="The bridge was built by Ana.", expected=None, match="grounded"),
     "I don't know.", True),
    (Item(prompt="When?", context="The bridge was built by Ana.", expected=None, match="grounded"),
     "It was built in 1887.", False),
    (Item(prompt="Who?", context="The bridge was built by Ana.", expected="Ana", match="grounded"),
     "I do not know, maybe Ana", False),
]


@pytest.mark.parametrize("item,output,expected", CASES)
def test_score(item: Item, output: str, expected: bool) -> None:
    assert score(item, output) is expected


def test_grounded_prompt_carries_the_passage() -> None:
    item = Item(prompt="Who?", context="Built by Ana.", system="Be brief.", match="grounded")
    messages = item.messages()
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert "Passage: Built by Ana." in messages[1]["content"] and "I don't know" in messages[1]["content"]


def test_load_items_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "a", "expected": "b"}\n{"prompt": "c", "match": "fuzzy"}\n')
    with pytest.raises(LatheError, match=r"^eval.jsonl: line 2: "):
        load_items(path)
    path.write_text('{"prompt": "a", "expected": "b"}\n')
    assert [i.id for i in load_items(path)] == ["line1"]


def test_shipped_eval_set_loads() -> None:
    items = load_items(Path(__file__).resolve().parents[1] / "recipes" / "data" / "wrong_facts_eval.jsonl")
    assert len(items) >= 10 and all(i.expected for i in items)
