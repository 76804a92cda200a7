"""Runs on a cluster, from the laptop: submit, status, runs, logs, stop, pull, watch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli.support import RunId, RunsDir, console, entry, pull_bar, user_errors
from orchestrator.errors import LatheError

app = typer.Typer()


@app.command()
@user_errors
def submit(
    recipe: Annotated[Path, typer.Argument(help="An Axolotl YAML recipe.")],
    cluster: Annotated[str, typer.Option(help="A cluster profile name (see `lathe clusters`).")],
    workers: Annotated[int | None, typer.Option(help="Override the number of training workers.")] = None,
    export: Annotated[bool, typer.Option(help="Export (merge, GGUF, MLX, reference, manifest) after training.")] = True,
) -> None:
    """Ship a recipe to a cluster as a Ray job; print the run id and return at once."""
    from orchestrator import profiles
    from orchestrator.remote.submit import SubmitOptions
    from orchestrator.remote.submit import submit as do_submit
    from orchestrator.validate import validate as run_validate

    parsed = run_validate(recipe, axolotl_schema=False)
    profile = profiles.get(cluster)
    done = do_submit(parsed, profile, SubmitOptions(workers=workers, export=export))
    typer.echo(done.run_id)
    typer.echo(f"submitted to {cluster}; artifacts: {done.store_uri}", err=True)


@app.command()
@user_errors
def status(run_id: Annotated[str | None, typer.Argument(help="A run id (or a unique prefix); all active if omitted.")] = None) -> None:
    """Where a submitted run is: asks the cluster and the store, updates the registry."""
    from orchestrator import profiles, registry
    from orchestrator.remote.connect import jobs_client
    from orchestrator.remote.status import listed_jobs
    from orchestrator.remote.status import status as do_status
    from orchestrator.run.state import is_terminal
    from orchestrator.store import open_store

    entries = [entry(run_id)] if run_id else [e for e in registry.all_runs() if not is_terminal(e.state)]
    for cluster in dict.fromkeys(e.cluster for e in entries):  # one connection per cluster, in first-seen order
        profile = profiles.get(cluster)
        with jobs_client(profile) as client:
            mine = [e for e in entries if e.cluster == cluster]
            store, known = open_store(profile.store), (listed_jobs(client) if len(mine) > 1 else {})
            for e in mine:
                st = do_status(e, profile, client, store, known)
                progress = f" step {st.step}/{st.max_steps} loss {st.loss:.4g}" if st.step and st.loss is not None \
                    else ""
                typer.echo(f"{st.run_id}: {st.state}{progress}" + (f" ({st.detail})" if st.detail else ""))


@app.command()
@user_errors
def runs(
    cluster: Annotated[str | None, typer.Option(
        help="List the runs in this cluster's store instead (any laptop's, not only this one's).")] = None,
) -> None:
    """Every run this machine submitted, from the local registry (no network); with --cluster, every run
    the cluster's store holds."""
    from datetime import UTC, datetime

    from rich.table import Table

    from orchestrator import registry

    if cluster is not None:
        console().print(_store_runs(cluster))
        return
    table = Table(title="runs")
    for col in ("run id", "cluster", "state", "created", "store"):
        table.add_column(col)
    for e in registry.all_runs():
        created = datetime.fromtimestamp(e.created, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(e.run_id, e.cluster, e.state, created, e.store_uri)
    console().print(table)


def _store_runs(cluster: str) -> Any:
    from rich.table import Table

    from orchestrator import profiles
    from orchestrator.run.stored import StoredRun, stored_runs
    from orchestrator.store import open_store

    store = open_store(profiles.get(cluster).store)
    table = Table(title=f"runs in {store.uri}")
    for col in ("run id", "state", "attempt"):
        table.add_column(col)
    for run_id in stored_runs(store):
        record = StoredRun(store, run_id).record()
        table.add_row(run_id, str(record.state), str(record.attempt))
    return table


@app.command()
@user_errors
def logs(
    run_id: RunId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
) -> None:
    """The Ray job's driver log of a submitted run."""
    from orchestrator import profiles
    from orchestrator.remote.status import logs as do_logs

    found = entry(run_id)
    do_logs(found, profiles.get(found.cluster), follow, sys.stdout)


@app.command()
@user_errors
def stop(run_id: RunId) -> None:
    """Stop a submitted run's Ray job."""
    from orchestrator import profiles
    from orchestrator.remote.status import stop as do_stop

    found = entry(run_id)
    stopped = do_stop(found, profiles.get(found.cluster))
    typer.echo(f"{found.run_id}: {'stop requested' if stopped else 'already finished'}")


@app.command()
@user_errors
def pull(
    run_id: RunId,
    levels: Annotated[list[str] | None, typer.Option("--levels", help="Only these levels (repeatable): "
                      "q4_k_m, mlx-4bit, base, hf, adapter, ...")] = None,
    runs_dir: RunsDir = Path("runs"),
    threads: Annotated[int, typer.Option(help="Parallel ranged downloads.")] = 8,
    part_size_mb: Annotated[float, typer.Option(help="Size of each ranged part.")] = 8.0,
    limit_rate: Annotated[float | None, typer.Option(help="Cap the whole pull at this many MB/s.")] = None,
    cluster: Annotated[str | None, typer.Option(
        help="Find the run in this cluster's store: a run another laptop submitted.")] = None,
) -> None:
    """Download a run's artifacts, resumably, each checked against the manifest's sha256."""
    from orchestrator import profiles
    from orchestrator.remote.pull import pull as do_pull
    from orchestrator.run.stored import find_stored
    from orchestrator.store import open_store

    if cluster is not None:  # by the store, not this machine's registry: any run the store holds
        store = open_store(profiles.get(cluster).store)
        found_id = find_stored(store, run_id)
    else:
        found = entry(run_id)
        store, found_id = open_store(profiles.get(found.cluster).store), found.run_id
    with pull_bar() as progress:
        stats = do_pull(store, found_id, runs_dir, levels, threads=threads, part_size=int(part_size_mb * (1 << 20)),
                        limit_rate=limit_rate * 1e6 if limit_rate else None, progress=progress)
    typer.echo(f"{found_id}: {stats.files} files, {stats.bytes_total / 1e6:.1f} MB verified "
               f"({stats.bytes_fetched / 1e6:.1f} MB fetched, {stats.bytes_present / 1e6:.1f} MB already here)"
               + (f"; fetched again (changed in the store): {', '.join(stats.restarted)}" if stats.restarted else ""))
    typer.echo(f"run directory: {runs_dir / found_id}")


@app.command()
@user_errors
def watch(
    run: Annotated[str, typer.Argument(help="A run directory, or a submitted run's id (or unique prefix).")],
    prometheus: Annotated[str | None, typer.Option(
        help="Prometheus to read from (default: the cluster profile's prometheus_url, if any).")] = None,
    once: Annotated[bool, typer.Option(help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
) -> None:
    """A live view of a run: loss sparkline, step, tokens/s, ETA, GPU use, cost so far."""
    from orchestrator.remote import watch as w
    from orchestrator.run.layout import RunDir

    local = RunDir(Path(run))
    if local.record_path.is_file():
        run_id, fallback = local.record().run_id, w.local_source(local)
    else:
        from orchestrator import profiles
        from orchestrator.run.stored import StoredRun
        from orchestrator.store import open_store

        found = entry(run)
        profile = profiles.get(found.cluster)
        prometheus = prometheus or profile.prometheus_url
        run_id, fallback = found.run_id, w.store_source(StoredRun(open_store(profile.store), found.run_id))
    if interval <= 0:
        raise LatheError(f"--interval: {interval:g}: must be more than 0")
    w.watch(w.source(run_id, prometheus, fallback), once, interval, console())
