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
) -> None:
    """Train and export a recipe on the embedded default: a local Ray, a local run directory."""
    from orchestrator.run import run_local

    result = run_local(recipe, runs_dir, workers=workers, pushgateway=pushgateway, export=export)
    record = result.record()
    typer.echo(f"{record['run_id']}: {record['state']}, {record['steps']} steps, final loss {record['final_loss']}")
    typer.echo(f"run directory: {result.path}")


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
) -> None:
    """Evaluate every quantization level of a run on this machine (llama.cpp and MLX); write the report."""
    from orchestrator.errors import LatheError as _LatheError
    from orchestrator.laptop.evaluate import GateFailed, evaluate
    from orchestrator.laptop.report import print_table
    from orchestrator.laptop.tasks import Sampling

    if backend not in ("llamacpp", "mlx", "all"):
        raise _LatheError(f"--backend: {backend!r} is not one of llamacpp, mlx, all")
    sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, repeat_penalty=repeat_penalty,
                        seed=seed, stop=stop or [], max_tokens=max_tokens)
    out, results, failures = evaluate(run, backend, sampling.model_dump_json(), items,  # type: ignore[arg-type]
                                      progress=lambda msg: typer.echo(f"evaluating {msg}", err=True))
    print_table(results)
    typer.echo(f"report: {out / 'report.md'}")
    if failures:
        raise GateFailed("\n".join(f"gate failed: {f}" for f in failures))


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


if __name__ == "__main__":
    app()
