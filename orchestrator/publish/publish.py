"""Stage: publish. A run's companion directory: model card, deployment recipes, Ollama Modelfiles, artifacts.

    README.md                 the model card: training, every level's eval numbers, gates, known limits
    LICENSE                   MIT, for the recipes and the card
    recipe.yml                the recipe as submitted
    eval/                     report.json and the plots from `lathe eval`
    deploy/<target>.md        apple-silicon, nvidia, colocated, cloud (+ the unit, scrape and launch files)
    deploy/commands.json      every command of every recipe, read back from the recipes' marked blocks
    ollama/Modelfile.<level>  one per GGUF level, with the model's chat template and stop tokens
    gguf/, mlx/               the evaluated levels, same paths as in the run's export/
    manifest.json             sha256 per file, written last

Everything is rendered in memory (`companion`) from the package's templates and the run's files, so
publishing the same run twice gives the same bytes: the only dates are the run record's.
Then only files whose sha256 differs from the destination's manifest are written (each
atomically), the manifest last, and files the new manifest no longer lists are removed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from orchestrator import manifest as mf
from orchestrator.errors import PublishError, clean_message
from orchestrator.publish.companion import WEIGHTS, Companion, File, build
from orchestrator.store import Store, StoreConfig, open_store

__all__ = ["File", "Published", "check_no_secrets", "publish"]

# Environment variables whose values must never be published, and token shapes that are secrets anywhere.
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
SECRET_SHAPE = re.compile(rb"\b(AKIA|ASIA)[0-9A-Z]{16}\b|\bhf_[A-Za-z0-9]{30,}\b")


@dataclass
class Published:
    destination: str
    files: int
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def publish(run: Path, to: str, endpoint_url: str | None = None, region: str | None = None,
            artifacts: bool = True) -> Published:
    """Build the companion for `run` and bring `to` (a directory or s3://bucket/prefix) up to it."""
    companion = build(run, artifacts)
    check_no_secrets(companion.files, dict(os.environ))
    try:
        store = open_store(StoreConfig(uri=to, endpoint_url=endpoint_url, region=region))
    except ValidationError as exc:
        raise PublishError(f"--to {to}: {clean_message(exc.errors()[0]['msg'])}") from None
    try:
        result = sync(companion, store)
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("botocore", "boto3"):  # S3 said no: one line, like every error
            raise PublishError(f"{to}: {exc}") from None
        raise
    result.destination = to
    return result


# --- reading the run ------------------------------------------------------------------------------


# --- building the companion -----------------------------------------------------------------------


# --- checks and writing ---------------------------------------------------------------------------

def check_no_secrets(files: list[File], env: dict[str, str]) -> None:
    """Refuse to publish a file holding a credential from the environment or shaped like one.
    Model weights are not scanned (gigabytes, and no run writes the environment into them)."""
    values = {k: v.encode() for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 8}
    for f in files:
        if f.artifact is not None and f.artifact.format in WEIGHTS:
            continue
        data = f.data if f.data is not None else f.source.read_bytes()  # type: ignore[union-attr]
        for key, value in sorted(values.items()):
            if value in data:
                raise PublishError(f"{f.path}: contains the value of ${key}; nothing was published")
        if SECRET_SHAPE.search(data):
            raise PublishError(f"{f.path}: contains what looks like an access key or token; nothing was published")


def _remote_manifest(store: Store) -> mf.Manifest | None:
    if store.stat(mf.MANIFEST) is None:
        if store.list(""):
            raise PublishError(f"{store.uri}: not empty and not a published companion (no {mf.MANIFEST}); "
                               "publish to a new or empty destination")
        return None
    try:
        return mf.Manifest.model_validate_json(store.get_bytes(mf.MANIFEST))
    except ValueError:
        raise PublishError(f"{store.uri}/{mf.MANIFEST}: not a companion manifest; refusing to overwrite") from None


def sync(companion: Companion, store: Store) -> Published:
    """Write what differs from the destination's manifest (manifest last), then drop what it no longer lists."""
    old = _remote_manifest(store)
    old_sha = {a.path: (a.sha256, a.size) for a in old.artifacts} if old else {}
    new_manifest = mf.dumps(companion.manifest)
    result = Published(store.uri, len(companion.files) + 1)
    for f in companion.files:
        art = f.describe()
        there = store.stat(f.path)
        if old_sha.get(f.path) == (art.sha256, art.size) and there is not None and there.size == art.size:
            continue
        if f.data is not None:
            store.put_bytes(f.data, f.path)
        else:
            store.put_file(f.source, f.path)  # type: ignore[arg-type]
        result.written.append(f.path)
    current = {f.path for f in companion.files}
    result.removed = sorted(p for p in old_sha if p not in current)
    manifest_differs = old is None or store.get_bytes(mf.MANIFEST) != new_manifest
    if result.written or result.removed or manifest_differs:
        store.put_bytes(new_manifest, mf.MANIFEST)
        result.written.append(mf.MANIFEST)
    for path in result.removed:
        store.delete(path)
    return result
