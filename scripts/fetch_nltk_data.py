#!/usr/bin/env python
"""Install the NLTK data the instruction-following checkers need, from the package registry.

IFBench's checkers (and lm-eval's IFEval sentence counts) split sentences with NLTK's `punkt_tab`
and count English stopwords with its `stopwords` corpus. NLTK fetches both from its own data server
on first use, which is out of reach offline and would be network traffic at evaluation time. The
llama-index-core wheel on PyPI ships the same two data sets (its `_static/nltk_cache`). This script
downloads that wheel (pip, no dependencies, nothing installed), checks each file against the wheel's
RECORD, and writes the English parts into the environment's `share/nltk_data`, one of the places NLTK
searches by itself:

    .venv/bin/python scripts/fetch_nltk_data.py        # set-up runs this

Idempotent: when every file is there with its recorded hash, nothing is downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llama-index-core==0.14.25"
PREFIX = "llama_index/core/_static/nltk_cache/"
# What the checkers load: the English Punkt parameters and the English stopword list (with its README,
# which names the list's sources).
WANTED = ("tokenizers/punkt_tab/english/", "corpora/stopwords/english", "corpora/stopwords/README")
TARGET = Path(sys.prefix) / "share" / "nltk_data"
PROVENANCE = TARGET / "lathe-source.json"


def _recorded(archive: zipfile.ZipFile) -> dict[str, str]:
    """Member -> hex sha256, from the wheel's RECORD (which pip checked against the index's hash)."""
    record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
    out = {}
    for line in archive.read(record).decode().splitlines():
        path, digest, _size = line.rsplit(",", 2)
        if digest.startswith("sha256="):
            raw = digest.removeprefix("sha256=")
            out[path] = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    return out


def installed() -> bool:
    if not PROVENANCE.is_file():
        return False
    files = json.loads(PROVENANCE.read_text()).get("files", {})
    return bool(files) and all((TARGET / rel).is_file()
                               and hashlib.sha256((TARGET / rel).read_bytes()).hexdigest() == digest
                               for rel, digest in files.items())


def fetch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, PACKAGE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        archive = zipfile.ZipFile(wheel)
        recorded = _recorded(archive)
        members = [n for n in archive.namelist() if n.startswith(PREFIX)
                   and not n.endswith("/") and n.removeprefix(PREFIX).startswith(WANTED)]
        if not members:
            raise SystemExit(f"fetch_nltk_data: {wheel.name} holds no {PREFIX} files")
        files = {}
        for name in members:
            data = archive.read(name)
            digest = hashlib.sha256(data).hexdigest()
            if recorded.get(name) != digest:
                raise SystemExit(f"fetch_nltk_data: {name}: sha256 {digest}, its wheel's RECORD says {recorded.get(name)}")
            rel = name.removeprefix(PREFIX)
            out = TARGET / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            files[rel] = digest
    PROVENANCE.write_text(json.dumps({"package": PACKAGE, "from": PREFIX, "files": files}, indent=2) + "\n")
    print(f"nltk data: punkt_tab (English) and stopwords from {PACKAGE} into {TARGET} ({len(files)} files)")


def main() -> None:
    if installed():
        print(f"nltk data: already in {TARGET}")
        return
    fetch()


if __name__ == "__main__":
    main()
