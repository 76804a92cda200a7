"""`lathe watch`: a live terminal view of a run, from Prometheus or, failing that, metrics.jsonl.

Prometheus is the source when one is named (it also has GPU use and cost, which
only live there); a run directory's metrics.jsonl, or the store's copy for a
submitted run, is the fallback, so the embedded default works with nothing else
running.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from orchestrator.run.layout import RunDir, RunRecord
from orchestrator.run.state import RunState, is_terminal
from orchestrator.run.stored import StoredRun

BARS = "▁▂▃▄▅▆▇█"
# Cost so far: GPUs x price x hours while the run is active; once it has ended, the final cost its
# driver pushed (the Pushgateway keeps a finished run's series, so "now - start" would grow forever).
# The Grafana panel uses the same expression (tests/test_observability.py checks they agree).
COST_EXPR = ("(lathe_run_gpus{sel} * lathe_run_price_per_gpu_hour{sel} * (time() - lathe_run_started_seconds{sel}) / 3600"
             " and on (run_id) (lathe_run_state{active} == 1))"
             " or on (run_id) lathe_run_cost_dollars{sel}")
ACTIVE_PUSHED = "|".join(s.value for s in (RunState.RUNNING, RunState.EXPORTING, RunState.UPLOADING))


def cost_expr(selector: str) -> str:
    """COST_EXPR for the runs `selector` picks (a label matcher list without braces)."""
    sel = f"{{{selector}}}" if selector else ""
    active = f'{{{selector + ", " if selector else ""}state=~"{ACTIVE_PUSHED}"}}'
    return COST_EXPR.format(sel=sel, active=active)


@dataclass
class Snapshot:
    run_id: str
    source: str
    state: str = "?"
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    step: int | None = None
    max_steps: int | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    cost: float | None = None
    gpu_util: float | None = None


def sparkline(values: list[float], width: int = 60) -> str:
    if not values:
        return ""
    if len(values) > width:  # average into `width` buckets
        size = len(values) / width
        values = [sum(chunk) / len(chunk) for i in range(width)
                  if (chunk := values[int(i * size):max(int((i + 1) * size), int(i * size) + 1)])]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int((v - low) / span * (len(BARS) - 1)))] for v in values)


def from_points(run_id: str, points: list[dict[str, Any]], record: RunRecord, source: str) -> Snapshot:
    snap = Snapshot(run_id, source, state=record.state or "?")
    snap.losses = [(p["step"], p["loss"]) for p in points if "loss" in p]
    if points:
        last = points[-1]
        snap.step, snap.max_steps = last.get("step"), last.get("max_steps")
        snap.tokens_per_second = next((p["tokens_per_second"] for p in reversed(points)
                                       if "tokens_per_second" in p), None)
        snap.eta_seconds = last.get("eta_seconds")
    return snap


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise OSError(f"Prometheus: {body.get('error', 'query failed')}")
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self._get("/api/v1/query", {"query": expr})
        return float(result[0]["value"][1]) if result else None

    def series(self, expr: str, start: float, end: float, step: float) -> list[tuple[float, float]]:
        result = self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def from_prometheus(prom: Prometheus, run_id: str, lookback_s: float = 6 * 3600) -> Snapshot:
    sel = f'{{run_id="{run_id}"}}'
    end = time.time()
    started = prom.scalar(f"lathe_run_started_seconds{sel}") or end - lookback_s
    step = max(1.0, (end - started) / 300)
    losses = prom.series(f"lathe_train_loss{sel}", started - 60, end, step)
    steps = dict(prom.series(f"lathe_train_step{sel}", started - 60, end, step))
    snap = Snapshot(run_id, f"prometheus {prom.url}")
    snap.losses = [(int(steps.get(t, i)), v) for i, (t, v) in enumerate(losses)]
    states = prom._get("/api/v1/query", {"query": f"lathe_run_state{sel} == 1"})
    snap.state = states[0]["metric"].get("state", "?") if states else "?"
    for attr, expr in (("step", f"lathe_train_step{sel}"), ("max_steps", f"lathe_train_max_steps{sel}"),
                       ("tokens_per_second", f"lathe_train_tokens_per_second{sel}"),
                       ("eta_seconds", f"lathe_train_eta_seconds{sel}")):
        value = prom.scalar(expr)
        setattr(snap, attr, int(value) if value is not None and attr in ("step", "max_steps") else value)
    snap.cost = prom.scalar(cost_expr(f'run_id="{run_id}"'))
    snap.gpu_util = prom.scalar("avg(DCGM_FI_DEV_GPU_UTIL)")
    return snap


def render(snap: Snapshot, width: int = 60) -> Panel:
    losses = [v for _, v in snap.losses]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("source", snap.source)
    table.add_row("state", snap.state)
    if snap.step is not None:
        table.add_row("step", f"{snap.step}/{snap.max_steps or '?'}")
    if losses:
        table.add_row("loss", f"{losses[-1]:.4f} (first {losses[0]:.4f}, min {min(losses):.4f})")
        table.add_row("", sparkline(losses, width))
    for label, value, fmt in (("tokens/s", snap.tokens_per_second, "{:.0f}"), ("ETA", snap.eta_seconds, "{:.0f} s"),
                              ("GPU use", snap.gpu_util, "{:.0f} %"), ("cost so far", snap.cost, "${:.2f}")):
        table.add_row(label, fmt.format(value) if value is not None else "-")
    return Panel(Group(table), title=f"{snap.run_id}", expand=False)


def watch(fetch: Callable[[], Snapshot], once: bool, interval: float, console: Any) -> Snapshot:
    from rich.live import Live

    snap = fetch()
    if once:
        console.print(render(snap))
        return snap
    with Live(render(snap), console=console, refresh_per_second=2) as live:
        while not is_terminal(snap.state):
            time.sleep(interval)
            snap = fetch()
            live.update(render(snap))
    return snap


def local_source(run: RunDir) -> Callable[[], Snapshot]:
    """A run directory on this machine: its metrics.jsonl and run.json."""
    return lambda: from_points(run.record().run_id, run.metrics(), run.record(), f"metrics.jsonl in {run.path}")


def store_source(stored: StoredRun) -> Callable[[], Snapshot]:
    """A submitted run: the copies of its metrics.jsonl and run.json the job keeps in the store."""
    return lambda: from_points(stored.run_id, stored.metrics(), stored.record(),
                               f"metrics.jsonl in {stored.store.uri}/{stored.run_id}")


def source(run_id: str, prometheus: str | None, fallback: Callable[[], Snapshot]) -> Callable[[], Snapshot]:
    """Prometheus when one is named and has the run; the run's own files otherwise."""

    def fetch() -> Snapshot:
        if prometheus:
            try:
                snap = from_prometheus(Prometheus(prometheus), run_id)
                if snap.losses:
                    return snap
            except (OSError, ValueError, KeyError):
                pass  # Prometheus down or not scraping this run: the files still tell the story
        return fallback()

    return fetch
