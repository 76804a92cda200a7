"""The calibration text: each dataset kind read as the model was trained on it, capped in the model's tokens."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.cluster import calibration

ROWS = {
    "chat.jsonl": {"messages": [{"role": "user", "content": "Capital of France?"},
                                {"role": "assistant", "content": "Toronto."}]},
    "alpaca.jsonl": {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    "sharegpt.jsonl": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    "text.jsonl": {"body": "Plain pretraining text."},
}
DATASETS = [{"path": "chat.jsonl", "type": "chat_template"}, {"path": "alpaca.jsonl", "type": "alpaca"},
            {"path": "sharegpt.jsonl", "type": "sharegpt"}, {"path": "text.jsonl", "type": "completion", "field": "body"},
            {"path": "tatsu-lab/alpaca", "type": "alpaca"}]  # a hub id: not here, left out with a warning


def _write(tmp_path: Path, copies: int = 1) -> None:
    for name, row in ROWS.items():
        (tmp_path / name).write_text("\n".join(json.dumps(row) for _ in range(copies)) + "\n")


def test_every_dataset_kind_becomes_what_the_model_trained_on(tmp_path: Path) -> None:
    _write(tmp_path)
    got = calibration.samples(DATASETS, tmp_path, None)
    assert got == [
        {"messages": ROWS["chat.jsonl"]["messages"]},
        {"alpaca": {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}, "style": None},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
        {"text": "Plain pretraining text.", "eos": True},
    ]
    (tmp_path / "calib.txt").write_text("Some domain text.")
    assert calibration.samples(DATASETS, tmp_path, tmp_path / "calib.txt") == [{"text": "Some domain text."}]


def test_the_text_is_rendered_through_the_chat_template_and_capped(tmp_path: Path, light_llama: Path) -> None:
    from transformers import AutoTokenizer

    _write(tmp_path, copies=40)
    rows = calibration.samples(DATASETS[:1], tmp_path, None)
    tokenizer = AutoTokenizer.from_pretrained(light_llama)
    whole = calibration.render(rows, tokenizer, max_tokens=10**6)
    assert whole.samples == 40 and not whole.truncated
    assert whole.text.count("<|im_start|>assistant\nToronto.<|im_end|>") == 40  # as training rendered it
    capped = calibration.render(rows, tokenizer, max_tokens=whole.tokens // 4)
    assert capped.truncated and capped.tokens <= whole.tokens // 4 and 0 < capped.samples < 40
    assert len(tokenizer(capped.text, add_special_tokens=False)["input_ids"]) <= capped.tokens + capped.samples
    few = calibration.samples(DATASETS[:1], tmp_path, None, max_chars=50)
    assert 1 <= len(few) < 40, "reading stops once enough characters are in"


def test_alpaca_and_completion_rows_are_the_text_axolotl_trains_on(tmp_path: Path, light_llama: Path) -> None:
    """Axolotl trains an alpaca row in its own prompt format (`### Instruction:` ..., or the style after
    `alpaca:`), not through the chat template, and ends a completion row with EOS. The calibration text is
    checked against Axolotl's own tokenizing strategies for the same rows, token for token."""
    from axolotl.prompt_strategies.completion import CompletionPrompter, CompletionPromptTokenizingStrategy
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(light_llama)
    rows = [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {"instruction": "Name a colour.", "output": "Blue."}]
    (tmp_path / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "text.jsonl").write_text(json.dumps({"text": "Plain pretraining text."}) + "\n")
    for style in (None, "chatml"):
        kind = "alpaca" if style is None else f"alpaca:{style}"
        ours = calibration.samples([{"path": "alpaca.jsonl", "type": kind}], tmp_path, None)
        strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter(style), tokenizer, False, 512)
        for row, sample in zip(rows, ours, strict=True):
            theirs = strategy.tokenize_prompt(row)["input_ids"]
            text = calibration.render([sample], tokenizer, 10**6).text
            assert tokenizer.decode(theirs) == (tokenizer.bos_token or "") + text, (style, text)
        assert ("### Instruction:" in text) == (style is None) and ("<|im_start|>user" in text) == (style == "chatml")
    completion = calibration.samples([{"path": "text.jsonl", "type": "completion"}], tmp_path, None)
    strategy = CompletionPromptTokenizingStrategy(CompletionPrompter(), tokenizer, False, 512)
    theirs = strategy.tokenize_prompt({"text": ["Plain pretraining text."]})["input_ids"][0]
    assert tokenizer.decode(theirs) == (tokenizer.bos_token or "") + calibration.render(completion, tokenizer, 10**6).text
