"""The `lathe` command: it parses arguments and prints; every stage's work is in its own module.

`pipeline` (validate, run, verify, eval, publish), `remote` (submit, status, runs, logs, stop,
pull, watch), `cluster` (up, status, down), `tiny`; `support` holds what they share. Heavy imports
(torch, Axolotl, Ray) happen inside the commands that need them, so `lathe --help` answers at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator import __version__
from orchestrator.cli import cluster, pipeline, remote, tiny

app = typer.Typer(
    name="lathe",
    help="Fine-tune with Axolotl on Ray, quantize, pull, and validate every level on your laptop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lathe {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Lathe: recipe -> train -> export -> pull -> evaluate -> publish."""


# Commands in the order `lathe --help` lists them: the pipeline first.
for group in (pipeline.app, remote.app):
    for command in group.registered_commands:
        app.registered_commands.append(command)
app.add_typer(cluster.app, name="cluster")
app.add_typer(tiny.app, name="tiny")

if __name__ == "__main__":
    app()
