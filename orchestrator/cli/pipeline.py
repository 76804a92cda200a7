"""The pipeline's own commands: validate, run (here, or on a cluster), verify, eval, publish."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from orchestrator.cli.support import RunsDir, evaluate_and_report, pull_bar, user_errors
from orchestrator.errors import LatheError, one_line

app = typer.Typer()


@app.command()
@user_errors
def validate(
    recipe: Annotated[Path, typer.Argument(help="An Axolotl YAML recipe, optionally with a lathe: block.")],
    gpus_per_node: Annotated[
        int | None, typer.Option(help="GPUs per node on the target cluster, if the recipe does not say.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Skip Axolotl's schema (~20 s of imports, paid once: a background process keeps it loaded).")] = False,
) -> None:
    """Check a recipe offline: Axolotl's schema, the lathe: block, dataset files and rows."""
    from orchestrator.recipe import cpu_note
    from orchestrator.validate import validate as run_validate

    parsed = run_validate(recipe, gpus_per_node=gpus_per_node, axolotl_schema=not quick,
                          say=lambda line: typer.echo(line, err=True), start_schema_process=True)
    for line in parsed.warnings:
        typer.echo(f"warning: {line}", err=True)
    if parsed.cpu_changes:
        typer.echo(f"note: {parsed.name}: {cpu_note(parsed.cpu_changes)}", err=True)
    typer.echo(f"{parsed.name}: ok")


@app.command()
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="An Axolotl YAML recipe.")],
    runs_dir: RunsDir = Path("runs"),
    workers: Annotated[int | None, typer.Option(help="Override the number of training workers.")] = None,
    pushgateway: Annotated[str | None, typer.Option(
        envvar="LATHE_PUSHGATEWAY", help="Push training metrics to this Pushgateway (on a cluster: instead of "
                                         "the profile's).")] = None,
    export: Annotated[bool, typer.Option(help="Export (merge, GGUF, MLX, reference, manifest) after training.")] = True,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate every level here after export.")] = True,
    cluster: Annotated[str | None, typer.Option(
        help="Run on this cluster profile instead: submit, follow, pull, evaluate.")] = None,
) -> None:
    """Train, export and evaluate a recipe: here on a local Ray (default), or on a cluster with --cluster."""
    if cluster:
        from orchestrator.remote.run import run_remote
        from orchestrator.remote.submit import SubmitOptions

        with pull_bar() as progress:
            done = run_remote(recipe, cluster, runs_dir, SubmitOptions(workers, pushgateway, export),
                              on_submitted=lambda rid: typer.echo(f"{rid}: submitted to {cluster}", err=True),
                              pull_progress=progress)
        record = done.run.record()
        pulled = f", pulled {done.pulled.bytes_total / 1e6:.1f} MB" if done.pulled else ""
        typer.echo(f"{record.run_id or done.run.path.name}: SUCCEEDED{pulled}")
        run_dir = done.run.path
    else:
        from orchestrator.local import run_local

        result = run_local(recipe, runs_dir, workers=workers, pushgateway=pushgateway, export=export)
        record = result.record()
        loss = f"{record.final_loss:.4f}" if record.final_loss is not None else "-"
        typer.echo(f"{record.run_id}: {record.state}, {record.steps} steps, final loss {loss}")
        run_dir = result.path
    typer.echo(f"run directory: {run_dir}")
    try:
        if export and evaluate:
            evaluate_and_report(run_dir)
    finally:
        from orchestrator.run.layout import RunDir
        from orchestrator.run.timeline import line

        typer.echo(line(RunDir(run_dir)), err=True)


@app.command()
@user_errors
def verify(
    path: Annotated[Path, typer.Argument(help="A run directory or its export/ directory.")],
    level: Annotated[list[str] | None, typer.Option(
        help="Only these levels (or adapter, hf-weights, base), each required whole; default: what is here.")] = None,
) -> None:
    """Check what is here against manifest.json: each level present whole (right size, right sha256), the
    files every pull brings, and say what was left in the store."""
    from orchestrator import manifest

    root = path / "export" if (path / "export" / manifest.MANIFEST).exists() else path
    checked, absent = manifest.verify_pulled(root, levels=level)
    typer.echo(f"{root}: {len(checked.artifacts)} artifacts in the manifest, levels {', '.join(checked.levels())}: "
               "ok" + (f"; not here (left in the store): {', '.join(absent)}" if absent else ""))

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
    judge: Annotated[Path | None, typer.Option(help="A chat GGUF that grades every arena answer (1-9), checked on control pairs first.")] = None,
    base: Annotated[Path | None, typer.Option(
        help="A GGUF of the base model for the arena (default: the run's base/ export, if any).")] = None,
    arena: Annotated[int, typer.Option(help="Arena rounds to print (all are in the report); -1: all.")] = 0,
    tasks: Annotated[str | None, typer.Option(
        help="lm-evaluation-harness tasks, comma-separated, put to each level through its runtime's "
             "OpenAI-compatible server (default: the recipe's lathe.eval.benchmarks.lm_eval).")] = None,
) -> None:
    """Evaluate every quantization level of a run on this machine (llama.cpp and MLX); write the report."""
    from orchestrator.evaluation.tasks import Sampling, parse_sweep

    if backend not in ("llamacpp", "mlx", "all"):
        raise LatheError(f"--backend: {backend!r} is not one of llamacpp, mlx, all")
    try:
        sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, repeat_penalty=repeat_penalty,
                            seed=seed, stop=stop or [], max_tokens=max_tokens)
    except ValidationError as exc:
        raise LatheError(one_line(exc, "sampling option")) from None
    evaluate_and_report(run, backend=backend, sampling_json=sampling.model_dump_json(), items=items,
                        grid=parse_sweep(sweep or []), judge=judge, base=base,
                        arena_rounds=None if arena < 0 else arena,
                        lm_eval_tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else None)

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
    from orchestrator.publish.publish import publish as do_publish

    done = do_publish(run, to, endpoint_url=endpoint_url, region=region, artifacts=artifacts)
    if not done.changed:
        typer.echo(f"{done.destination}: no changes ({done.files} files)")
        return
    typer.echo(f"{done.destination}: published {done.files} files ({len(done.written)} written, "
               f"{done.files - len(done.written)} unchanged, {len(done.removed)} removed)")