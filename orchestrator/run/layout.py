"""A run's own data: its directory layout, its record (run.json) and its log files.

One layout for the laptop, the driver node and the store (where a run is the
prefix ``<run-id>/``):

    <run-id>/
      run.json          the run record: id, recipe, times, versions, state (`RunRecord`)
      recipe.yml        the recipe exactly as submitted
      axolotl.yml       what Axolotl was given
      metrics.jsonl     one line per logged training step
      events.jsonl      worker starts (with the step resumed from), restarts, completion
      export.log        the export's progress lines
      inputs/           the recipe's own files (datasets, eval set), as the job received them
      ray/<run-id>/     Ray Train's storage: every reported checkpoint
      adapter/          the trained adapter (or full weights)
      export/           merged model, GGUF levels, MLX, reference log-probs, manifest.json
      eval/             report.json, report.md, report.html, plots (written on the laptop)

Every other module names these files through the constants here.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

RUN_JSON = "run.json"
RECIPE = "recipe.yml"
AXOLOTL = "axolotl.yml"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
EXPORT_LOG = "export.log"
INPUTS = "inputs"
EXPORT = "export"
EVAL = "eval"
ADAPTER = "adapter"
RAY = "ray"
MANIFEST = "manifest.json"
REPORT_JSON = "report.json"

# The small files the job mirrors into the store while it runs: the growing ones, and the recipe as
# submitted and as Axolotl got it (`lathe pull` brings them back; `lathe eval` reads its eval set,
# held-out questions and gates from the recipe).
SYNCED = (RUN_JSON, RECIPE, AXOLOTL, METRICS, EVENTS, EXPORT_LOG)
# What a resubmitted attempt carries over from the lost one.
CARRIED = (RUN_JSON, METRICS, EVENTS)
# What `lathe pull` brings back besides the export.
PULLED = (RUN_JSON, RECIPE, AXOLOTL, METRICS, EVENTS, EXPORT_LOG)

VERSIONED = ("lathe", "axolotl", "transformers", "torch", "peft", "ray", "llama-cpp-python", "mlx")


def new_run_id(recipe_stem: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{recipe_stem}-{stamp}-{secrets.token_hex(2)}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def store_key(run_id: str, *parts: str) -> str:
    """A run's object key in the store: ``<run-id>/<part>/...``."""
    return "/".join((run_id, *parts))


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """Every complete JSON line; a line still being written (the file grows while read) is skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


class JsonlTail:
    """The newest complete line of a jsonl file that grows while it is read (metrics.jsonl during training):
    each call reads only what was appended since the last, not the whole file again every second (a long
    run's 10,000 points were re-parsed each second by its display, on the cores the training needs)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.last: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any] | None:
        try:
            with self.path.open("rb") as f:
                if f.seek(0, 2) < self.offset:  # written anew: start over
                    self.offset, self.last = 0, None
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.last
        end = chunk.rfind(b"\n")  # a line still being written waits for its newline
        if end >= 0:
            self.offset += end + 1
            found = parse_jsonl(chunk[:end].decode("utf-8", errors="replace"))
            self.last = found[-1] if found else self.last
        return self.last


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return parse_jsonl(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else []


class RunRecord(BaseModel):
    """run.json. Every writer adds what it knows; readers get typed fields (and any extra ones)."""

    model_config = ConfigDict(extra="allow")

    run_id: str = ""
    recipe: str = ""
    recipe_sha256: str | None = None
    cluster: str = ""
    state: str = ""  # a RunState's value; "" until a driver has written one
    created: str | None = None
    trained: str | None = None
    ended: str | None = None
    workers: int | None = None
    use_gpu: bool | None = None
    attempt: int = 1
    export: bool = True  # was export asked for (a resubmission asks the same)
    steps: int | None = None
    final_loss: float | None = None
    restarts: int | None = None
    error: str | None = None
    error_kind: str | None = None  # "recipe" or "infrastructure": decides whether the laptop resubmits
    driver_host: str | None = None
    driver_ip: str | None = None
    versions: dict[str, str] = {}
    marks: dict[str, float] = {}  # stage boundaries, epoch seconds (see run.timeline)
    # A base made from a GGUF file: its source, sha256 and quantization (gguf_base.Provenance).
    base_provenance: dict[str, str] | None = None

    @classmethod
    def parse(cls, raw: bytes | str | None) -> RunRecord:
        """A record from the store or a file; empty or unreadable text gives an empty record."""
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {}
        return cls.model_validate(data if isinstance(data, dict) else {})

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


@dataclass
class RunDir:
    """A run directory on this machine (the laptop's, or the driver's scratch copy)."""

    path: Path

    @property
    def record_path(self) -> Path:
        return self.path / RUN_JSON

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL

    @property
    def inputs_dir(self) -> Path:
        return self.path / INPUTS

    def record(self) -> RunRecord:
        return RunRecord.parse(self.record_path.read_bytes()) if self.record_path.is_file() else RunRecord()

    def update(self, **fields: Any) -> RunRecord:
        data = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}
        data.update(fields)
        record = RunRecord.model_validate(data)
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True))
        os.replace(tmp, self.record_path)
        return record

    def mark(self, name: str) -> None:
        """Record that a stage boundary (run.timeline's names) was passed now."""
        import time

        self.update(marks={**self.record().marks, name: round(time.time(), 3)})

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / METRICS)

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / EVENTS)

    def recipe_dir(self) -> Path:
        """Where the recipe's relative paths resolve: a pulled run keeps its files in inputs/; a local
        run names the recipe it was started from."""
        if self.inputs_dir.is_dir():
            return self.inputs_dir
        recipe = self.record().recipe  # an empty record when there is no run.json
        return Path(recipe).parent if recipe else self.path


def find_export(path: Path) -> Path:
    """The export directory of a run directory (or the export directory itself)."""
    from orchestrator.errors import LatheError

    for candidate in (path / EXPORT, path):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise LatheError(f"{path}: no {MANIFEST} here or in {EXPORT}/: not a finished run")


def run_dir_of(export_dir: Path) -> RunDir:
    return RunDir(export_dir.parent if export_dir.name == EXPORT else export_dir)
