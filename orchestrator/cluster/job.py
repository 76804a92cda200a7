"""The Ray job a submitted run is: train, export, upload, on the cluster.

Started by `lathe submit` as the entrypoint of a Ray job whose working_dir holds
the recipe and its small files (large ones wait in the store under inputs/).
The run directory is scratch space on the head node; the store is the record:
run.json, metrics.jsonl and events.jsonl are uploaded every few seconds, Ray
Train checkpoints go straight to the store, and export/ is uploaded with
manifest.json last, before run.json says SUCCEEDED. Credentials come from this
node's environment or role, never from the job's arguments.

    python -m orchestrator.cluster.job --run-id ID --recipe recipe.yml --store-uri s3://bucket/prefix
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from orchestrator.errors import InfrastructureError, LatheError
from orchestrator.recipe import Recipe
from orchestrator.recipe import load as recipe_load
from orchestrator.rundir import VERSIONED, RunDir, now
from orchestrator.store import Store, StoreConfig, fetch_missing, open_store

SYNCED = ("run.json", "metrics.jsonl", "events.jsonl", "export.log")
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
            if force or name == "run.json" or self.sizes.get(name) != size:
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
            name = f"{key}/inputs/{f.relative_to(recipe.directory).as_posix()}"
            if store.stat(name) is None:
                store.put_file(f, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator.cluster.job")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--recipe", required=True, type=Path)
    parser.add_argument("--cluster", default="")
    parser.add_argument("--store-uri", required=True)
    parser.add_argument("--endpoint-url")
    parser.add_argument("--region")
    parser.add_argument("--profile")
    parser.add_argument("--pushgateway")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--gpus-per-node", type=int)
    parser.add_argument("--price-per-gpu-hour", type=float, default=0.0)
    parser.add_argument("--attempt", type=int, default=1, help="> 1: resubmitted after the driver was lost")
    args = parser.parse_args(argv)

    import ray
    import yaml

    from orchestrator.cluster.driver import DriveOptions, drive
    from orchestrator.versions import installed

    store_config = StoreConfig(uri=args.store_uri, endpoint_url=args.endpoint_url, region=args.region,
                               profile=args.profile)
    store = open_store(store_config)
    key = args.run_id
    fetch_missing(store, f"{key}/inputs/", Path.cwd())
    run = RunDir(Path(tempfile.mkdtemp(prefix=f"lathe-{key}-")))
    if args.attempt > 1:
        # Carry on the record of the lost attempt: its metrics and events, its creation time.
        for name in ("run.json", "metrics.jsonl", "events.jsonl"):
            if store.stat(f"{key}/{name}"):
                (run.path / name).write_bytes(store.get_bytes(f"{key}/{name}"))
        carried = len(run.metrics()) if (run.path / "metrics.jsonl").is_file() else 0
        print(f"lathe job {key}: attempt {args.attempt}, {carried} metric points carried over", flush=True)
    sync = StoreSync(store, run, key)
    run.update(run_id=key, recipe=args.recipe.name, cluster=args.cluster, state="RUNNING",
               driver_host=os.uname().nodename, versions=installed(VERSIONED), attempt=args.attempt,
               **({} if args.attempt > 1 and run.record().get("created") else {"created": now()}))
    try:
        recipe = recipe_load(args.recipe)
        (run.path / "recipe.yml").write_text(recipe.text)
        upload_inputs(store, key, recipe)
        run.update(recipe_sha256=recipe.sha256)
        # Recipe-relative paths stay relative: every node resolves them in its own copy of the working_dir.
        cfg = dict(recipe.axolotl)
        (run.path / "axolotl.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        ray.init(address="auto", log_to_driver=False, logging_level="ERROR")
        run.update(driver_ip=ray.util.get_node_ip_address())
        res = recipe.lathe.resources
        gpus = res.gpus_per_node if res.gpus_per_node is not None else (args.gpus_per_node or 0)
        workers = args.workers or res.num_workers(gpus)
        run.update(workers=workers, use_gpu=gpus > 0)
        sync(force=True)
        storage_path, storage_fs = store.ray_storage(f"{key}/ray")
        opts = DriveOptions(num_workers=workers, use_gpu=gpus > 0, pushgateway=args.pushgateway,
                            storage_path=storage_path, storage_fs=storage_fs, on_tick=sync,
                            upload_to=(store_config, f"{key}/export"), inputs_from=store_config,
                            price_per_gpu_hour=args.price_per_gpu_hour)
        drive(recipe, run, cfg, opts)
        run.update(state="SUCCEEDED", ended=now())
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, with whose fault it was
        # A recipe or data problem will fail again; anything else (a store that went away, Ray
        # Train out of restarts after node losses) may not, and the laptop may resubmit.
        kind = "recipe" if isinstance(exc, LatheError) and not isinstance(exc, InfrastructureError) \
            else "infrastructure"
        if run.record().get("state") != "FAILED":  # the driver may have recorded the failure already
            run.update(state="FAILED", ended=now(), error=str(exc).splitlines()[0][:300])
        run.update(error_kind=kind)  # always: it decides whether the laptop resubmits
        traceback.print_exc()  # the job log is where an operator looks
        print(f"lathe job {key}: {exc}", file=sys.stderr)
        return 1
    finally:
        sync(force=True)
    print(f"lathe job {key}: SUCCEEDED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
