"""`lathe tiny`: tiny offline base models for tests and demos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.support import user_errors
from orchestrator.errors import LatheError
from orchestrator.tinymodel import TinySpec

DEFAULT = TinySpec()  # the build behind tiny://llama

app = typer.Typer(help="Tiny offline base models for tests and demos.", no_args_is_help=True)


@app.command("build")
@user_errors
def tiny_build(
    out: Annotated[Path, typer.Argument(help="Directory to write the model to (must not exist or be empty).")],
    arch: Annotated[str, typer.Option(help="llama or qwen2")] = "llama",
    seed: Annotated[int, typer.Option(help="Seed for the weights; the same seed gives the same bytes.")] = 0,
    hidden_size: Annotated[int, typer.Option(help="A multiple of 256.")] = DEFAULT.hidden_size,
    intermediate_size: Annotated[int, typer.Option(help="A multiple of 256.")] = DEFAULT.intermediate_size,
    layers: Annotated[int, typer.Option(help="Number of transformer blocks.")] = DEFAULT.num_layers,
    pretrain_steps: Annotated[int, typer.Option(help="Steps of pretraining on the built-in corpus.")] = (
        DEFAULT.pretrain_steps),
    tokenizer: Annotated[str, typer.Option(help="Split rules of the BPE: gpt2, qwen2 or llama3.")] = "gpt2",
) -> None:
    """Build a tiny base model and its tokenizer, offline and deterministically (the defaults: tiny://llama)."""
    from orchestrator import tinymodel

    try:
        spec = tinymodel.TinySpec(
            arch=arch, seed=seed, hidden_size=hidden_size, intermediate_size=intermediate_size, num_layers=layers,
            pretrain_steps=pretrain_steps, tokenizer=tokenizer,
        )
    except ValueError as exc:
        raise LatheError(f"tiny build: {exc}") from None
    try:
        path = tinymodel.build(spec, out)
    except FileExistsError as exc:
        raise LatheError(str(exc)) from None
    size = sum(f.stat().st_size for f in path.iterdir())
    typer.echo(f"{path}: {spec.arch}, {spec.tokenizer} tokenizer, {size / 1e6:.1f} MB")

@app.command("path")
@user_errors
def tiny_path(uri: Annotated[str, typer.Argument(help="e.g. tiny://llama or tiny://qwen2?seed=1")]) -> None:
    """Print the local path of a tiny:// model, building it into the cache if needed."""
    from orchestrator import tinymodel

    typer.echo(tinymodel.resolve_base_model(uri, recipe_name=uri))