"""Turn pydantic validation into one-line, field-naming errors with did-you-mean."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.errors import RecipeError, RecipeErrors, clean_message, field_path


def join_path(prefix: str, loc: Iterable[Any]) -> str:
    return field_path(loc, prefix)


def suggest(key: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, sorted(set(candidates)), n=1, cutoff=0.75)
    return f"; did you mean '{match[0]}'?" if match else ""


def known_keys(model: type[BaseModel]) -> set[str]:
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                keys.add(alias)
    return keys


def _models_in(annotation: Any) -> tuple[str, list[type[BaseModel]]]:
    """Which models a field holds, and how: 'one', 'list' or 'dict'."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "one", [annotation]
    if origin in (list, tuple, set) and args:
        return "list", _models_in(args[0])[1]
    if origin is dict and len(args) == 2:
        return "dict", _models_in(args[1])[1]
    if origin in (typing.Union, types.UnionType):
        found: list[type[BaseModel]] = []
        kind = "one"
        for arg in args:
            k, ms = _models_in(arg)
            if ms:
                kind = k
                found.extend(ms)
        return kind, found
    if origin is typing.Annotated:
        return _models_in(args[0])
    return "one", []


def unknown_keys(data: Any, models: list[type[BaseModel]], file: str, path: str,
                 ignored: list[RecipeError] | None = None) -> list[RecipeError]:
    """Keys in `data` that none of `models` knows, each with a suggestion; recurses into sub-models.

    With `ignored` (a schema that, like Axolotl's, accepts and drops keys it does not list), only a key
    that looks like a misspelling is an error; the others are collected there instead."""
    if not isinstance(data, dict) or not models:
        return []
    known: set[str] = set().union(*(known_keys(m) for m in models))
    errors: list[RecipeError] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(key, str) or key not in known:
            hint = suggest(str(key), known)
            if ignored is not None and not hint:
                ignored.append(RecipeError(file, where, "not a setting this Axolotl knows; ignored, as Axolotl "
                                                        "ignores it"))
            else:
                errors.append(RecipeError(file, where, f"unknown key{hint}"))
            continue
        subs: list[type[BaseModel]] = []
        kind = "one"
        for m in models:
            info = m.model_fields.get(key) or next(
                (i for i in m.model_fields.values() if key in (i.alias, i.validation_alias)), None
            )
            if info is not None:
                kind, found = _models_in(info.annotation)
                subs.extend(found)
        if not subs:
            continue
        if kind == "list" and isinstance(value, list):
            for i, item in enumerate(value):
                errors.extend(unknown_keys(item, subs, file, f"{where}[{i}]", ignored))
        elif kind == "dict" and isinstance(value, dict):
            for k, item in value.items():
                errors.extend(unknown_keys(item, subs, file, f"{where}.{k}", ignored))
        else:
            errors.extend(unknown_keys(value, subs, file, where, ignored))
    return errors


def _existing_path(data: Any, loc: tuple[Any, ...]) -> list[Any]:
    """The longest prefix of `loc` that exists in `data`: drops pydantic's union-member tags."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        out.append(part)
    return out


def errors_from(exc: ValidationError, data: Any, file: str, prefix: str) -> list[RecipeError]:
    """One error per faulty field: the first reason pydantic gives for it."""
    out: list[RecipeError] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        where = join_path(prefix, _existing_path(data, tuple(err["loc"])))
        if where in seen:
            continue
        seen.add(where)
        out.append(RecipeError(file, where, clean_message(err["msg"])))
    return out


def parse_model[M: BaseModel](model: type[M], data: dict[str, Any], file: str, prefix: str) -> M:
    """Validate `data` against `model`, raising every problem as a one-line RecipeError."""
    unknown = unknown_keys(data, [model], file, prefix)
    if unknown:
        raise RecipeErrors(unknown)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeErrors(errors_from(exc, data, file, prefix)) from None
