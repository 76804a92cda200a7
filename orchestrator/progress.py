"""A live training display (rich) fed by the run's metrics.jsonl."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.run.layout import METRICS, JsonlTail

if TYPE_CHECKING:
    from orchestrator.run.layout import RunDir


def _stderr_console() -> Console:
    return Console(stderr=True, log_path=False)  # a reader wants the time of a line, not its source location


PLAIN_EVERY_S = 30.0  # without a terminal, one line about the training this often


def _fields(last: dict) -> dict[str, object]:
    """The display's fields from the newest metrics point."""
    return {"step": last["step"], "max_steps": last.get("max_steps") or "?",
            "loss": f"{last['loss']:.3f}" if "loss" in last else "-",
            "tps": f"{last['tokens_per_second']:.0f}" if "tokens_per_second" in last else "-",
            "eta": f"{last['eta_seconds']:.0f}s" if "eta_seconds" in last else "-"}


def follow_training(run: RunDir, worker: threading.Thread, console: Console | None = None) -> None:
    """Render step / loss / tokens-per-second / ETA until `worker` finishes."""
    console = console or _stderr_console()
    if not console.is_terminal:
        _log_training(run, worker, console)
        return
    columns = (
        TextColumn("[bold]train[/]"),
        BarColumn(),
        TextColumn("step {task.fields[step]}/{task.fields[max_steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
    )
    newest = JsonlTail(run.path / METRICS)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=None, step=0, max_steps="?", loss="-", tps="-", eta="-")
        while worker.is_alive():
            worker.join(timeout=1.0)
            if (last := newest()) is not None:
                progress.update(task, completed=last["step"], total=last.get("max_steps") or None, **_fields(last))


def _log_training(run: RunDir, worker: threading.Thread, console: Console, every: float = PLAIN_EVERY_S) -> None:
    """Without a terminal (output to a file, CI), a live bar shows nothing until it ends, and a run's log
    stayed silent through the whole training: a plain line at the first step, then every `every` seconds,
    and at the last step."""
    said_step, said_at = None, float("-inf")
    newest = JsonlTail(run.path / METRICS)
    while True:
        alive = worker.is_alive()
        last = newest()
        if last is not None and last["step"] != said_step and (not alive or time.monotonic() - said_at >= every):
            f = _fields(last)
            console.log(f"train: step {f['step']}/{f['max_steps']}, loss {f['loss']}, {f['tps']} tok/s, ETA {f['eta']}")
            said_step, said_at = last["step"], time.monotonic()
        if not alive:
            return
        worker.join(timeout=0.5)


def follow_export(log_path: Path, done: Callable[[], bool], console: Console | None = None) -> None:
    """Show each export step as it starts (the export task writes one line per step)."""
    console = console or _stderr_console()
    shown = 0
    with console.status("[bold]export[/] starting") as status:
        while True:
            finished = done()
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            for line in lines[shown:]:
                status.update(f"[bold]export[/] {line}")
                console.log(f"export: {line}")
            shown = len(lines)
            if finished:
                return
            time.sleep(0.5)
