"""The Ray job a submitted run is: train, export, upload, on the cluster.

Started by `lathe submit` as the entrypoint of a Ray job whose working_dir holds
the recipe and its small files (large ones wait in the store under inputs/).
The run directory is scratch space on the head node; the store is the record:
run.json, metrics.jsonl and events.jsonl are uploaded every few seconds, Ray
Train checkpoints go straight to the store, and export/ is uploaded with
manifest.json last, before run.json says SUCCEEDED. Credentials come from this
node's environment or role, never from the job's arguments.

    python -m orchestrator.cluster.job --run-id ID --recipe recipe.yml --store-uri s3://bucket/prefix

(the arguments are `run.job_args.JobArgs`, built by `lathe submit`)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from orchestrator import gguf_base
from orchestrator.errors import InfrastructureError, LatheError
from orchestrator.recipe import Recipe
from orchestrator.recipe import load as recipe_load
from orchestrator.run.job_args import JobArgs
from orchestrator.run.layout import CARRIED, EXPORT, INPUTS, RAY, RUN_JSON, SYNCED, RunDir, now, store_key
from orchestrator.run.state import RunState
from orchestrator.run.stored import StoredRun
from orchestrator.store import Store, StoreConfig, fetch_missing, open_store

SYNC_EVERY_S = 5.0


class StoreSync:
    """Mirror the run's small, growing files into the store, at most every few seconds.

    A store that is briefly unreachable must not end a training run: a failed tick is
    reported and retried on the next one. The final (forced) sync retries a few times."""

    def __init__(self, store: Store, run: RunDir, key: str, final_tries: int = 4) -> None:
        self.store, self.run, self.key = store, run, key
        self.last = 0.0
        self.sizes: dict[str, int] = {}
        self.final_tries = final_tries
        self.failures = 0

    def _upload(self, force: bool) -> None:
        for name in SYNCED:
            path = self.run.path / name
            if not path.is_file():
                continue
            size = path.stat().st_size
            if force or name == RUN_JSON or self.sizes.get(name) != size:
                self.store.put_file(path, f"{self.key}/{name}")
                self.sizes[name] = size  # only once it is in: a failed upload is tried again

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < SYNC_EVERY_S:
            return
        self.last = time.monotonic()
        for attempt in range(self.final_tries if force else 1):
            try:
                self._upload(force)
                self.failures = 0
                return
            except Exception as exc:  # botocore, pyarrow and OS errors alike: the store is away
                self.failures += 1
                print(f"lathe job {self.key}: store sync failed ({exc.__class__.__name__}); "
                      f"{'retrying' if force and attempt + 1 < self.final_tries else 'will retry'}",
                      file=sys.stderr, flush=True)
                if force and attempt + 1 == self.final_tries:
                    raise
                if force:
                    time.sleep(2.0 * (attempt + 1))


def upload_inputs(store: Store, key: str, recipe: Recipe) -> None:
    """The recipe's own files join the run in the store (the laptop pulls the eval set from there)."""
    for rel in recipe.local_files():
        src = recipe.directory / rel
        for f in [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()):
            name = store_key(key, INPUTS, f.relative_to(recipe.directory).as_posix())
            if store.stat(name) is None:
                store.put_file(f, name)


def main(argv: list[str] | None = None) -> int:
    args = JobArgs.parse(argv)

    import ray

    from orchestrator.cluster.driver import DriveOptions, begin, drive, workers_for

    store_config = StoreConfig(uri=args.store_uri, endpoint_url=args.endpoint_url, region=args.region,
                               profile=args.profile)
    store = open_store(store_config)
    key = args.run_id
    fetch_missing(store, store_key(key, INPUTS) + "/", Path.cwd())
    run = RunDir(Path(tempfile.mkdtemp(prefix=f"lathe-{key}-")))
    if args.attempt > 1:
        # Carry on the record of the lost attempt: its metrics and events, its creation time.
        stored = StoredRun(store, key)
        for name in CARRIED:
            data = stored.read(name)
            if data is not None:
                (run.path / name).write_bytes(data)
        print(f"lathe job {key}: attempt {args.attempt}, {len(run.metrics())} metric points carried over", flush=True)
    sync = StoreSync(store, run, key)
    carried = args.attempt > 1 and run.record().created
    run.update(run_id=key, recipe=args.recipe, cluster=args.cluster, state=RunState.RUNNING,
               driver_host=os.uname().nodename, attempt=args.attempt, export=args.export,
               **({} if carried else {"created": now()}))
    try:
        recipe = recipe_load(args.recipe_path)
        named = recipe.axolotl.get("base_model")  # as the user wrote it
        if args.base_file:
            # The laptop's path to its GGUF base means nothing here: the file came at `base_file`, beside the
            # recipe's data (the recipe's text, and so its sha256, stay the user's).
            recipe.axolotl["base_model"] = args.base_file
        base = recipe.axolotl.get("base_model")
        if gguf_base.is_gguf(base) and Path(base).is_file():
            run.update(base_provenance=asdict(gguf_base.provenance_of(Path(base), named=named)))
        upload_inputs(store, key, recipe)
        workers, use_gpu = workers_for(recipe, args.gpus_per_node, args.workers)
        # Recipe-relative paths stay relative: every node resolves them in its own copy of the working_dir.
        cfg = begin(run, recipe, dict(recipe.axolotl), use_gpu, lambda line: print(f"lathe job {key}: {line}"),
                    workers=workers, use_gpu=use_gpu)
        ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
        run.update(driver_ip=ray.util.get_node_ip_address())
        sync(force=True)
        storage_path, storage_fs = store.ray_storage(store_key(key, RAY))
        opts = DriveOptions(num_workers=workers, use_gpu=use_gpu, pushgateway=args.pushgateway,
                            storage_path=storage_path, storage_fs=storage_fs, on_tick=sync, export=args.export,
                            upload_to=(store_config, store_key(key, EXPORT)), inputs_from=store_config,
                            price_per_gpu_hour=args.price_per_gpu_hour)
        drive(recipe, run, cfg, opts)
        run.update(state=RunState.SUCCEEDED, ended=now())
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, with whose fault it was
        # A recipe or data problem will fail again; anything else (a store that went away, Ray
        # Train out of restarts after node losses) may not, and the laptop may resubmit.
        kind = "recipe" if isinstance(exc, LatheError) and not isinstance(exc, InfrastructureError) \
            else "infrastructure"
        if run.record().state != RunState.FAILED:  # the driver may have recorded the failure already
            run.update(state=RunState.FAILED, ended=now(), error=str(exc).splitlines()[0][:300])
        run.update(error_kind=kind)  # always: it decides whether the laptop resubmits
        traceback.print_exc()  # the job log is where an operator looks
        print(f"lathe job {key}: {exc}", file=sys.stderr)
        return 1
    finally:
        sync(force=True)
        # The store has the run now (these files; the model and its export went there as they were made),
        # and a resubmitted attempt starts from the store: the head's working copy, adapter included,
        # would otherwise stay in its /tmp after every job. Kept where the last sync failed (raised above).
        shutil.rmtree(run.path, ignore_errors=True)
    print(f"lathe job {key}: SUCCEEDED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
