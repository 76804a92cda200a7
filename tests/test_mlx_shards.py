"""An MLX level that mlx-lm wrote in several shards is one level: one row, its size and bits per weight
its shards' together (mlx-lm splits at 5 GB, so every model over that size is written this way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator import manifest as mf
from orchestrator.cluster.export import to_mlx
from orchestrator.evaluation.backends import MLX
from orchestrator.evaluation.evaluate import targets


def _in_halves(weights: dict, max_file_size_gb: int = 5) -> list[dict]:
    """mlx-lm's own save path, with its shard limit (whole GB only) brought down to a tiny model's size."""
    names = sorted(weights)
    return [{k: weights[k] for k in names[: len(names) // 2]}, {k: weights[k] for k in names[len(names) // 2:]}]


def test_a_sharded_mlx_level_is_one_target_that_loads_whole(light_llama: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mlx_lm.utils

    out = tmp_path / "export"
    monkeypatch.setattr(mlx_lm.utils, "make_shards", _in_halves)
    to_mlx(light_llama, out / "mlx" / "mlx-4bit", 4)
    shards = sorted((out / "mlx" / "mlx-4bit").glob("*.safetensors"))
    assert len(shards) == 2 and (out / "mlx" / "mlx-4bit" / "model.safetensors.index.json").is_file()

    params = 10_000_000
    artifacts = [mf.describe(out, p.relative_to(out).as_posix(), "mlx", "mlx-4bit", params) for p in shards]
    manifest = mf.Manifest(run_id="r", recipe_sha256="0" * 64, base_model="tiny", parameters=params,
                           tokenizer_fingerprint="0" * 64, versions={}, artifacts=artifacts)
    found = targets(out, manifest, "all")
    assert len(found) == 1, found
    assert found[0].size_bytes == sum(p.stat().st_size for p in shards)
    assert found[0].bits_per_weight == pytest.approx(sum(p.stat().st_size for p in shards) * 8 / params, abs=0.002)
    assert Path(found[0].path) == out / "mlx" / "mlx-4bit"

    # The one target is the whole model: mlx-lm loads both halves and scores a text with finite log-probs.
    backend = MLX(Path(found[0].path))
    scored = backend.logprobs(backend.tokenize("The capital of France is Paris."))
    assert scored.shape[1] == backend.vocab_size() and np.isfinite(scored).all()
