"""The run manifest: what a finished export holds, with a sha256 per file.

Written last by the export stage (so a run without one is incomplete and never
offered for pull) and checked by everything that reads artifacts back. Paths in a
manifest are relative POSIX paths inside the run's export directory; anything
else (absolute, `..`, symlinks out) is refused before a byte is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import ManifestError, one_line
from orchestrator.run.layout import MANIFEST

Format = Literal["hf-safetensors", "adapter", "gguf", "mlx", "reference", "imatrix", "file"]



class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    format: Format
    level: str | None = None  # e.g. q4_k_m, f16, mlx-4bit
    bits_per_weight: float | None = None
    role: Literal["model", "base"] = "model"  # base: the untrained base model, kept for the arena

    @field_validator("path")
    @classmethod
    def _safe(cls, value: str) -> str:
        safe_relative(value)
        return value


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    run_id: str
    recipe_sha256: str
    base_model: str
    parameters: int
    tokenizer_fingerprint: str
    versions: dict[str, str]
    artifacts: list[Artifact]
    # How the k/i levels were calibrated (llama-imatrix over the run's own data): tokens, samples, context,
    # the text's sha256 (the text itself is training data and stays out of the artifacts). None: uncalibrated.
    calibration: dict[str, Any] | None = None
    # The merge check's numbers (merge_check.MergeCheckResult); None for a full fine-tune (nothing merged).
    merge_check: dict[str, Any] | None = None
    # A base made from a GGUF file (gguf_base.for_manifest): its file, sha256, quantization. None otherwise.
    base_provenance: dict[str, str] | None = None

    def levels(self) -> list[str]:
        return sorted({a.level for a in self.artifacts if a.level})

    def by_level(self, level: str) -> list[Artifact]:
        return [a for a in self.artifacts if a.level == level]


def safe_relative(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or path.startswith("~"):
        raise ValueError(f"unsafe path {path!r}: must be relative, inside the run")
    return p


def inside(root: Path, rel: str) -> Path:
    """`root / rel` for a path that came from elsewhere (a manifest, a store key): relative, no `..`, and
    not led out of `root` by a symlink already there. The one guard for pull and the store's fetch;
    ValueError otherwise, before anything is created."""
    target = root / safe_relative(rel)
    existing = target.parent
    while not existing.exists() and existing != root:
        existing = existing.parent
    if not existing.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{rel!r} would be written outside {root} (through a symlink)")
    return target


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe(root: Path, rel: str, fmt: Format, level: str | None = None, params: int | None = None,
             role: Literal["model", "base"] = "model") -> Artifact:
    path = root / rel
    size = path.stat().st_size
    bpw = round(size * 8 / params, 3) if params and fmt in ("gguf", "mlx", "hf-safetensors") else None
    return Artifact(path=rel, size=size, sha256=sha256_file(path), format=fmt, level=level, bits_per_weight=bpw,
                    role=role)


def write(root: Path, manifest: Manifest) -> Path:
    """Write atomically: a reader sees either no manifest or a whole one."""
    target = root / MANIFEST
    tmp = target.with_suffix(".json.tmp")
    tmp.write_bytes(dumps(manifest))
    os.replace(tmp, target)
    return target


def dumps(manifest: Manifest) -> bytes:
    """The manifest's bytes: sorted keys, so the same content is always the same file."""
    return (json.dumps(manifest.model_dump(), indent=2, sort_keys=True) + "\n").encode()


def load(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest: the export did not finish")
    try:
        return Manifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ManifestError(one_line(exc, path.name)) from None
    except ValueError as exc:
        raise ManifestError(f"{path.name}: not valid JSON ({exc.__class__.__name__})") from None


def verify_artifact(root: Path, artifact: Artifact) -> None:
    path = root / artifact.path
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ManifestError(f"{artifact.path}: resolves outside the run directory")
    if not path.is_file():
        raise ManifestError(f"{artifact.path}: missing")
    size = path.stat().st_size
    if size != artifact.size:
        raise ManifestError(f"{artifact.path}: size {size} != {artifact.size} in the manifest")
    digest = sha256_file(path)
    if digest != artifact.sha256:
        raise ManifestError(f"{artifact.path}: sha256 {digest[:12]}... != {artifact.sha256[:12]}... in the manifest")


def verify(root: Path, levels: list[str] | None = None) -> Manifest:
    """Check every artifact (or those of `levels`) against the manifest; raise on the first mismatch."""
    manifest = load(root)
    for artifact in manifest.artifacts:
        if levels is None or artifact.level in levels or artifact.level is None:
            verify_artifact(root, artifact)
    return manifest


def unit(artifact: Artifact) -> str | None:
    """What a pull fetches whole or not at all: a level, the base, the adapter, the full weights;
    None for what every pull brings (the reference, level-less files)."""
    if artifact.format == "adapter":
        return "adapter"
    if artifact.role == "base":
        return "base"
    if artifact.format == "hf-safetensors":
        return "hf-weights"
    return artifact.level


def verify_present(root: Path) -> Manifest:
    """Verify what a pull brought: each unit (see `unit`) with any file here must be whole and
    intact, and the files every pull brings must be here."""
    manifest = load(root)
    here = {unit(a) for a in manifest.artifacts if (root / a.path).is_file()}
    for artifact in manifest.artifacts:
        if unit(artifact) is None or unit(artifact) in here:
            verify_artifact(root, artifact)
    return manifest


def verify_pulled(root: Path, levels: list[str] | None = None) -> tuple[Manifest, list[str]]:
    """`lathe verify`: what is here, checked. A pull leaves the adapter and the full-precision weights in
    the store by default, and brings only the levels asked for: each unit (see `unit`) asked for with
    `levels`, or else each with any file here, must be whole and intact, and so must the files every pull
    brings. Returns the manifest and the units not here (left in the store), for the caller to say."""
    manifest = load(root)
    units = {unit(a) for a in manifest.artifacts} - {None}
    wanted = set(levels) if levels else {unit(a) for a in manifest.artifacts if (root / a.path).is_file()}
    for artifact in manifest.artifacts:
        if unit(artifact) is None or unit(artifact) in wanted:
            verify_artifact(root, artifact)
    return manifest, sorted(u for u in units - wanted if u is not None)


def to_dict(manifest: Manifest) -> dict[str, Any]:
    return manifest.model_dump()
