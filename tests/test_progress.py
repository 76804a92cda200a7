"""The training display when nobody watches a terminal: a run's output going to a file or CI's log used to
show nothing from the first step to the last (rich draws a live bar only on a terminal)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

from rich.console import Console

from orchestrator.progress import follow_training
from orchestrator.run.layout import METRICS, RunDir


def test_without_a_terminal_the_training_is_told_in_plain_lines_first_step_and_last(tmp_path: Path) -> None:
    run = RunDir(tmp_path)

    def train() -> None:
        for step in range(1, 6):
            point = {"step": step, "max_steps": 5, "loss": 2.0 / step, "tokens_per_second": 100.0 + step,
                     "eta_seconds": 5 - step}
            with (tmp_path / METRICS).open("a") as f:
                f.write(json.dumps(point) + "\n")
            time.sleep(1.5 if step == 1 else 0.2)  # step 1 long enough to be read under load

    worker = threading.Thread(target=train)
    out = io.StringIO()
    worker.start()
    follow_training(run, worker, Console(file=out, force_terminal=False, width=200, log_path=False))
    lines = [line.split("train: ", 1)[1].strip() for line in out.getvalue().splitlines() if "train: " in line]
    # The first step as soon as it is there, the steps between held back (one line per 30 s), the last at the end.
    assert lines == ["step 1/5, loss 2.000, 101 tok/s, ETA 4s", "step 5/5, loss 0.400, 105 tok/s, ETA 0s"], out.getvalue()


def test_the_display_reads_only_what_was_appended_and_waits_for_a_line_to_end(tmp_path: Path) -> None:
    """JsonlTail: the newest complete point; a half-written line is not read until its newline comes, a file
    written anew is read from its start, and each call reads only the bytes appended since the last."""
    from orchestrator.run.layout import JsonlTail

    path = tmp_path / METRICS
    newest = JsonlTail(path)
    assert newest() is None  # no file yet
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert newest() == {"step": 2} and newest.offset == len('{"step": 1}\n{"step": 2}\n')
    with path.open("a") as f:
        f.write('p": 3}\n')
    assert newest() == {"step": 3}
    offset = newest.offset
    assert newest() == {"step": 3} and newest.offset == offset  # nothing new: nothing read
    path.write_text('{"step": 1}\n')  # a new file, shorter than what was read
    assert newest() == {"step": 1}
