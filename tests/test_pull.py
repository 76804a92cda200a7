"""What `lathe pull` chooses from a manifest (pure logic; the transfers are tested against S3 in
test_remote and test_reliability)."""

from __future__ import annotations

import pytest

from orchestrator import manifest as mf
from orchestrator.errors import LatheError
from orchestrator.remote.pull import select

SHA = "0" * 64


def _manifest() -> mf.Manifest:
    def art(path: str, fmt: str, level: str | None = None, role: str = "model") -> mf.Artifact:
        return mf.Artifact(path=path, size=1, sha256=SHA, format=fmt, level=level, role=role)  # type: ignore[arg-type]

    return mf.Manifest(run_id="r", recipe_sha256=SHA, base_model="b", parameters=1, tokenizer_fingerprint="f",
                       versions={}, artifacts=[
                           art("hf/model.safetensors", "hf-safetensors", "hf"), art("hf/config.json", "file", "hf"),
                           art("adapter/adapter_model.safetensors", "adapter", "adapter"),
                           art("gguf/model-f16.gguf", "gguf", "f16"), art("gguf/model-q4_k_m.gguf", "gguf", "q4_k_m"),
                           art("mlx/mlx-4bit/model.safetensors", "mlx", "mlx-4bit"),
                           art("mlx/mlx-4bit/config.json", "file", "mlx-4bit"),
                           art("base/base-q8_0.gguf", "gguf", "q8_0", role="base"),
                           art("reference/reference.npz", "reference"), art("gguf/imatrix.gguf", "imatrix")])


def _paths(levels: list[str] | None) -> set[str]:
    return {a.path for a in select(_manifest(), levels)}


def test_by_default_every_level_and_the_base_never_the_full_weights_or_adapter() -> None:
    assert _paths(None) == {"hf/config.json", "gguf/model-f16.gguf", "gguf/model-q4_k_m.gguf",
                            "mlx/mlx-4bit/model.safetensors", "mlx/mlx-4bit/config.json", "base/base-q8_0.gguf",
                            "reference/reference.npz", "gguf/imatrix.gguf"}


def test_named_levels_bring_only_themselves_plus_what_every_eval_needs() -> None:
    assert _paths(["q4_k_m"]) == {"hf/config.json", "gguf/model-q4_k_m.gguf", "reference/reference.npz",
                                  "gguf/imatrix.gguf"}
    assert "adapter/adapter_model.safetensors" in _paths(["adapter"])
    assert "hf/model.safetensors" in _paths(["hf"])


def test_an_unknown_level_names_what_the_run_has() -> None:
    with pytest.raises(LatheError, match=r"--levels: q2_k not in this run \(it has f16, mlx-4bit, q4_k_m, q8_0\)"):
        select(_manifest(), ["q2_k"])


def test_verify_after_a_default_pull_checks_what_is_here_and_names_what_stayed_in_the_store(tmp_path) -> None:
    """`lathe pull RUN` then `lathe verify` exited 3 (`adapter/README.md: missing`): verify required every
    file of the export, and a default pull leaves the adapter and the full-precision weights in the store.
    Now it checks each unit that is here (or that --level names) whole, and says what is not here."""
    import hashlib

    from tests.support.cli import lathe

    files = {"adapter/README.md": ("adapter", None), "adapter/adapter_model.safetensors": ("adapter", None),
             "hf/model.safetensors": ("hf-safetensors", "hf"), "hf/config.json": ("file", "hf"),
             "gguf/model-f16.gguf": ("gguf", "f16"), "gguf/model-q4_k_m.gguf": ("gguf", "q4_k_m"),
             "reference/reference.npz": ("reference", None)}
    export = tmp_path / "run" / "export"
    artifacts = []
    for path, (fmt, level) in files.items():
        body = path.encode() * 10
        artifacts.append(mf.Artifact(path=path, size=len(body), sha256=hashlib.sha256(body).hexdigest(),
                                     format=fmt, level=level))  # type: ignore[arg-type]
        if not path.startswith(("adapter/", "hf/model")):  # what a default pull brings
            (export / path).parent.mkdir(parents=True, exist_ok=True)
            (export / path).write_bytes(body)
    mf.write(export, mf.Manifest(run_id="r", recipe_sha256=SHA, base_model="b", parameters=1,
                                 tokenizer_fingerprint="f", versions={}, artifacts=artifacts))

    _, absent = mf.verify_pulled(export)
    assert absent == ["adapter", "hf-weights"]
    assert mf.verify_pulled(export, ["f16"])[1] == ["adapter", "hf", "hf-weights", "q4_k_m"]
    with pytest.raises(mf.ManifestError, match="adapter/README.md: missing"):
        mf.verify_pulled(export, ["adapter"])  # asked for by name: it must be here
    proc = lathe("verify", str(tmp_path / "run"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok; not here (left in the store): adapter, hf-weights")
    (export / "gguf" / "model-q4_k_m.gguf").write_bytes(b"truncated")
    proc = lathe("verify", str(tmp_path / "run"))
    assert proc.returncode == 3 and "gguf/model-q4_k_m.gguf: size" in proc.stderr, proc.stderr
