"""Training metrics out of the worker: a jsonl file always, a Pushgateway when one is named.

Pushing (rather than only serving a scrape endpoint) keeps a node observable when
Prometheus cannot reach it: behind NAT, in a colo, or on a short-lived worker.
Every metric name starts with `lathe_` and carries the run id as a label.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.run.layout import METRICS
from orchestrator.run.state import PUSHED, RunState

log = logging.getLogger(__name__)

# Axolotl / transformers log keys -> our metric names.
FIELDS = {
    "loss": "loss",
    "eval_loss": "eval_loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
    "tokens_per_second": "tokens_per_second",
}


@dataclass
class MetricsSink:
    run_id: str
    jsonl_path: Path | None = None  # written directly (one process), or
    run_log: Any = None  # a runlog.Writer (Ray workers: the file lives on the driver's node)
    pushgateway: str | None = None
    started: float = field(default_factory=time.time)
    checkpoint_failures: int = 0
    _registry: Any = None
    _gauges: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> MetricsSink | None:
        run_id = os.environ.get("LATHE_RUN_ID", "unknown")
        pushgateway = os.environ.get("LATHE_PUSHGATEWAY") or None
        if os.environ.get("LATHE_RUN_LOG") == "1":
            from orchestrator.cluster.runlog import Writer

            return cls(run_id=run_id, run_log=Writer(run_id), pushgateway=pushgateway)
        path = os.environ.get("LATHE_METRICS_PATH")
        if not path:
            return None
        return cls(run_id=run_id, jsonl_path=Path(path), pushgateway=pushgateway)

    def record(self, step: int, max_steps: int, logs: dict[str, Any]) -> dict[str, Any]:
        """Append one point; returns it. Non-numeric and non-finite values are dropped."""
        point: dict[str, Any] = {"time": round(time.time(), 3), "step": step, "max_steps": max_steps}
        nonfinite: dict[str, float] = {}
        for key, name in FIELDS.items():
            value = _number(logs.get(key))
            if value is not None:
                point[name] = value
            elif _is_nonfinite(logs.get(key)):
                nonfinite[name] = float(logs[key])
        if nonfinite:
            point["nonfinite"] = sorted(nonfinite)  # JSON has no NaN; Prometheus does, and alerts on it
        if "tokens_per_second" not in point:
            tps = _number(logs.get("train_tokens_per_second") or logs.get("tokens/train_per_sec_per_gpu"))
            if tps is not None:
                point["tokens_per_second"] = tps
        elapsed = point["time"] - self.started
        if step > 0 and max_steps > step:
            point["eta_seconds"] = round(elapsed / step * (max_steps - step), 1)
        if self.run_log is not None:
            self.run_log.write(METRICS, point)
        elif self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(point) + "\n")
        if self.pushgateway:
            self._push({**point, **nonfinite})
        return point

    def event(self, name: str, **fields: Any) -> None:
        """A line in the run's events.jsonl, where a run log is kept (rank 0 of a Ray run)."""
        if self.run_log is not None:
            self.run_log.event(name, **fields)

    def checkpoint_failed(self, checkpoint: str, error: BaseException) -> None:
        """Count an attempt to store a checkpoint that failed (the LatheCheckpointUploadFailing alert), and
        say so in the run's events. Called from Ray's upload thread (see `checkpoint_upload`). The event
        names the exception's type, not its message: a store's error may quote its endpoint and request
        (the worker's own log has the whole traceback)."""
        self.checkpoint_failures += 1
        if self.pushgateway:
            self._push({"checkpoint_failures_total": self.checkpoint_failures})
        if self.run_log is not None:
            self.run_log.event("checkpoint_upload_failed", checkpoint=checkpoint, error=type(error).__name__)
            self.run_log.flush()

    def flush(self) -> None:
        if self.run_log is not None:
            self.run_log.flush()

    def _push(self, point: dict[str, Any]) -> None:
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        if self._registry is None:
            self._registry = CollectorRegistry()
        for key, value in point.items():
            if key in ("time", "nonfinite"):
                continue
            name = f"lathe_train_{key}"
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, f"Lathe training {key.replace('_', ' ')}", ["run_id"],
                                           registry=self._registry)
            self._gauges[name].labels(run_id=self.run_id).set(value)
        try:
            push_to_gateway(self.pushgateway, job="lathe_train", registry=self._registry,
                            grouping_key={"run_id": self.run_id}, timeout=5)
        except OSError as exc:  # an unreachable gateway must not stop training
            log.warning("lathe: push to %s failed: %s", self.pushgateway, exc.__class__.__name__)


def _is_nonfinite(value: Any) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class RunMetrics:
    """Run-level metrics the driver pushes: state, GPUs, price, start time, stage durations, cost.

    Cost so far is `lathe_run_gpus * lathe_run_price_per_gpu_hour * hours since lathe_run_started_seconds`
    (Grafana and `lathe watch` compute it live); `lathe_run_cost_dollars` is pushed at each stage end."""

    run_id: str
    pushgateway: str | None
    gpus: int = 0
    price_per_gpu_hour: float = 0.0
    started: float = field(default_factory=time.time)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    state: str = RunState.RUNNING

    def set_state(self, state: str) -> None:
        self.state = state
        self.push()

    def stage_done(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = round(seconds, 3)
        self.push()

    def cost(self) -> float:
        return self.gpus * self.price_per_gpu_hour * (time.time() - self.started) / 3600

    def push(self) -> None:
        if not self.pushgateway:
            return
        from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

        registry = CollectorRegistry()
        state = Gauge("lathe_run_state", "1 for the run's current state", ["run_id", "state"], registry=registry)
        for name in PUSHED:
            state.labels(run_id=self.run_id, state=name).set(1 if name == self.state else 0)
        for name, value, doc in (
            ("lathe_run_gpus", self.gpus, "GPUs the run holds"),
            ("lathe_run_price_per_gpu_hour", self.price_per_gpu_hour, "price per GPU-hour (cluster profile)"),
            ("lathe_run_started_seconds", self.started, "when the run started (Unix time)"),
            ("lathe_run_cost_dollars", self.cost(), "cost so far at the last push"),
        ):
            Gauge(name, doc, ["run_id"], registry=registry).labels(run_id=self.run_id).set(value)
        stage = Gauge("lathe_stage_seconds", "how long each stage took", ["run_id", "stage"], registry=registry)
        for name, seconds in self.stage_seconds.items():
            stage.labels(run_id=self.run_id, stage=name).set(seconds)
        try:
            push_to_gateway(self.pushgateway, job="lathe_run", registry=registry,
                            grouping_key={"run_id": self.run_id}, timeout=5)
        except OSError as exc:
            log.warning("lathe: push to %s failed: %s", self.pushgateway, exc.__class__.__name__)
