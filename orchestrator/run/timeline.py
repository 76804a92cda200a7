"""Where a run's wall-clock time went, from the timestamps it already keeps.

The driver marks stage boundaries in run.json (`RunDir.mark`); the workers' events and
the metrics' step times fill in the training stage. Shown at the end of `lathe run` and
by the benchmarks, so the time between "submitted" and "first step" is never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.run.layout import RunDir

# The marks, in the order a run passes them.
STARTED, BASE_BUILT, RAY_READY = "started", "base_built", "ray_ready"
FIT_STARTED, FIT_RETURNED = "fit_started", "fit_returned"
EXPORT_STARTED, EXPORT_DONE, EVAL_STARTED, EVAL_DONE = "export_started", "export_done", "eval_started", "eval_done"
RAY_ENDED = "ray_ended"  # a local Ray that `lathe run` started, ended before the evaluation


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


def phases(run: RunDir) -> list[Phase]:
    """The run's phases that its records bound, in order; a phase with a missing end is left out."""
    marks = dict(run.record().marks)
    events = [e for e in run.events() if e.get("rank") == 0]
    starts = [e["time"] for e in events if e.get("event") == "worker_start"]
    dones = [e["time"] for e in events if e.get("event") == "worker_done"]
    steps = [p["time"] for p in run.metrics() if "time" in p]
    if starts:
        marks["worker_start"] = starts[-1]  # the attempt that finished
    if steps:
        marks["first_step"], marks["last_step"] = steps[0], steps[-1]
    if dones:
        marks["worker_done"] = dones[-1]
    spans = [
        ("make the base", STARTED, BASE_BUILT),  # first use only: a tiny:// base built, a .gguf dequantized
        ("start Ray", BASE_BUILT if BASE_BUILT in marks else STARTED, RAY_READY),
        ("start the workers", FIT_STARTED, "worker_start"),
        ("to the first step", "worker_start", "first_step"),
        ("training loop", "first_step", "last_step"),
        ("hand the model back", "last_step", FIT_RETURNED),
        ("export", EXPORT_STARTED, EXPORT_DONE),
        ("end Ray", EXPORT_DONE, RAY_ENDED),
        ("evaluate", EVAL_STARTED, EVAL_DONE),
    ]
    return [Phase(name, marks[b] - marks[a]) for name, a, b in spans if a in marks and b in marks and marks[b] >= marks[a]]


def total(run: RunDir) -> float | None:
    """From the driver's start to the last mark: the wall time the user waited."""
    marks = run.record().marks
    return max(marks.values()) - marks[STARTED] if STARTED in marks and len(marks) > 1 else None


def line(run: RunDir) -> str:
    """One line for the terminal: each phase, and the whole."""
    parts = [f"{p.name} {p.seconds:.0f} s" for p in phases(run)]
    whole = total(run)
    return "time: " + ", ".join(parts) + (f"; {whole / 60:.1f} min in all" if whole is not None else "")
