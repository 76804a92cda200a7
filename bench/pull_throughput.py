"""Pull throughput: `lathe pull` against plain boto3 `download_file`, same objects, same server.

Starts an S3-protocol server (moto) on 127.0.0.1, uploads a set of files shaped
like a run's export (a few large GGUFs, many small files, a manifest), then
times, alternately and several times each:

  baseline  boto3's `download_file` per object (its own multipart threads), objects one after another
  lathe     `orchestrator.remote.pull.pull`: ranged parts of all files in one thread pool, journaled,
            each file checked against the manifest's sha256 before it gets its name

Prints the medians and the ratio (lathe / baseline; < 1 means Lathe is faster).
Nothing is asserted: wall-clock numbers belong here, not in the test suite.

    .venv/bin/python bench/pull_throughput.py [--mb 64] [--files 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path

import boto3

from orchestrator import manifest as mf
from orchestrator.remote.pull import pull
from orchestrator.store import StoreConfig, open_store

BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_export(root: Path, big_files: int, mb: int) -> mf.Manifest:
    export = root / "run" / "export"
    (export / "gguf").mkdir(parents=True)
    (export / "reference").mkdir()
    for i in range(big_files):
        (export / "gguf" / f"model-l{i}.gguf").write_bytes(os.urandom(mb << 20))
    for i in range(30):
        (export / "reference" / f"part-{i}.json").write_bytes(os.urandom(4096))
    artifacts = [mf.describe(export, p.relative_to(export).as_posix(), "gguf" if p.suffix == ".gguf" else "file",
                             f"l{p.stem.split('-l')[-1]}" if p.suffix == ".gguf" else None)
                 for p in sorted(export.rglob("*")) if p.is_file()]
    manifest = mf.Manifest(run_id="run", recipe_sha256="0" * 64, base_model="bench", parameters=1,
                           tokenizer_fingerprint="bench", versions={}, artifacts=artifacts)
    mf.write(export, manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64, help="size of each large file")
    parser.add_argument("--files", type=int, default=4, help="number of large files")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="lathe-bench-pull-"))
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        manifest = make_export(work / "src", args.files, args.mb)
        src = work / "src" / "run" / "export"
        keys = []
        for p in sorted(src.rglob("*")):
            if p.is_file():
                key = f"runs/run/export/{p.relative_to(src).as_posix()}"
                client.upload_file(str(p), BUCKET, key)
                keys.append(key)
        total = sum(a.size for a in manifest.artifacts)
        store = open_store(StoreConfig(uri=f"s3://{BUCKET}/runs", endpoint_url=endpoint, region="us-east-1"))

        def baseline() -> float:
            dest = work / "boto3"
            start = time.perf_counter()
            for key in keys:
                target = dest / key
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(BUCKET, key, str(target))
            elapsed = time.perf_counter() - start
            shutil.rmtree(dest)
            return elapsed

        def lathe() -> float:
            dest = work / "lathe"
            start = time.perf_counter()
            pull(store, "run", dest, threads=8)
            elapsed = time.perf_counter() - start
            shutil.rmtree(dest)
            return elapsed

        times: dict[str, list[float]] = {"boto3 download_file": [], "lathe pull": []}
        for _ in range(args.repeats):
            times["boto3 download_file"].append(baseline())
            times["lathe pull"].append(lathe())
        print(f"{len(keys)} objects, {total / 1e6:.1f} MB, moto on 127.0.0.1, {args.repeats} runs each (median)")
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        for name, t in medians.items():
            print(f"  {name:22s} {t:7.2f} s  {total / 1e6 / t:8.1f} MB/s")
        ratio = medians["lathe pull"] / medians["boto3 download_file"]
        print(f"ratio lathe/boto3 (time): {ratio:.2f}  (lathe also verifies every sha256 and journals for resume)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
