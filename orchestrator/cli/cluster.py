"""`lathe cluster up | status | down INVENTORY`: the colocated-cluster commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.support import console, user_errors
from orchestrator.errors import ProvisionError

app = typer.Typer(help="Ray on your own hosts over SSH: provision, check, tear down.", no_args_is_help=True)

Inventory = Annotated[Path, typer.Argument(help="The inventory YAML: hosts, roles, GPUs, store (see README).")]


def _show(outcome, verdict: str, unhealthy: str | None = None) -> None:
    """The per-host table, then one verdict line; exit non-zero when the cluster is not healthy."""
    from rich.table import Table

    table = Table(title=f"cluster {outcome.cluster}", title_justify="left")
    for col in ("host", "role", "address", "ray", "GPUs", "services", "changes", "notes"):
        table.add_column(col, overflow="fold")
    for r in outcome.hosts:
        services = ", ".join(f"{k} {v}" for k, v in r.services.items()) or "-"
        table.add_row(r.name, r.role, r.address, r.ray, r.gpus, services, "; ".join(r.changes) or "none",
                      "; ".join(r.notes) or "")
    console().print(table)
    typer.echo(verdict)
    if not outcome.healthy:
        if unhealthy:
            typer.echo(unhealthy, err=True)
        raise typer.Exit(ProvisionError.exit_code)


@app.command("up")
@user_errors
def up(inventory: Inventory,
       health_timeout: Annotated[float, typer.Option(help="Seconds to wait for every node to join.")] = 180) -> None:
    """Preflight every host, then start Ray (head, workers) and the exporters; write the cluster profile."""
    from orchestrator.colo import inventory as inv_mod
    from orchestrator.colo import provision

    inv = inv_mod.load(inventory)
    outcome = provision.up(inv, say=lambda line: typer.echo(line, err=True), health_timeout=health_timeout)
    _show(outcome, f"profile {inv.name} in {outcome.profile_path}" if outcome.changed else "no changes",
          f"cluster {inv.name}: not every node joined Ray (see the table)")


@app.command("status")
@user_errors
def status(inventory: Inventory) -> None:
    """Each host's services and Ray's view of its nodes; non-zero exit if anything is down."""
    from orchestrator.colo import inventory as inv_mod
    from orchestrator.colo import provision

    outcome = provision.status(inv_mod.load(inventory))
    _show(outcome, "healthy" if outcome.healthy else "unhealthy")


@app.command("down")
@user_errors
def down(inventory: Inventory) -> None:
    """Stop everything `up` started (workers first), remove the profile and the scrape targets."""
    from orchestrator.colo import inventory as inv_mod
    from orchestrator.colo import provision

    outcome = provision.down(inv_mod.load(inventory))
    _show(outcome, "stopped" if outcome.changed else "nothing was running")
