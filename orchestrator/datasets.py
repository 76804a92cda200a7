"""Offline checks of the dataset files a recipe names: they exist, parse, and fit their `type:`.

Axolotl only finds a bad row after minutes of model loading on the cluster; here
it costs a read of the file on the laptop.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.errors import RecipeError

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow")
MAX_ROW_BYTES = 4 * 1024 * 1024  # a single training row larger than this is a data bug, not a sample


class RowError(ValueError):
    """A row that does not fit its dataset type; the message starts with the row's location."""


def looks_local(path: str, resolved: Path) -> bool:
    """Hub dataset ids ("tatsu-lab/alpaca") cannot be checked offline; files can."""
    return (
        resolved.exists()
        or path.startswith((".", "/", "~"))
        or path.lower().endswith(LOCAL_SUFFIXES)
    )


def iter_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (location, row) pairs; location reads like 'line 3' or 'row 3'."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if len(raw) > MAX_ROW_BYTES:
                    raise RowError(f"line {lineno}: row is {len(raw)} bytes, over the {MAX_ROW_BYTES} byte limit")
                if not raw.strip():
                    continue
                try:
                    yield f"line {lineno}", json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise RowError(f"line {lineno}: invalid JSON ({_short(exc)})") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RowError(f"invalid JSON ({_short(exc)})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise RowError("a .json dataset must hold a list of rows")
        for i, row in enumerate(data):
            yield f"row {i}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"row {i}", row
    # csv / arrow: Axolotl reads them; Lathe does not second-guess their rows.


def _short(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
    return str(exc).split(":")[0] if isinstance(exc, json.JSONDecodeError) else exc.__class__.__name__


def _need_str(row: dict[str, Any], key: str, where: str, optional: bool = False) -> None:
    if key not in row:
        if not optional:
            raise RowError(f"{where}: missing field '{key}'")
        return
    if not isinstance(row[key], str):
        raise RowError(f"{where}: field '{key}' must be a string, got {type(row[key]).__name__}")


# What a sharegpt dataset's conversations are called unless the recipe says otherwise.
SHAREGPT_KEYS = {"field_messages": "conversations", "message_field_role": "from", "message_field_content": "value"}


def family(ds: dict[str, Any]) -> str | None:
    """A dataset entry's prompt family: "alpaca" for `alpaca:chatml`, "chat_template" for
    `chat_template.default`; None for a user-defined format (a mapping)."""
    kind = ds.get("type")
    return kind.split(":")[0].split(".")[0] if isinstance(kind, str) else None


def message_keys(ds: dict[str, Any]) -> tuple[str, str, str]:
    """(messages field, role key, content key) of a chat dataset entry, Axolotl's defaults filled in
    (pass `{**SHAREGPT_KEYS, **ds}` for sharegpt)."""
    mapping = ds.get("message_property_mappings") or {}
    return (ds.get("field_messages") or "messages",
            mapping.get("role") or ds.get("message_field_role") or "role",
            mapping.get("content") or ds.get("message_field_content") or "content")


def _check_messages(row: dict[str, Any], ds: dict[str, Any], where: str) -> None:
    field, role_key, content_key = message_keys(ds)
    messages = row.get(field)
    if not isinstance(messages, list) or not messages:
        raise RowError(f"{where}: field '{field}' must be a non-empty list of messages")
    for j, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RowError(f"{where}: {field}[{j}] must be an object")
        if not isinstance(msg.get(role_key), str):
            raise RowError(f"{where}: {field}[{j}] needs a string '{role_key}'")
        if not isinstance(msg.get(content_key), (str, list)):
            raise RowError(f"{where}: {field}[{j}] needs a '{content_key}'")


def check_row(row: Any, ds: dict[str, Any], where: str) -> None:
    if not isinstance(row, dict):
        raise RowError(f"{where}: row must be a JSON object, got {type(row).__name__}")
    kind = family(ds)
    if kind is None:
        return  # a user-defined prompt format: Axolotl checks its fields
    if kind == "alpaca":
        _need_str(row, "instruction", where)
        _need_str(row, "output", where)
        _need_str(row, "input", where, optional=True)
    elif kind == "completion":
        _need_str(row, ds.get("field") or "text", where)
    elif kind == "chat_template":
        _check_messages(row, ds, where)
    elif kind == "sharegpt":
        _check_messages(row, {**SHAREGPT_KEYS, **ds}, where)


def check_dataset(ds: Any, field: str, recipe_name: str, base: Path) -> list[RecipeError]:
    """Problems with one `datasets[i]` entry, at most one line for it."""
    if not isinstance(ds, dict):
        return [RecipeError(recipe_name, field, "must be a mapping with at least 'path' and 'type'")]
    path = ds.get("path")
    if not isinstance(path, str) or not path:
        return [RecipeError(recipe_name, f"{field}.path", "missing")]
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = base / resolved
    if not looks_local(path, resolved):
        return []
    if not resolved.exists():
        return [RecipeError(recipe_name, f"{field}.path", f"no such file '{path}'")]
    if resolved.is_dir():
        return []  # a saved HF dataset directory: Axolotl loads it with `load_from_disk`
    try:
        count = 0
        for where, row in iter_rows(resolved):
            check_row(row, ds, where)
            count += 1
        if count == 0 and resolved.suffix.lower() in (".jsonl", ".json", ".parquet"):
            raise RowError("has no rows")
    except RowError as exc:
        return [RecipeError(recipe_name, f"{field}.path", f"{resolved.name}: {exc}")]
    return []
