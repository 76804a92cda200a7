"""A failed export stops everything it started: the base model's GGUF converts in a thread beside the
merge, and a merge that failed used to return with that thread (and its converter subprocess) still
writing into the export directory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from orchestrator.cluster import export as export_mod
from orchestrator.errors import LatheError


def test_a_failed_merge_waits_for_the_base_conversion_it_started(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    wrote: list[float] = []

    def slow_base(_model: Path, out: Path, level: str, _file: str | None) -> Path:  # the converter: seconds, then a file
        time.sleep(1.5)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"model-{level}.gguf").write_bytes(b"GGUF")
        wrote.append(time.monotonic())
        return out / f"model-{level}.gguf"

    def broken_merge(_plan: export_mod.ExportPlan, _out: Path) -> tuple[int, None]:
        raise LatheError("merge check failed: merged != base + adapter")

    monkeypatch.setattr(export_mod, "export_base", slow_base)
    monkeypatch.setattr(export_mod, "merge", broken_merge)
    weights = tmp_path / "adapter"
    weights.mkdir()
    (weights / "adapter_config.json").write_text("{}")
    plan = export_mod.ExportPlan(run_id="r", recipe_sha256="0" * 64, base_model=str(tmp_path), weights_dir=weights,
                                 out_dir=tmp_path / "export", base_gguf="q8_0")
    with pytest.raises(LatheError, match="merge check failed"):
        export_mod.export(plan)
    failed_at = time.monotonic()
    assert not [t for t in threading.enumerate() if t.name.startswith("lathe-base-gguf")], \
        "the base's converter is still running after the export failed"
    assert wrote and wrote[0] <= failed_at, "it finished before the failure was raised, not after"


def test_base_gguf_source_refuses_a_file_that_is_not_the_one_the_base_was_made_from(tmp_path: Path) -> None:
    """`base_gguf: source` copies the user's GGUF into the export as the arena's base: only the very file
    the base was dequantized from (its sha256 recorded then), never whatever now sits at that path."""
    import json

    from orchestrator import gguf_base

    source = tmp_path / "model.Q4_1.gguf"
    source.write_bytes(b"GGUF the file the base was made from")
    base = tmp_path / "base"
    base.mkdir()
    provenance = {"source": str(source), "sha256": gguf_base.sha256(source), "quantization": "Q4_1",
                  "architecture": "llama", "full_precision": "dequantized from Q4_1"}
    (base / gguf_base.PROVENANCE).write_text(json.dumps(provenance))
    assert export_mod.base_source(base) == source
    source.write_bytes(b"GGUF another file, written over it since")
    with pytest.raises(LatheError, match=r"is not the file the base was made from \(sha256 "):
        export_mod.base_source(base)
    # The same content elsewhere (a cluster job's copy, in its own working directory): that file is the
    # source for this run; a different file there is refused as well.
    source.write_bytes(b"GGUF the file the base was made from")
    copy = tmp_path / "job-2" / "model.Q4_1.gguf"
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())
    source.unlink()
    assert export_mod.base_source(base, str(copy)) == copy
    copy.write_bytes(b"GGUF not it")
    with pytest.raises(LatheError, match=r"is not the file the base was made from \(sha256 "):
        export_mod.base_source(base, str(copy))
    (base / gguf_base.PROVENANCE).unlink()
    with pytest.raises(LatheError, match="was not made from a GGUF file"):
        export_mod.base_source(base)

