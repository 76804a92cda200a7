"""What every `lathe` command shares: the error decorator (one table of exit codes, in `errors`),
the console, option types, a run's registry entry, the pull progress bar and the eval-and-report
step that `run` and `eval` both end with."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.errors import GateFailed, LatheError

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator import registry

RunsDir = Annotated[Path, typer.Option(help="Where run directories go.")]
RunId = Annotated[str, typer.Argument(help="A run id (or a unique prefix).")]


def user_errors[F: Callable[..., Any]](fn: F) -> F:
    """Print a LatheError as its own lines (never wrapped or decorated) and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LatheError as exc:
            sys.stderr.write(f"{exc}\n")
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def console() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 220)


def entry(run_id: str) -> registry.Entry:
    from orchestrator import registry

    found = registry.find(run_id)
    if found is None:
        raise LatheError(f"run {run_id!r}: not in this machine's registry ({registry.home() / 'registry.db'}); "
                         "see `lathe runs`, or `lathe runs --cluster NAME` for the runs in a cluster's store")
    return found


def pull_bar() -> Any:
    """A transient download bar on stderr; use as a context manager, call it with (done, total)."""
    from contextlib import contextmanager

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    @contextmanager
    def bar():  # type: ignore[no-untyped-def]
        columns = (TextColumn("[bold]pull[/]"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
            task = progress.add_task("pull", total=None)
            yield lambda done, total: progress.update(task, completed=done, total=total)

    return bar()


def evaluate_and_report(run_dir: Path, *, backend: str = "all", sampling_json: str | None = None,
                        items: Path | None = None, grid: dict[str, list[float]] | None = None,
                        judge: Path | None = None, base: Path | None = None, arena_rounds: int | None = 0,
                        lm_eval_tasks: list[str] | None = None) -> None:
    from orchestrator.evaluation.evaluate import evaluate
    from orchestrator.evaluation.report import print_summary

    for path, flag in ((items, "--items"), (judge, "--judge"), (base, "--base")):
        if path is not None and not path.is_file():
            raise LatheError(f"{flag}: {path}: no such file")
    evaluation = evaluate(run_dir, backend, sampling_json, items,  # type: ignore[arg-type]
                          progress=lambda msg: typer.echo(f"evaluating {msg}", err=True),
                          sweep_grid=grid or None, judge_path=judge, base_gguf=base, lm_eval_tasks=lm_eval_tasks)
    print_summary(evaluation, console(), arena_rounds)
    typer.echo(f"report: {evaluation.out / 'report.md'}")
    if evaluation.failures:
        raise GateFailed("\n".join(f"gate failed: {f}" for f in evaluation.failures))
