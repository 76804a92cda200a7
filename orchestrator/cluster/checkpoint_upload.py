"""Checkpoints off the training loop: Ray Train's asynchronous upload, with Lathe's promises kept.

A synchronous `ray.train.report(checkpoint=...)` stops training while the files are copied into the
run's storage (S3 on a cluster): 10-14 s of a quickstart's loop. `report(..., checkpoint_upload_mode=
ASYNC)` hands the copy to Ray's upload thread (one thread: checkpoints still land one at a time, in
order) and training goes on. Three things had to stay true:

- **A failed upload is counted.** The copy no longer raises in the training callback, so the count
  moves into the upload itself: `checkpoint_upload_fn` is Ray's own copy
  (`StorageContext.persist_current_checkpoint`) wrapped so that a failure, in Ray's upload thread,
  increments `lathe_train_checkpoint_failures_total` (the LatheCheckpointUploadFailing alert) and
  writes an event to the run's events.jsonl, then re-raises. Ray retries S3's transient errors up to
  three times around this function, so each failed attempt counts: the alert fires on a store that
  fails, even if a retry then lands. After the last attempt Ray puts the error on the training
  thread's exception queue and the worker fails, as a synchronous report failed.
- **A checkpoint cut off mid-upload is never resumed from.** Unchanged: Ray registers a checkpoint
  only once the upload function has returned, and a restarted worker resumes from the newest
  registered one.
- **An outage costs at most one checkpoint interval, as before.** Left alone, training goes on while
  Ray retries an upload against a store that is down, and every step past the last registered
  checkpoint is lost when the worker finally fails (40 steps in a test where the synchronous upload
  lost 10). So one upload at a time is in flight: the next hand-off waits until the last one has landed,
  which costs nothing while uploads are quicker than the interval between checkpoints.
- **The upload reads a checkpoint that still exists.** Axolotl's `save_total_limit` deletes
  `checkpoint-N` once newer ones are saved, which can happen while N is still uploading. Each
  checkpoint is hard-linked into a staging directory first (no data copied; a file Axolotl deletes
  stays readable through its link), and Ray deletes the staging copy once it has landed.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def staging_dir(output_dir: Path) -> Path:
    """Where checkpoints wait for their upload: beside Axolotl's output directory, never inside it (Axolotl
    lists its checkpoints there, and the final model is the directory's files)."""
    return output_dir.with_name(output_dir.name + "-uploading")


def stage(checkpoint_dir: Path, staging: Path) -> Path:
    """A hard-linked twin of `checkpoint_dir` under `staging` (a copy where links cannot be made, e.g.
    across filesystems); an earlier attempt's leftover of the same name is replaced."""
    target = staging / checkpoint_dir.name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(checkpoint_dir, target, copy_function=link)
    return target


class OneInFlight:
    """At most one upload at a time: `hand_off` waits until the previous upload has `landed`. A failed
    upload never lands: the worker fails once Ray's retries are spent, and the waiting hand-off with it."""

    def __init__(self) -> None:
        self._landed = threading.Event()
        self._landed.set()

    def hand_off(self, timeout: float | None = None) -> bool:
        """Wait for the previous upload (True once it landed), then count this one as in flight."""
        if not self._landed.wait(timeout):
            return False
        self._landed.clear()
        return True

    def landed(self) -> None:
        self._landed.set()


IN_FLIGHT = OneInFlight()  # per worker process: the rank that uploads


def counting_upload(persist: Callable[[Any, str], Any], on_failure: Callable[[str, BaseException], None],
                    on_landed: Callable[[], None] = lambda: None) -> Callable[[Any, str], Any]:
    """Ray's copy (`persist(checkpoint, dir_name)`), reporting each failure to `on_failure` before Ray
    sees it, and a success to `on_landed`. Runs in Ray's upload thread."""

    def upload(checkpoint: Any, checkpoint_dir_name: str) -> Any:
        try:
            persisted = persist(checkpoint, checkpoint_dir_name)
        except BaseException as exc:
            on_failure(checkpoint_dir_name, exc)
            raise
        on_landed()
        return persisted

    return upload


def report_async(metrics: dict[str, Any], checkpoint_dir: Path | None, output_dir: Path, sink: Any) -> None:
    """`ray.train.report` for one saved checkpoint, uploaded in the background. Every rank calls it (Ray's
    report is a barrier); the rank holding the files passes `checkpoint_dir`, the others None."""
    import ray.train
    from ray.train import CheckpointUploadMode

    if checkpoint_dir is None:
        ray.train.report(metrics, checkpoint=None)
        return
    staged = stage(checkpoint_dir, staging_dir(output_dir))
    storage = ray.train.get_context().get_storage()
    IN_FLIGHT.hand_off()

    def failed(name: str, exc: BaseException) -> None:
        if sink is not None:
            sink.checkpoint_failed(name, exc)

    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(staged)),
                     checkpoint_upload_mode=CheckpointUploadMode.ASYNC,
                     delete_local_checkpoint_after_upload=True,
                     checkpoint_upload_fn=counting_upload(storage.persist_current_checkpoint, failed,
                                                          IN_FLIGHT.landed))


def clear_staging(output_dir: Path) -> None:
    """Drop what an earlier attempt left waiting (its uploads died with it)."""
    shutil.rmtree(staging_dir(output_dir), ignore_errors=True)

