"""Errors a user can act on: each renders as one line naming the file and the field."""

from __future__ import annotations


class LatheError(Exception):
    """A failure with a message fit for the terminal; the CLI prints it and exits non-zero."""

    exit_code = 1


class InfrastructureError(LatheError):
    """The run failed for a reason outside the recipe (a node, the store, Ray itself): it may succeed
    if tried again from its checkpoints, so the laptop may resubmit it."""


class RecipeError(LatheError):
    """A recipe (or a file it names) is wrong: ``FILE: FIELD: problem``."""

    exit_code = 2

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file, self.field, self.problem = file, field, problem
        super().__init__(f"{file}: {field}: {problem}" if field else f"{file}: {problem}")


class RecipeErrors(LatheError):
    """Several independent problems found in one pass, one line each."""

    exit_code = 2

    def __init__(self, errors: list[RecipeError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
