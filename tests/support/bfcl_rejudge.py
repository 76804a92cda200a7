"""BFCL's own verdict on an answer, by a path that shares nothing with Lathe's scorer but the checker:
the calls are read by bfcl-eval's own decoder for `<tool_call>` answers (its Qwen function-calling
handler's `_extract_tool_calls` and `decode_ast`, taken from the installed file: importing the handler
module pulls in tree-sitter and a dozen SDKs bfcl-eval is installed without), then judged by its
`ast_checker`, or for irrelevance by its rule (right when nothing decodes)."""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.evaluation.benchmarks import bfcl
from orchestrator.evaluation.benchmarks.common import Prompt


@cache
def _decoder() -> Any:
    import bfcl_eval

    path = Path(bfcl_eval.__file__).parent / "model_handler" / "local_inference" / "qwen_fc.py"
    tree = ast.parse(path.read_text())
    handler = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "QwenFCHandler")
    wanted = {"_extract_tool_calls", "decode_ast"}
    methods = [n for n in handler.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {m.name for m in methods} == wanted, f"bfcl-eval's Qwen handler changed: {path}"
    for method in methods:
        method.decorator_list = []
    body = ast.Module(body=[ast.ClassDef(name="Decoder", bases=[], keywords=[], body=methods, decorator_list=[],
                                         type_params=[])], type_ignores=[])
    namespace: dict[str, Any] = {"json": json, "re": re}
    # bfcl-eval's own two methods, compiled from its installed file: code the package ships, not input.
    exec(compile(ast.fix_missing_locations(body), str(path), "exec"), namespace)  # noqa: S102
    decoder = namespace["Decoder"]
    decoder._extract_tool_calls = staticmethod(decoder._extract_tool_calls)
    return decoder()


def verdict(prompt: Prompt, output: str) -> bool:
    """Right or wrong, as bfcl-eval's own decoder and checker see `output`."""
    from bfcl_eval.constants.enums import Language

    try:
        calls = _decoder().decode_ast(output, Language.PYTHON, True)
    except (ValueError, AttributeError, TypeError, KeyError):
        calls = []
    if "irrelevance" in prompt.data["category"]:
        return not calls
    if not calls:
        return False
    checker = bfcl._checker()
    result = checker(prompt.data["functions"], calls, prompt.data["answer"], Language.PYTHON,
                     prompt.data["category"], bfcl.MODEL_NAME)
    return bool(result["valid"])
