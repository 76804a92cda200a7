"""Read what an installed library defines, without the cost of importing it.

Validation checks a recipe's optimizer, scheduler and dataset types against lists that transformers
and Axolotl define in modules costing ~5-15 s of CPU to import (transformers' trainer utilities pull
in torch and accelerate). This module reads those lists from the installed source files: the same
definitions, parsed, not executed. ``tests/test_validate.py`` checks every list read here against the
imported object, so a library upgrade that moves a definition fails a test, not a user.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


class NotFoundInSource(LookupError):
    """The definition is not where, or not in the form, this module expects."""


def source_path(module: str) -> Path:
    """Where `module`'s source is, found from its top-level package alone: `find_spec` of a submodule
    would import (run) every parent package's __init__, which is the cost this module avoids."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundInSource(f"{module}: package {top} is not installed")
    for root in spec.submodule_search_locations:
        base = Path(root).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    raise NotFoundInSource(f"{module}: no Python source installed")


def _parsed(module: str) -> ast.Module:
    path = source_path(module)
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _strings(node: ast.AST | None) -> list[str]:
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def enum_values(module: str, class_name: str) -> frozenset[str]:
    """The string values of an ``Enum`` class's members (``NAME = "value"``)."""
    for node in _parsed(module).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            values = [v for stmt in node.body if isinstance(stmt, ast.Assign) for v in _strings(stmt.value)]
            if values:
                return frozenset(values)
    raise NotFoundInSource(f"{module}.{class_name}: no enum of string values")


def dict_keys(module: str, name: str) -> frozenset[str]:
    """The string keys of a module-level dict literal (``NAME = {"key": ...}``)."""
    for node in _parsed(module).body:
        named = isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        if named and isinstance(node.value, ast.Dict):
            keys = [k for key in node.value.keys for k in _strings(key)]
            if keys:
                return frozenset(keys)
    raise NotFoundInSource(f"{module}.{name}: no dict literal with string keys")


def submodule_names(package: str) -> frozenset[str]:
    """The modules and subpackages of a package, listed from its directory (its ``__init__`` not run)."""
    import pkgutil

    init = source_path(package)
    if init.name != "__init__.py":
        raise NotFoundInSource(f"{package}: not a package")
    return frozenset(m.name for m in pkgutil.iter_modules([str(init.parent)]))
