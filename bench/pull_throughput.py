"""Pull throughput: `lathe pull` against plain boto3 `download_file`, same objects, same server.

Starts an S3-protocol server (moto) on 127.0.0.1, uploads a set of files shaped
like a run's export (a few large GGUFs, many small files, a manifest), then
times, alternately and several times each:

  boto3       `download_file` per object (its own multipart threads), objects one after another
  s3transfer  its TransferManager with every object submitted at once (concurrent transfers)
  lathe       `orchestrator.remote.pull.pull`: ranged parts of all files in one thread pool, journaled,
              each file checked against the manifest's sha256 before it gets its name

Then a pull is killed (SIGKILL) halfway and resumed: the bytes that came over the wire twice are
counted (what the killed process had received, from its own count, plus what the resume fetched,
minus the set's size) against the goal of at most one part per file.

Prints the medians and the speed-ups (baseline time / lathe time; goal: 1.5x over boto3).
Nothing is asserted: wall-clock numbers belong here, not in the test suite.

    .venv/bin/python bench/pull_throughput.py [--mb 64] [--files 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

from orchestrator import manifest as mf
from orchestrator.remote.pull import PART, pull
from orchestrator.store import StoreConfig, open_store

BUCKET = "bench"
GOAL = 1.5

# The killed pull: counts bytes as they come off the socket (before they are written or journaled)
# and prints the running total, so the parent knows what it had received when it was killed.
KILLED_PULL = """
import sys, threading
from pathlib import Path
from orchestrator.remote.pull import pull
from orchestrator.store import StoreConfig, open_store
store = open_store(StoreConfig(uri=sys.argv[1], endpoint_url=sys.argv[2], region="us-east-1"))
lock, got = threading.Lock(), [0]
read_range = store.read_range
def counted(key, start, end):
    for chunk in read_range(key, start, end):
        with lock:
            got[0] += len(chunk)
            print(got[0], flush=True)
        yield chunk
store.read_range = counted
pull(store, "run", Path(sys.argv[3]), threads=8)
"""


def killed_and_resumed(store, uri: str, endpoint: str, dest: Path, total: int) -> tuple[int, int, int]:
    """(bytes received before the kill, bytes fetched by the resume, bytes that came twice)."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PULL, uri, endpoint, str(dest)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1], env={**os.environ})
    received = 0
    for line in proc.stdout:  # type: ignore[union-attr]
        received = int(line)
        if received >= total // 2:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    for line in proc.stdout:  # type: ignore[union-attr]  (what it printed before the signal landed)
        received = max(received, int(line))
    stats = pull(store, "run", dest, threads=8)
    return received, stats.bytes_fetched, received + stats.bytes_fetched - total


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

        def s3transfer() -> float:
            from boto3.s3.transfer import TransferConfig, create_transfer_manager

            dest = work / "s3transfer"
            start = time.perf_counter()
            config = TransferConfig(max_concurrency=8, multipart_chunksize=PART, multipart_threshold=PART)
            with create_transfer_manager(client, config) as manager:
                futures = []
                for key in keys:
                    target = dest / key
                    target.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(manager.download(BUCKET, key, str(target)))
                for fut in futures:
                    fut.result()
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

        runs = {"boto3 download_file": baseline, "s3transfer manager": s3transfer, "lathe pull": lathe}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(fn())
        print(f"{len(keys)} objects, {total / 1e6:.1f} MB, moto on 127.0.0.1, {args.repeats} runs each (median), "
              f"{os.cpu_count()} cores")
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        for name, t in medians.items():
            print(f"  {name:22s} {t:7.2f} s  {total / 1e6 / t:8.1f} MB/s")
        lathe_s = medians["lathe pull"]
        print(f"speed-up over boto3 download_file: {medians['boto3 download_file'] / lathe_s:.2f}x (goal {GOAL}x); "
              f"over s3transfer's manager: {medians['s3transfer manager'] / lathe_s:.2f}x "
              "(lathe also verifies every sha256 and journals for resume)")
        received, resumed, twice = killed_and_resumed(store, f"s3://{BUCKET}/runs", endpoint, work / "killed", total)
        files = len(manifest.artifacts)
        print(f"killed at {received / 1e6:.1f} MB of {total / 1e6:.1f} MB, the resume fetched {resumed / 1e6:.1f} MB: "
              f"{twice / 1e6:.2f} MB came twice (goal: at most one part per file, {files} x {PART >> 20} MB)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
