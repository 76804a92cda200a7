"""The `lathe` command: a thin layer that parses arguments and calls one stage each.

Heavy imports (torch, Axolotl, Ray) happen inside the commands that need them so
that `lathe --help` and light commands answer at once.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator import __version__
from orchestrator.errors import LatheError

app = typer.Typer(
    name="lathe",
    help="Fine-tune with Axolotl on Ray, quantize, pull, and validate every level on your laptop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tiny_app = typer.Typer(help="Tiny offline base models for tests and demos.", no_args_is_help=True)
app.add_typer(tiny_app, name="tiny")

def user_errors[F: Callable[..., Any]](fn: F) -> F:
    """Print a LatheError as its own lines (never wrapped or decorated) and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LatheError as exc:
            sys.stderr.write(f"{exc}\n")
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lathe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Lathe: recipe -> train -> export -> pull -> evaluate -> publish."""


@app.command()
@user_errors
def validate(
    recipe: Annotated[Path, typer.Argument(help="An Axolotl YAML recipe, optionally with a lathe: block.")],
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs per node on the target cluster, if the recipe does not say.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Skip Axolotl's schema (saves the ~15 s torch import).")] = False,
) -> None:
    """Check a recipe offline: Axolotl's schema, the lathe: block, dataset files and rows."""
    from orchestrator.validate import validate as run_validate

    parsed = run_validate(recipe, gpus_per_node=gpus_per_node, axolotl_schema=not quick)
    typer.echo(f"{parsed.name}: ok")


@app.command()
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="An Axolotl YAML recipe.")],
    runs_dir: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    workers: Annotated[int | None, typer.Option(help="Override the number of training workers.")] = None,
    pushgateway: Annotated[
        str | None, typer.Option(envvar="LATHE_PUSHGATEWAY", help="Push training metrics to this Pushgateway.")
    ] = None,
    export: Annotated[bool, typer.Option(help="Export (merge, GGUF, MLX, reference, manifest) after training.")] = True,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate every level here after export.")] = True,
    cluster: Annotated[str | None, typer.Option(
        help="Run on this cluster profile instead: submit, follow, pull, evaluate.")] = None,
) -> None:
    """Train, export and evaluate a recipe: here on a local Ray (default), or on a cluster with --cluster."""
    from orchestrator.run import run_local

    if cluster:
        _run_remote(recipe, cluster, runs_dir, workers, evaluate)
        return

    result = run_local(recipe, runs_dir, workers=workers, pushgateway=pushgateway, export=export)
    record = result.record()
    typer.echo(f"{record['run_id']}: {record['state']}, {record['steps']} steps, final loss {record['final_loss']}")
    typer.echo(f"run directory: {result.path}")
    if export and evaluate:
        _evaluate_and_report(result.path, "all", None, None, {}, None, None, arena_rounds=3)


def _run_remote(recipe: Path, cluster: str, runs_dir: Path, workers: int | None, evaluate: bool) -> None:
    from orchestrator import profiles, registry
    from orchestrator.laptop.pull import pull as do_pull
    from orchestrator.laptop.submit import follow
    from orchestrator.laptop.submit import submit as do_submit
    from orchestrator.store import open_store
    from orchestrator.validate import validate as run_validate

    parsed = run_validate(recipe, axolotl_schema=False)
    profile = profiles.get(cluster)
    done = do_submit(parsed, profile, workers)
    typer.echo(f"{done.run_id}: submitted to {cluster}", err=True)
    final = follow(registry.find(done.run_id), profile)  # type: ignore[arg-type]
    if final.state != "SUCCEEDED":
        raise LatheError(f"{done.run_id}: {final.state}" + (f": {final.detail}" if final.detail else ""))
    stats = _pull_with_progress(do_pull, open_store(profile.store), done.run_id, runs_dir, None, 8, 8.0, None)
    typer.echo(f"{done.run_id}: SUCCEEDED, pulled {stats.bytes_total / 1e6:.1f} MB")
    typer.echo(f"run directory: {runs_dir / done.run_id}")
    if evaluate:
        _evaluate_and_report(runs_dir / done.run_id, "all", None, None, {}, None, None, arena_rounds=3)


def _evaluate_and_report(run_dir: Path, backend: str, sampling_json: str | None, items: Path | None,
                         grid: dict[str, list[float]] | None, judge: Path | None, base: Path | None,
                         arena_rounds: int | None) -> None:
    from orchestrator.laptop.evaluate import GateFailed, evaluate
    from orchestrator.laptop.report import print_summary

    for path, flag in ((items, "--items"), (judge, "--judge"), (base, "--base")):
        if path is not None and not path.is_file():
            raise LatheError(f"{flag}: {path}: no such file")
    evaluation = evaluate(run_dir, backend, sampling_json, items,  # type: ignore[arg-type]
                          progress=lambda msg: typer.echo(f"evaluating {msg}", err=True),
                          sweep_grid=grid or None, judge_path=judge, base_gguf=base)
    print_summary(evaluation, arena_rounds)
    typer.echo(f"report: {evaluation.out / 'report.md'}")
    if evaluation.failures:
        raise GateFailed("\n".join(f"gate failed: {f}" for f in evaluation.failures))


@app.command()
@user_errors
def verify(
    path: Annotated[Path, typer.Argument(help="A run directory or its export/ directory.")],
    level: Annotated[list[str] | None, typer.Option(help="Only these levels (and level-less files).")] = None,
) -> None:
    """Check every artifact against manifest.json: present, right size, right sha256."""
    from orchestrator import manifest

    root = path / "export" if (path / "export" / manifest.MANIFEST).exists() else path
    checked = manifest.verify(root, levels=level)
    typer.echo(f"{root}: {len(checked.artifacts)} artifacts, levels {', '.join(checked.levels())}: ok")


@app.command("eval")
@user_errors
def eval_(
    run: Annotated[Path, typer.Argument(help="A run directory (or its export/ directory).")],
    backend: Annotated[str, typer.Option(help="llamacpp, mlx or all")] = "all",
    items: Annotated[Path | None, typer.Option(help="Eval set (jsonl); default: the recipe's lathe.eval.dataset")] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    top_p: Annotated[float, typer.Option()] = 1.0,
    top_k: Annotated[int, typer.Option()] = 0,
    repeat_penalty: Annotated[float, typer.Option()] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    stop: Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable).")] = None,
    max_tokens: Annotated[int, typer.Option()] = 48,
    sweep: Annotated[list[str] | None, typer.Option(
        help="Also score the eval set at these values, e.g. temperature=0,0.7 (repeatable; all combinations).")] = None,
    judge: Annotated[Path | None, typer.Option(help="A chat GGUF that grades every arena answer 1-10.")] = None,
    base: Annotated[Path | None, typer.Option(
        help="A GGUF of the base model for the arena (default: the run's base/ export, if any).")] = None,
    arena: Annotated[int, typer.Option(help="Arena rounds to print (all are in the report); -1: all.")] = 3,
) -> None:
    """Evaluate every quantization level of a run on this machine (llama.cpp and MLX); write the report."""
    from orchestrator.laptop.tasks import Sampling, parse_sweep

    if backend not in ("llamacpp", "mlx", "all"):
        raise LatheError(f"--backend: {backend!r} is not one of llamacpp, mlx, all")
    try:
        sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, repeat_penalty=repeat_penalty,
                            seed=seed, stop=stop or [], max_tokens=max_tokens)
    except ValueError as exc:
        lines = str(exc).splitlines()
        raise LatheError(f"sampling option {lines[1]}: {lines[2].strip() if len(lines) > 2 else ''}") from None
    _evaluate_and_report(run, backend, sampling.model_dump_json(), items, parse_sweep(sweep or []), judge, base,
                         None if arena < 0 else arena)


@app.command()
@user_errors
def publish(
    run: Annotated[Path, typer.Argument(help="A run directory that `lathe eval` has evaluated.")],
    to: Annotated[str, typer.Option("--to", help="A directory, or s3://bucket/prefix.")],
    endpoint_url: Annotated[str | None, typer.Option(help="For S3-compatible servers (MinIO, R2, ...).")] = None,
    region: Annotated[str | None, typer.Option(help="The S3 bucket's region.")] = None,
    artifacts: Annotated[bool, typer.Option(
        help="Copy the evaluated GGUF and MLX levels in (--no-artifacts: card and recipes only).")] = True,
) -> None:
    """Write a model's companion: model card with every level's eval numbers, deployment recipes, Modelfiles."""
    from orchestrator.laptop.publish import publish as do_publish

    done = do_publish(run, to, endpoint_url=endpoint_url, region=region, artifacts=artifacts)
    if not done.changed:
        typer.echo(f"{done.destination}: no changes ({done.files} files)")
        return
    typer.echo(f"{done.destination}: published {done.files} files ({len(done.written)} written, "
               f"{done.files - len(done.written)} unchanged, {len(done.removed)} removed)")


def _entry(run_id: str):
    from orchestrator import registry

    entry = registry.find(run_id)
    if entry is None:
        raise LatheError(f"run {run_id!r}: not in this machine's registry ({registry.home() / 'registry.db'}); "
                         "see `lathe runs`")
    return entry


@app.command()
@user_errors
def submit(
    recipe: Annotated[Path, typer.Argument(help="An Axolotl YAML recipe.")],
    cluster: Annotated[str, typer.Option(help="A cluster profile name (see `lathe clusters`).")],
    workers: Annotated[int | None, typer.Option(help="Override the number of training workers.")] = None,
) -> None:
    """Ship a recipe to a cluster as a Ray job; print the run id and return at once."""
    from orchestrator import profiles
    from orchestrator.laptop.submit import submit as do_submit
    from orchestrator.validate import validate as run_validate

    parsed = run_validate(recipe, axolotl_schema=False)
    profile = profiles.get(cluster)
    done = do_submit(parsed, profile, workers)
    typer.echo(done.run_id)
    typer.echo(f"submitted to {cluster}; artifacts: {done.store_uri}", err=True)


@app.command()
@user_errors
def status(run_id: Annotated[str | None, typer.Argument(help="A run id (or a unique prefix); all active if omitted.")] = None) -> None:
    """Where a submitted run is: asks the cluster and the store, updates the registry."""
    from orchestrator import profiles, registry
    from orchestrator.laptop.connect import jobs_client
    from orchestrator.laptop.submit import ACTIVE
    from orchestrator.laptop.submit import status as do_status

    entries = [_entry(run_id)] if run_id else [e for e in registry.all_runs() if e.state in ACTIVE]
    for cluster in dict.fromkeys(e.cluster for e in entries):  # one connection per cluster, in first-seen order
        profile = profiles.get(cluster)
        with jobs_client(profile) as client:
            for entry in (e for e in entries if e.cluster == cluster):
                st = do_status(entry, profile, client)
                progress = f" step {st.step}/{st.max_steps} loss {st.loss:.4g}" if st.step and st.loss is not None \
                    else ""
                typer.echo(f"{st.run_id}: {st.state}{progress}" + (f" ({st.detail})" if st.detail else ""))


@app.command()
@user_errors
def runs() -> None:
    """Every run this machine submitted, from the local registry (no network)."""
    from datetime import UTC, datetime

    from rich.table import Table

    from orchestrator import registry
    from orchestrator.laptop.report import console

    table = Table(title="runs")
    for col in ("run id", "cluster", "state", "created", "store"):
        table.add_column(col)
    for e in registry.all_runs():
        created = datetime.fromtimestamp(e.created, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(e.run_id, e.cluster, e.state, created, e.store_uri)
    console().print(table)


@app.command()
@user_errors
def logs(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
) -> None:
    """The Ray job's driver log of a submitted run."""
    from orchestrator import profiles
    from orchestrator.laptop.submit import logs as do_logs

    entry = _entry(run_id)
    do_logs(entry, profiles.get(entry.cluster), follow, sys.stdout)


@app.command()
@user_errors
def stop(run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")]) -> None:
    """Stop a submitted run's Ray job."""
    from orchestrator import profiles
    from orchestrator.laptop.submit import stop as do_stop

    entry = _entry(run_id)
    stopped = do_stop(entry, profiles.get(entry.cluster))
    typer.echo(f"{entry.run_id}: {'stop requested' if stopped else 'already finished'}")


@app.command()
@user_errors
def pull(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    levels: Annotated[list[str] | None, typer.Option("--levels", help="Only these levels (repeatable): "
                      "q4_k_m, mlx-4bit, base, hf, adapter, ...")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories go.")] = Path("runs"),
    threads: Annotated[int, typer.Option(help="Parallel ranged downloads.")] = 8,
    part_size_mb: Annotated[float, typer.Option(help="Size of each ranged part.")] = 8.0,
    limit_rate: Annotated[float | None, typer.Option(help="Cap the whole pull at this many MB/s.")] = None,
) -> None:
    """Download a run's artifacts, resumably, each checked against the manifest's sha256."""
    from orchestrator import profiles
    from orchestrator.laptop.pull import pull as do_pull
    from orchestrator.store import open_store

    entry = _entry(run_id)
    store = open_store(profiles.get(entry.cluster).store)
    stats = _pull_with_progress(do_pull, store, entry.run_id, runs_dir, levels, threads, part_size_mb, limit_rate)
    typer.echo(f"{entry.run_id}: {stats.files} files, {stats.bytes_total / 1e6:.1f} MB verified "
               f"({stats.bytes_fetched / 1e6:.1f} MB fetched, {stats.bytes_present / 1e6:.1f} MB already here)"
               + (f"; fetched again (changed in the store): {', '.join(stats.restarted)}" if stats.restarted else ""))
    typer.echo(f"run directory: {runs_dir / entry.run_id}")


def _pull_with_progress(do_pull: Callable[..., Any], store: Any, run_id: str, runs_dir: Path,
                        levels: list[str] | None, threads: int, part_size_mb: float, limit_rate: float | None) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("[bold]pull[/]"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("pull", total=None)
        return do_pull(store, run_id, runs_dir, levels, threads=threads, part_size=int(part_size_mb * (1 << 20)),
                       limit_rate=limit_rate * 1e6 if limit_rate else None,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))


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
    import json as _json

    from orchestrator.laptop import watch as w
    from orchestrator.laptop.report import console
    from orchestrator.rundir import RunDir

    local = Path(run)
    if (local / "run.json").is_file():
        rundir = RunDir(local)
        run_id = rundir.record()["run_id"]

        def fallback() -> w.Snapshot:
            return w.from_points(run_id, rundir.metrics(), rundir.record(), f"metrics.jsonl in {local}")
    else:
        from orchestrator import profiles
        from orchestrator.store import open_store

        entry = _entry(run)
        run_id = entry.run_id
        profile = profiles.get(entry.cluster)
        prometheus = prometheus or profile.prometheus_url
        store = open_store(profile.store)

        def fallback() -> w.Snapshot:
            def text(name: str) -> str:
                return store.get_bytes(f"{run_id}/{name}").decode() if store.stat(f"{run_id}/{name}") else ""

            points = []
            for line in text("metrics.jsonl").splitlines():
                try:
                    points.append(_json.loads(line))
                except ValueError:
                    continue
            record = _json.loads(text("run.json") or "{}")
            return w.from_points(run_id, points, record, f"metrics.jsonl in {store.uri}/{run_id}")

    def fetch() -> w.Snapshot:
        if prometheus:
            try:
                snap = w.from_prometheus(w.Prometheus(prometheus), run_id)
                if snap.losses:
                    return snap
            except (OSError, ValueError, KeyError):
                pass  # Prometheus down or not scraping this run: the files still tell the story
        return fallback()

    w.watch(fetch, once, interval, console())


@tiny_app.command("build")
@user_errors
def tiny_build(
    out: Annotated[Path, typer.Argument(help="Directory to write the model to (must not exist or be empty).")],
    arch: Annotated[str, typer.Option(help="llama or qwen2")] = "llama",
    seed: Annotated[int, typer.Option(help="Seed for the weights; the same seed gives the same bytes.")] = 0,
    hidden_size: Annotated[int, typer.Option(help="A multiple of 256.")] = 256,
    intermediate_size: Annotated[int, typer.Option(help="A multiple of 256.")] = 512,
    layers: Annotated[int, typer.Option(help="Number of transformer blocks.")] = 2,
) -> None:
    """Build a tiny base model and its tokenizer, offline and deterministically."""
    from orchestrator import tinymodel

    try:
        spec = tinymodel.TinySpec(
            arch=arch, seed=seed, hidden_size=hidden_size, intermediate_size=intermediate_size, num_layers=layers
        )
    except ValueError as exc:
        raise LatheError(f"tiny build: {exc}") from None
    try:
        path = tinymodel.build(spec, out)
    except FileExistsError as exc:
        raise LatheError(str(exc)) from None
    size = sum(f.stat().st_size for f in path.iterdir())
    typer.echo(f"{path}: {spec.arch}, {size / 1e6:.1f} MB")


@tiny_app.command("path")
@user_errors
def tiny_path(uri: Annotated[str, typer.Argument(help="e.g. tiny://llama or tiny://qwen2?seed=1")]) -> None:
    """Print the local path of a tiny:// model, building it into the cache if needed."""
    from orchestrator import tinymodel

    typer.echo(tinymodel.resolve_base_model(uri, recipe_name=uri))


# The cluster commands live in their own module; imported last because it uses user_errors.
from orchestrator.cli_cluster import cluster_app

app.add_typer(cluster_app, name="cluster")

if __name__ == "__main__":
    app()
