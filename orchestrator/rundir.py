"""A run directory and its run.json: one layout for the laptop, the driver node and the store.

    <run-id>/
      run.json          id, recipe, times, versions, state
      recipe.yml        the recipe exactly as submitted
      axolotl.yml       what Axolotl was given
      metrics.jsonl     one line per logged training step
      events.jsonl      worker starts (with the step resumed from), restarts, completion
      ray/<run-id>/     Ray Train's storage: every reported checkpoint
      adapter/          the trained adapter (or full weights)
      export/           merged model, GGUF levels, MLX, reference log-probs, manifest.json
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.cluster.metrics import read_jsonl

VERSIONED = ("lathe", "axolotl", "transformers", "torch", "peft", "ray", "llama-cpp-python", "mlx")


def new_run_id(recipe_stem: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{recipe_stem}-{stamp}-{secrets.token_hex(2)}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunDir:
    path: Path

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    def record(self) -> dict[str, Any]:
        return json.loads(self.record_path.read_text())

    def update(self, **fields: Any) -> None:
        data = self.record() if self.record_path.exists() else {}
        data.update(fields)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.record_path)

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "events.jsonl")


