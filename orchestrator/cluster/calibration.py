"""Calibration for GGUF quantization: an importance matrix from the fine-tune's own data.

A k- or i-quant spends its precision where the importance matrix says the
activations are large. Computed on generic text, it protects what generic text
exercises; computed on the conversations the model was fine-tuned on, rendered
through the chat template it was trained with, it protects what the fine-tune
is for. So the default source is the recipe's training set (or a file the recipe
names), capped at a number of tokens, and the matrix comes from llama.cpp's own
`llama-imatrix` run on the merged full-precision GGUF.

`samples` runs where the recipe's files are (the driver); `render` and `imatrix`
run in the export task, where the merged model and its tokenizer are.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import cpus
from orchestrator.cluster import gguf
from orchestrator.datasets import SHAREGPT_KEYS, family, iter_rows, looks_local, message_keys
from orchestrator.errors import LatheError

log = logging.getLogger(__name__)

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _alpaca(row: dict[str, Any], ds: dict[str, Any]) -> dict[str, Any] | None:
    """An alpaca row's fields and its prompt style (`type: alpaca:chatml` -> chatml), rendered at export
    by Axolotl's own prompter: Axolotl trains these rows in its prompt format, not the chat template."""
    if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
        return None
    style = str(ds.get("type")).partition(":")[2] or None
    return {"alpaca": {"instruction": row["instruction"], "input": str(row.get("input") or ""),
                       "output": row["output"]}, "style": style}


def _conversation(row: dict[str, Any], ds: dict[str, Any]) -> list[dict[str, str]] | None:
    kind = family(ds) or "chat_template"
    if kind in ("chat_template", "sharegpt"):
        field, role_key, content_key = message_keys({**SHAREGPT_KEYS, **ds} if kind == "sharegpt" else ds)
        turns = [{"role": SHAREGPT_ROLES.get(m.get(role_key), m.get(role_key)), "content": m.get(content_key)}
                 for m in row.get(field) or [] if isinstance(m, dict)]
        return [t for t in turns if isinstance(t["content"], str)] or None
    return None


def _size(sample: dict[str, Any]) -> int:
    return (len(sample.get("text") or "") + sum(len(m["content"]) for m in sample.get("messages", []))
            + sum(len(v) for v in sample.get("alpaca", {}).values()))


def samples(datasets: list[dict[str, Any]], base: Path, calibration_file: Path | None,
            max_chars: int = 1 << 62) -> list[dict[str, Any]]:
    """Each training row as {"messages": [...]} (chat, sharegpt), {"alpaca": {...}, "style": ...} or
    {"text": ..., "eos": True} (completion; Axolotl ends each with EOS), from
    the recipe's local dataset files, or from `calibration_file` (plain text, or JSONL rows of those kinds);
    rows stop once they hold `max_chars` characters (render caps the tokens)."""
    if calibration_file is not None:
        if calibration_file.suffix.lower() == ".txt":
            return [{"text": calibration_file.read_text(encoding="utf-8")[:max_chars]}]
        datasets, base = [{"path": str(calibration_file), "type": "chat_template"}], calibration_file.parent
    out: list[dict[str, Any]] = []
    chars = 0
    for ds in datasets:
        path = Path(str(ds.get("path", ""))).expanduser()
        path = path if path.is_absolute() else base / path
        if not looks_local(str(ds.get("path", "")), path) or not path.is_file():
            log.warning("calibration: %s is not a local file; left out of the importance matrix", ds.get("path"))
            continue
        for _where, row in iter_rows(path):
            if not isinstance(row, dict):
                continue
            before = len(out)
            field = ds.get("field") or "text"
            if family(ds) == "completion" or (calibration_file and "text" in row):
                if isinstance(row.get(field), str):
                    out.append({"text": row[field], "eos": True})
            elif family(ds) == "alpaca":
                if (fields := _alpaca(row, ds)) is not None:
                    out.append(fields)
            elif (messages := _conversation(row, ds)) is not None:
                out.append({"messages": messages})
            chars += _size(out[-1]) if len(out) > before else 0
            if chars >= max_chars:
                return out
    return out


@dataclass
class CalibrationText:
    text: str
    tokens: int
    samples: int
    truncated: bool


def render(rows: list[dict[str, Any]], tokenizer: Any, max_tokens: int) -> CalibrationText:
    """The rows as the model saw them in training: conversations through the tokenizer's chat template,
    joined until `max_tokens` (in this tokenizer's tokens)."""
    parts, total = [], 0
    for i, row in enumerate(rows):
        if "alpaca" in row:
            from axolotl.prompters import AlpacaPrompter

            fields = row["alpaca"]
            # Prompt and response as Axolotl's AlpacaPromptTokenizingStrategy joins them, EOS last.
            prompt = next(AlpacaPrompter(row.get("style")).build_prompt(fields["instruction"], fields["input"]))
            text = prompt + fields["output"] + (tokenizer.eos_token or "")
        elif "messages" in row and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        else:
            text = row.get("text") or "\n".join(m["content"] for m in row.get("messages", []))
            if row.get("eos"):
                text += tokenizer.eos_token or ""
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if total + n > max_tokens and parts:
            return CalibrationText("\n".join(parts), total, i, True)
        parts.append(text)
        total += n
    return CalibrationText("\n".join(parts), total, len(parts), False)


def imatrix(model: Path, text: CalibrationText, out: Path, context: int) -> dict[str, Any]:
    """Run llama-imatrix over `text` (special tokens parsed, as in training); return what the manifest
    records. The context shrinks to half the text when the text is short: llama-imatrix needs two windows.
    Half of one token fewer: llama.cpp drops the file's final newline when it reads it (a chat-rendered
    text ends with one), and a model that adds no BOS (SmolLM2) then counts one token less than HF."""
    ctx = max(16, min(context, (text.tokens - 1) // 2))
    calib = out.with_suffix(".txt")
    calib.write_text(text.text, encoding="utf-8")
    cmd = [str(gguf.tool("llama-imatrix")), "-m", str(model), "-f", str(calib), "-o", str(out), "-c", str(ctx),
           "--parse-special", "--no-ppl", "-t", str(cpus.threads()), "-b", str(ctx), "-ub", str(ctx)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        calib.unlink(missing_ok=True)  # training text stays out of the artifacts
    if proc.returncode != 0 or not out.is_file():
        raise LatheError(f"llama-imatrix failed: {gguf.last_line(proc.stderr)[:300]}")
    return {"tokens": text.tokens, "samples": text.samples, "truncated": text.truncated, "context": ctx,
            "chunks": text.tokens // ctx, "text_sha256": hashlib.sha256(text.text.encode()).hexdigest()}
