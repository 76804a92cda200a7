"""Every error a user can act on, with its exit code: one meaning per code.

Each renders as one line (or one line per problem) naming the file and the field.
The CLI prints the message and exits with the kind's code; the README's table of
exit codes is this module's `EXIT_CODES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class LatheError(Exception):
    """A failure with a message fit for the terminal: a bad option, an unknown run, a run that failed."""

    exit_code = 1


class RecipeError(LatheError):
    """A recipe (or a file it names, an inventory, a profile) is wrong: ``FILE: FIELD: problem``."""

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


class ManifestError(LatheError):
    """An artifact set does not match its manifest (missing, wrong size, wrong sha256, unsafe path)."""

    exit_code = 3


class TokenizerMismatch(LatheError):
    """A level's runtime tokenizes differently from the model that was trained: its numbers would lie."""

    exit_code = 4


class GateFailed(LatheError):
    """A quality gate of the recipe failed at some level (the report is still written)."""

    exit_code = 5


class ProvisionError(LatheError):
    """`lathe cluster`: a host failed preflight, or a node did not come up."""

    exit_code = 6


class PublishError(LatheError):
    """`lathe publish`: the destination refused, or what would be published is unsafe."""

    exit_code = 7


class StoreError(LatheError):
    """The artifact store cannot be reached or refused a request."""

    exit_code = 8


class InfrastructureError(LatheError):
    """The run failed for a reason outside the recipe (a node, the store, Ray itself): it may succeed
    if tried again from its checkpoints, so the laptop may resubmit it."""

    exit_code = 9


EXIT_CODES: dict[int, str] = {
    0: "success",
    **{cls.exit_code: (cls.__doc__ or "").split("\n")[0].strip()
       for cls in (LatheError, RecipeError, ManifestError, TokenizerMismatch, GateFailed, ProvisionError,
                   PublishError, StoreError, InfrastructureError)},
}


def field_path(loc: Iterable[Any], prefix: str = "") -> str:
    """pydantic's error location as the dotted path a user reads in the file: ``a.b[0].c``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def clean_message(msg: str) -> str:
    return str(msg).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def one_line(exc: ValidationError, file: str, prefix: str = "", default: str = "") -> str:
    """The first problem pydantic found, as ``FILE: FIELD: problem``."""
    err = exc.errors(include_url=False)[0]
    where = field_path(err["loc"], prefix) or default
    return f"{file}: {where}: {clean_message(err['msg'])}" if where else f"{file}: {clean_message(err['msg'])}"
