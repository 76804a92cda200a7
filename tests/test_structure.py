"""The layout rules the code keeps (read from the source, nothing run): no import cycle inside
`orchestrator`, small modules, a run's file names spelled in one module, one exit code per error
kind and the documented table (docs/reference.md) in step with it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from orchestrator import errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orchestrator"
LAYOUT = PACKAGE / "run" / "layout.py"
RUN_FILE_NAMES = {"run.json", "recipe.yml", "axolotl.yml", "metrics.jsonl", "events.jsonl", "export.log",
                  "report.json", "manifest.json"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the orchestrator modules it imports, anywhere in its body (lazy imports count too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                found = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            graph[name] |= {f for f in found if f in modules and f != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_inside_the_package() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_400_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}


def test_every_package_says_what_lives_there() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent.name == "data":
            continue
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(ROOT)} has no docstring"


def test_a_runs_file_names_are_spelled_in_one_module() -> None:
    spelled: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == LAYOUT:
            continue
        tree = ast.parse(path.read_text())
        prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings may name files
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose and (
                    node.value in RUN_FILE_NAMES or "/inputs/" in node.value):
                spelled.setdefault(str(path.relative_to(ROOT)), []).append(node.value)
    assert spelled == {}, "name these through orchestrator.run.layout"


# Scripts branch on these: a change is deliberate, made here and in the README's table, never by the way
# (StoreError once moved from 6 to 8 unannounced).
PINNED_EXIT_CODES = {"success": 0, "LatheError": 1, "RecipeError": 2, "ManifestError": 3, "TokenizerMismatch": 4,
                     "GateFailed": 5, "ProvisionError": 6, "PublishError": 7, "StoreError": 8,
                     "InfrastructureError": 9}


def test_every_error_kind_has_its_own_exit_code_pinned_and_the_readme_lists_them() -> None:
    kinds = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.LatheError)]
    codes = {cls.__name__: cls.exit_code for cls in kinds if cls is not errors.RecipeErrors}
    assert len(set(codes.values())) == len(codes), codes
    assert set(errors.EXIT_CODES) == {0, *codes.values()}
    assert {"success": 0, **codes} == PINNED_EXIT_CODES
    assert errors.RecipeErrors.exit_code == errors.RecipeError.exit_code
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| `?(\w+)`? \|", readme, re.MULTILINE))
    assert {name: int(code) for code, name in table.items()} == PINNED_EXIT_CODES


@pytest.mark.parametrize("defined_elsewhere", ["class .*\\(LatheError\\)", "exit_code = \\d"])
def test_error_kinds_live_in_the_errors_module(defined_elsewhere: str) -> None:
    pattern = re.compile(defined_elsewhere)
    found = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
             if p.name != "errors.py" and pattern.search(p.read_text())]
    assert found == []

