"""Stage: pull. A run's artifacts from the store to this machine: parallel, resumable, verified.

Every file is fetched in ranged parts by a pool of threads into ``NAME.lathe-part``,
with a journal beside it (``NAME.lathe-journal``) that records, after each chunk is
on disk, how far each part got. An interrupted pull resumes from the journal, so
at most the chunks in flight are fetched again. The journal also records the
object's ETag: if the object changed on the server since, the partial file is
discarded and fetched again. A file gets its final name only after its sha256
matches the manifest; the manifest itself is written last, so a local export
directory with a manifest is complete for the levels pulled.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from orchestrator import manifest as mf
from orchestrator.errors import LatheError, StoreError, one_line
from orchestrator.recipe import lathe_block_of, read_yaml
from orchestrator.run.layout import EXPORT, INPUTS, MANIFEST, PULLED, RECIPE, RunDir
from orchestrator.run.stored import StoredRun
from orchestrator.store import Store, unreachable_errors

PART = 8 << 20
PART_SUFFIX, JOURNAL_SUFFIX = ".lathe-part", ".lathe-journal"


@dataclass
class PullStats:
    files: int = 0
    bytes_total: int = 0
    bytes_fetched: int = 0  # received from the store in this pull
    bytes_present: int = 0  # already here and verified, or journaled from an interrupted pull
    restarted: list[str] = field(default_factory=list)  # partial files discarded: the object changed


class RateLimit:
    """A shared token bucket, so `--limit-rate` caps the whole pull, not each thread."""

    def __init__(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            self.next_free = max(self.next_free, now) + n / self.rate
            delay = self.next_free - now - n / self.rate
        if delay > 0:
            time.sleep(delay)


def select(manifest: mf.Manifest, levels: list[str] | None) -> list[mf.Artifact]:
    """What a laptop needs: the chosen levels (default: every GGUF and MLX level and the base),
    the reference, the importance matrix, the merged model's config and tokenizer, never the
    full-precision weights."""
    known = {a.level for a in manifest.artifacts if a.format in ("gguf", "mlx") and a.level}
    if levels:
        unknown = sorted(set(levels) - known - {"hf", "adapter", "base"})
        if unknown:
            raise LatheError(f"--levels: {', '.join(unknown)} not in this run (it has {', '.join(sorted(known))})")
    wanted = set(levels) if levels else known | {"base"}
    out = []
    for a in manifest.artifacts:
        # The reference and the importance matrix (small: the calibration's record, and what a laptop
        # re-quantizing the pulled weights would use) come with every pull.
        if a.format in ("reference", "imatrix") or (a.format == "file" and a.level in (None, "hf")):
            out.append(a)
        elif a.role == "base":
            if "base" in wanted:
                out.append(a)
        elif a.format == "adapter":
            if "adapter" in wanted:
                out.append(a)
        elif a.level in wanted:
            out.append(a)
    return out


def _fetch_eval_set(stored: StoredRun, run: RunDir) -> None:
    """The files `lathe eval` reads beside the artifacts, which the job put under inputs/: the eval set,
    the held-out questions, the benchmarks' own prompt files and, when there are held-out questions, the
    training data their answers are compared with."""
    block = lathe_block_of(run.path / RECIPE)
    wanted = [path for _, path in block.eval.files()]
    if block.eval.heldout:
        datasets = read_yaml(run.path / RECIPE)[1].get("datasets") or []
        wanted += [str(d["path"]) for d in datasets if isinstance(d, dict) and isinstance(d.get("path"), str)]
    for name in wanted:
        try:
            relative = mf.safe_relative(name)
        except ValueError:
            continue  # a path on the nodes: never shipped
        # Streamed and renamed into place: a training set can be gigabytes, and a pull cut off mid-file
        # must not leave a truncated one under its real name for `lathe eval` to read.
        stored.fetch(f"{INPUTS}/{relative}", run.inputs_dir / relative)  # False: a hub dataset, not in the store


class _File:
    """One artifact being fetched: its partial file, and a journal of the byte ranges already on disk."""

    def __init__(self, final: Path, artifact: mf.Artifact, etag: str, part_size: int) -> None:
        self.final, self.artifact, self.etag, self.part_size = final, artifact, etag, part_size
        self.partial = final.with_name(final.name + PART_SUFFIX)
        self.journal = final.with_name(final.name + JOURNAL_SUFFIX)
        self.done: dict[int, int] = {}  # range start -> bytes written from there
        self.lock = threading.Lock()
        self.restarted = False

    def covered(self) -> list[tuple[int, int]]:
        spans = sorted((start, start + n) for start, n in self.done.items() if n > 0)
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        return merged

    def parts(self) -> list[tuple[int, int]]:
        """The missing byte ranges, cut into parts (any part size: a resume may use another)."""
        gaps, pos = [], 0
        for a, b in [*self.covered(), (self.artifact.size, self.artifact.size)]:
            if a > pos:
                gaps.append((pos, a))
            pos = max(pos, b)
        return [(s, min(s + self.part_size, e)) for s, e in gaps for s in range(s, e, self.part_size)]

    def open(self) -> int:
        """Load the journal if it is for this very object; return the bytes it vouches for."""
        header = {"etag": self.etag, "size": self.artifact.size}
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.journal.is_file() and self.partial.is_file():
            lines = self.journal.read_text().splitlines()
            try:
                first = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                first = {}
            if first == header:
                for line in lines[1:]:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break  # torn last line
                    self.done[rec["start"]] = max(self.done.get(rec["start"], 0), rec["done"])
            else:
                self.restarted = bool(first)  # the object changed in the store since
        if not self.done:
            self.partial.unlink(missing_ok=True)
            self.journal.write_text(json.dumps(header) + "\n")
        with self.partial.open("ab") as fh:
            fh.truncate(self.artifact.size)
        return sum(b - a for a, b in self.covered())

    def record(self, start: int, done: int) -> None:
        with self.lock:
            self.done[start] = done
            with self.journal.open("a") as fh:
                fh.write(json.dumps({"start": start, "done": done}) + "\n")

    def finish(self) -> bool:
        """Verify and give the file its final name; False (and nothing kept) on a checksum mismatch."""
        ok = mf.sha256_file(self.partial) == self.artifact.sha256
        if ok:
            os.replace(self.partial, self.final)
        else:
            self.partial.unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)
        return ok


def _fetch_part(store: Store, key: str, f: _File, part: tuple[int, int], limit: RateLimit,
                on_bytes: Callable[[int], None]) -> int:
    start, end = part
    done = fetched = 0
    fd = os.open(f.partial, os.O_WRONLY)
    try:
        for chunk in store.read_range(key, start, end):
            limit.take(len(chunk))
            view, written = memoryview(chunk), 0
            while written < len(view):  # pwrite may write less (a disk filling up): never claim more
                written += os.pwrite(fd, view[written:], start + done + written)
            done += len(chunk)
            fetched += len(chunk)
            f.record(start, done)
            on_bytes(len(chunk))
    finally:
        os.close(fd)
    return fetched


def pull(store: Store, run_id: str, dest: Path, levels: list[str] | None = None, *, part_size: int = PART,
         threads: int = 8, limit_rate: float | None = None,
         progress: Callable[[int, int], None] | None = None) -> PullStats:
    """Pull `run_id` from `store` into `dest/<run_id>/`; return what it took. A store that cannot be
    reached, or goes away mid-pull, is one line; the journal keeps what arrived for the next pull."""
    try:
        return _pull(store, run_id, dest, levels, part_size, threads, limit_rate, progress)
    except unreachable_errors() as exc:
        why = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        raise StoreError(f"pull {run_id}: the store {store.uri} failed ({why}); partial files are kept "
                         "and the next pull resumes them") from None


def _pull(store: Store, run_id: str, dest: Path, levels: list[str] | None, part_size: int, threads: int,
          limit_rate: float | None, progress: Callable[[int, int], None] | None) -> PullStats:
    run = RunDir(dest / run_id)
    stored = StoredRun(store, run_id)
    export_dir = run.export_dir
    raw = stored.read(f"{EXPORT}/{MANIFEST}")
    if raw is None:
        raise LatheError(f"{run_id}: no manifest in {store.uri}/{run_id}/{EXPORT}: the run has not finished "
                         "exporting (see `lathe status`)")
    try:
        manifest = mf.Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise mf.ManifestError(one_line(exc, f"{run_id}: {MANIFEST} from the store is invalid",
                                        default="manifest")) from None
    wanted = select(manifest, levels)
    stats = PullStats(files=len(wanted), bytes_total=sum(a.size for a in wanted))
    export_dir.mkdir(parents=True, exist_ok=True)
    for name in PULLED:
        data = stored.read(name)
        if data is not None:
            tmp = run.path / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, run.path / name)

    _fetch_eval_set(stored, run)
    limit = RateLimit(limit_rate)
    lock = threading.Lock()
    received = [0]

    def on_bytes(n: int) -> None:
        with lock:
            received[0] += n
            stats.bytes_fetched += n
        if progress:
            progress(stats.bytes_present + received[0], stats.bytes_total)

    pending: list[tuple[_File, str]] = []
    for art in wanted:
        try:
            final = mf.inside(export_dir, art.path)
        except ValueError as exc:
            raise mf.ManifestError(f"{art.path}: {exc}; nothing written") from None
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file() and final.stat().st_size == art.size and mf.sha256_file(final) == art.sha256:
            stats.bytes_present += art.size
            continue
        final.unlink(missing_ok=True)  # a wrong file under a final name is worse than none
        key = stored.key(EXPORT, art.path)
        info = store.stat(key)
        if info is None:
            raise mf.ManifestError(f"{art.path}: in the manifest but not in the store")
        if info.size != art.size:
            raise mf.ManifestError(f"{art.path}: {info.size} bytes in the store, {art.size} in the manifest")
        f = _File(final, art, info.etag, part_size)
        stats.bytes_present += f.open()
        if f.restarted:
            stats.restarted.append(art.path)
        pending.append((f, key))

    try:
        _download(store, pending, threads, limit, on_bytes, stats)
    except OSError as exc:
        raise LatheError(f"pull {run_id}: {exc.strerror or exc} ({exc.filename or 'download'}); "
                         "partial files are kept and the next pull resumes them") from None
    mf.write(export_dir, manifest)
    return stats


def _download(store: Store, pending: list[tuple[_File, str]], threads: int, limit: RateLimit,
              on_bytes: Callable[[int], None], stats: PullStats) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures: list[tuple[_File, str, list[Future[int]]]] = [
            (f, key, [pool.submit(_fetch_part, store, key, f, p, limit, on_bytes) for p in f.parts()])
            for f, key in pending
        ]
        done, _ = wait([fut for _, _, parts in futures for fut in parts], return_when=FIRST_EXCEPTION)
        failed = next((fut.exception() for fut in done if fut.exception() is not None), None)
        if failed is not None:
            # The first fatal error ends the pull: parts still queued would each spend the client's
            # retries on a store that is gone before the error could show.
            pool.shutdown(wait=True, cancel_futures=True)
            # A file whose every part arrived is verified and named now, not left for the next pull.
            for f, _key, parts in futures:
                if all(fut.done() and not fut.cancelled() and fut.exception() is None for fut in parts):
                    f.finish()
            raise failed
        for f, key, parts in futures:
            if f.finish():
                continue
            # Once more from scratch: a torn read is possible, a wrong object is not fixed by retrying twice.
            f.done.clear()
            f.open()
            stats.restarted.append(f.artifact.path)
            for p in f.parts():
                _fetch_part(store, key, f, p, limit, on_bytes)
            if not f.finish():
                raise mf.ManifestError(f"{f.artifact.path}: sha256 of the store's copy does not match the manifest "
                                       "(altered after export?); nothing kept")
