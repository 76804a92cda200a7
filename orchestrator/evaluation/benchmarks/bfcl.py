"""The Berkeley Function-Calling Leaderboard, from the `bfcl-eval` package: its data, its AST checker.

Each item is BFCL's own question and function docs. The functions go to the level as `tools`, through
the model's own chat template (a template that ignores tools gets them in a system message instead,
in the same Hermes-style format). The level's answer is decoded from its `<tool_call>` blocks (or
bare JSON calls) into BFCL's `[{name: {arg: value}}]` form and judged by BFCL's `ast_checker`; an
irrelevance item is right when the level calls nothing, as BFCL's own runner decides it.

bfcl-eval is installed without its dependencies (they pin numpy 1.x and pull in a dozen hosted-model
SDKs and torch); the checker's own imports are the standard library, bar the one noted in `_checker`.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.errors import LatheError
from orchestrator.evaluation.benchmarks.common import Prompt, SuiteScore
from orchestrator.recipe_benchmarks import BFCL

# A call counts only in a closed block whose text is one JSON value, as bfcl-eval's own decoder for this
# format reads it (its Qwen handler): a block left open or with text after its JSON is not a call, so an
# irrelevance answer made of one is right and any other is wrong. Lathe read both leniently before and
# disagreed with bfcl-eval on 5 of 720 answers of a real run (an extra closing brace, a missing tag).
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
# The name a level's function docs are checked under: BFCL keys per-model quirks by it (see _checker).
MODEL_NAME = "lathe-local"
INSTALL_HINT = "pip install --no-deps 'bfcl-eval==2026.3.23'"


def data_dir() -> Path:
    try:
        import bfcl_eval
    except ImportError:
        raise LatheError(f"lathe.eval.benchmarks.bfcl needs bfcl-eval: {INSTALL_HINT}") from None
    return Path(bfcl_eval.__file__).parent / "data"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def spread(count: int, total: int) -> list[int]:
    """`count` indices spread evenly over `total` items: a category's first items are often one topic."""
    count = min(count, total)
    return [i * total // count for i in range(count)]


def _json_schema(node: Any) -> Any:
    """BFCL's function docs use Python-ish type names (dict, float, tuple, any); tools use JSON Schema's."""
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI

    if isinstance(node, dict):
        out = {k: _json_schema(v) for k, v in node.items()}
        if isinstance(node.get("type"), str):
            out["type"] = GORILLA_TO_OPENAPI.get(node["type"], node["type"])
        return out
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    return node


def as_tools(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f["name"], "description": f.get("description", ""),
                                              "parameters": _json_schema(f.get("parameters", {}))}}
            for f in functions]


def prompts(config: BFCL) -> list[Prompt]:
    root = data_dir()
    out = []
    for category in config.categories:
        entries = _read_jsonl(root / f"BFCL_v4_{category}.json")
        answers = {}
        answer_file = root / "possible_answer" / f"BFCL_v4_{category}.json"
        if answer_file.is_file():
            answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(answer_file)}
        for index in spread(config.per_category, len(entries)):
            entry = entries[index]
            out.append(Prompt(
                suite="bfcl", id=entry["id"], messages=entry["question"][0], tools=as_tools(entry["function"]),
                max_tokens=config.max_tokens,
                data={"category": category, "functions": entry["function"], "answer": answers.get(entry["id"])},
            ))
    return out


def tools_system_message(tools: list[dict[str, Any]]) -> str:
    """The tools as a system message, for a chat template that does not render `tools` itself."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("You may call one or more functions to answer the user. The functions:\n<tools>\n" + listed +
            "\n</tools>\nFor each call, reply with a JSON object inside <tool_call></tool_call> tags:\n"
            '<tool_call>\n{"name": <function name>, "arguments": <arguments as a JSON object>}\n</tool_call>')


def with_tools_in_system(messages: list[dict[str, str]], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    text = tools_system_message(tools)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": text + "\n\n" + messages[0]["content"]}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _calls_in(value: Any) -> list[dict[str, Any]] | None:
    """`{"name", "arguments"}` objects (one, or a list of them) as BFCL calls; None if `value` is not that."""
    found = value if isinstance(value, list) else [value]
    calls = []
    for call in found:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        args = call.get("arguments", call.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append({call["name"]: args})
    return calls


def decode(output: str) -> list[dict[str, Any]]:
    """The function calls in a level's answer, in BFCL's form; [] when it calls nothing decodable."""
    from orchestrator.evaluation.tasks import first_json

    calls: list[dict[str, Any]] = []
    if "<tool_call>" not in output:  # a model that answers with bare JSON, in prose or not
        value = first_json(output)
        return (_calls_in(value) or []) if value is not None else []
    for block in _TOOL_CALL.findall(output):
        try:
            value = json.loads(block)
        except json.JSONDecodeError:
            continue
        calls += _calls_in(value) or []
    return calls


class _AnyModel(dict):
    """Answers every model name with a configuration whose names are served as written."""

    def __getitem__(self, name: str) -> Any:
        return types.SimpleNamespace(underscore_to_dot=False)


@cache
def _checker() -> Callable[..., dict[str, Any]]:
    """BFCL's `ast_checker`. Its module imports BFCL's registry of model handlers (and with it every
    hosted model's SDK) for a single flag: whether the model was served function names with "." turned
    into "_". Lathe serves names as written, so a registry that says so for every model stands in for
    it before the checker is imported; the checking itself is BFCL's code, unchanged."""
    data_dir()
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        registry = types.ModuleType(name)
        registry.MODEL_CONFIG_MAPPING = _AnyModel()  # type: ignore[attr-defined]
        sys.modules[name] = registry
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    return ast_checker


def check(prompt: Prompt, output: str) -> tuple[bool, str]:
    """(right, BFCL's error text) for one answer."""
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.utils import is_function_calling_format_output

    calls = decode(output)
    category = prompt.data["category"]
    if "irrelevance" in category:
        # BFCL's rule: right when the answer holds no function call at all.
        called = bool(calls) and is_function_calling_format_output(calls)
        return (not called, "called a function although none fits" if called else "")
    if not calls:
        return False, "no function call decoded"
    verdict = _checker()(prompt.data["functions"], calls, prompt.data["answer"], Language.PYTHON, category,
                         MODEL_NAME)
    return bool(verdict["valid"]), "; ".join(str(e) for e in verdict.get("error", []))[:300]


def score(asked: list[Prompt], outputs: dict[str, str]) -> SuiteScore:
    items: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    per_category: dict[str, list[bool]] = {}
    for prompt in asked:
        right, why = check(prompt, outputs.get(prompt.id, ""))
        items[prompt.id] = 1.0 if right else 0.0
        details[prompt.id] = {"output": outputs.get(prompt.id, ""), "right": right, "error": why}
        per_category.setdefault(prompt.data["category"], []).append(right)
    metrics = {"accuracy": sum(items.values()) / len(items)}
    metrics |= {category: sum(v) / len(v) for category, v in per_category.items()}
    return SuiteScore(main="accuracy", metrics=metrics, items=items, details=details)
