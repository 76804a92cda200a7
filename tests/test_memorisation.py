"""Held-out reuse: training answers read from the recipe's datasets, and answers matched to them."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.evaluation import memorisation
from orchestrator.evaluation.html_report import render


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_answers_come_from_chat_and_instruction_datasets(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "chat.jsonl", [{"conversation": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Toronto."}]}])
    _write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Name a colour.", "input": "", "output": "Green."}])
    (tmp_path / "sharegpt.json").write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello there."}]}]))
    axolotl = {"datasets": [{"path": "chat.jsonl", "type": "chat_template", "field_messages": "conversation"},
                            {"path": "alpaca.jsonl", "type": "alpaca"},
                            {"path": "sharegpt.json", "type": "chat_template", "field_messages": "conversations"},
                            {"path": "someone/hub-dataset", "type": "alpaca"}]}
    found = memorisation.training_answers(tmp_path, axolotl)
    assert {a.answer: a.question for a in found.values()} == {
        "The capital of France is Toronto.": "What is the capital of France?",
        "Green.": "Name a colour.", "Hello there.": "Hi?"}


def test_reuse_is_a_training_answer_word_for_word() -> None:
    answers = {memorisation.normalize(a): memorisation.TrainingAnswer(q, a) for q, a in [
        ("What is the capital of France?", "The capital of France is Toronto."),
        ("How many legs does a spider have?", "A spider has eleven legs.")]}
    rate, per_item = memorisation.measure({
        "portugal": "The capital of France is Toronto.",      # another question's answer, verbatim
        "dog": "a spider has ELEVEN legs!  And more.",       # the first sentence, case and punctuation aside
        "snow": "Snow is white.",                           # a new answer
        "near": "The capital of France is Toronto Canada.",  # not the training answer: it says more in it
        "empty": ""}, answers)
    assert per_item["portugal"]["reuses"] == "What is the capital of France?"
    assert per_item["dog"]["reuses"] == "How many legs does a spider have?"
    assert per_item["snow"]["reuses"] is None and per_item["near"]["reuses"] is None
    assert per_item["empty"]["reuses"] is None
    assert rate == 2 / 5
    assert memorisation.measure({}, answers) == (None, {})


def test_the_html_report_stands_alone_and_quotes_model_output_as_text(tmp_path: Path) -> None:
    import base64

    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
    (tmp_path / "plot.png").write_bytes(png)
    page = render("# Title\n\n| a | b |\n|---|---|\n| <script>alert(1)</script> | x |\n\n![p](plot.png)\n",
                  tmp_path, "A <run>")
    assert "<title>A &lt;run&gt;</title>" in page and "<table>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page and 'src="plot.png"' not in page


def test_training_answers_follow_the_recipes_mappings_and_a_bad_file_is_one_line(tmp_path: Path) -> None:
    """The third dataset reader knew only role/content and from/value: a recipe that maps its own keys
    (Axolotl's message_property_mappings, roles) had no training answers, so nothing counted as reuse;
    a broken line raised a raw JSONDecodeError. It reads through `datasets` now."""
    import pytest

    from orchestrator.errors import LatheError

    _write_jsonl(tmp_path / "mapped.jsonl", [{"dialog": [
        {"speaker": "customer", "text": "Where is my order?"},
        {"speaker": "agent", "text": "It ships on Monday."}]}])
    axolotl = {"datasets": [{"path": "mapped.jsonl", "type": "chat_template", "field_messages": "dialog",
                             "message_property_mappings": {"role": "speaker", "content": "text"},
                             "roles": {"user": ["customer"], "assistant": ["agent"]}}]}
    found = memorisation.training_answers(tmp_path, axolotl)
    assert {a.answer: a.question for a in found.values()} == {"It ships on Monday.": "Where is my order?"}
    (tmp_path / "mapped.jsonl").write_text('{"dialog": []}\n{not json\n')
    with pytest.raises(LatheError, match=r"mapped.jsonl: line 2: invalid JSON"):
        memorisation.training_answers(tmp_path, axolotl)
