"""The Axolotl plugin Lathe adds to every recipe it trains.

Listed in the recipe's `plugins:` as `orchestrator.cluster.plugin.LathePlugin`, it
adds two transformers callbacks: one publishes each logged step (see
`metrics.MetricsSink`), one hands each checkpoint Axolotl saves to Ray Train so
that a restarted worker group resumes from it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from orchestrator.cluster.metrics import MetricsSink


class MetricsCallback(TrainerCallback):
    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            self.sink.record(state.global_step, state.max_steps, logs)

    def on_train_end(self, args, state, control, **kwargs):
        self.sink.flush()


class RayCheckpointCallback(TrainerCallback):
    """Report every saved checkpoint to Ray Train, uploaded in the background (`checkpoint_upload`); every
    rank reports, rank 0 attaches the files."""

    def __init__(self, sink: MetricsSink | None) -> None:
        self.sink = sink

    def on_save(self, args, state, control, **kwargs):
        import ray.train

        from orchestrator.cluster.checkpoint_upload import report_async

        ckpt_dir = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        metrics: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch or 0.0}
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        if losses:
            metrics["loss"] = losses[-1]
        mine = ray.train.get_context().get_world_rank() == 0 and ckpt_dir.is_dir()
        began = time.perf_counter()
        report_async(metrics, ckpt_dir if mine else None, Path(args.output_dir), self.sink)
        if mine and self.sink is not None:
            # What the hand-off cost the loop (the upload itself goes on in Ray's thread): `run.timeline`.
            self.sink.event("checkpoint_handed", step=state.global_step, seconds=round(time.perf_counter() - began, 3))


class LathePlugin(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        callbacks: list[TrainerCallback] = []
        sink = MetricsSink.from_env()
        if sink is not None:
            callbacks.append(MetricsCallback(sink))
        if os.environ.get("LATHE_RAY_REPORT") == "1":
            callbacks.append(RayCheckpointCallback(sink))
        return callbacks
