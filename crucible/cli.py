"""The ``crucible`` command: ``crucible lake check|restore|migrate`` as readable tables, ``--json`` for scripts."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from crucible.lake import DeltaLake, LakeTableError, TableHealth, TableVersionError, default_lake_root

_ROOT_HELP = "Lake folder or URI (default: $CRUCIBLE_LAKE_ROOT, else $CRUCIBLE_HOME/lake, home ./.crucible)."


def _lake(root: str | None) -> DeltaLake:
    root = root or default_lake_root()
    if "://" not in root and not Path(root).is_dir():
        raise click.ClickException(f"no lake at {root} (no such folder): pass --root or set CRUCIBLE_LAKE_ROOT")
    return DeltaLake(root)


def _print_json(payload: object) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


@click.group()
def main() -> None:
    """Crucible: an ML lifecycle platform on Dagster and Delta Lake."""


@main.group()
def lake() -> None:
    """Check, restore and migrate the Delta tables of the lake."""


def check_lake(store: DeltaLake) -> list[TableHealth]:
    """The health of every catalogued table and of anything else found under the root."""
    import schemas

    specs = [*schemas.ALL_TABLES, schemas.LAKE_MIGRATIONS]
    known = {spec.path for spec in specs}
    return [store.health(spec) for spec in specs] + [store.health(path) for path in store.tables_found()
                                                      if path not in known]


@lake.command()
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def check(root: str | None, as_json: bool) -> None:
    """Every table's health: ok / not created / broken (why), version, rows, schema version, pending steps.

    Exits with status 1 when any table is broken.
    """
    store = _lake(root)
    report = check_lake(store)
    broken = [h for h in report if h.status == "broken"]
    if as_json:
        _print_json({"root": store.root, "tables": [dataclasses.asdict(h) for h in report], "broken": len(broken)})
    else:
        table = Table(title=f"lake {store.root}")
        for column in ("table", "status", "version", "rows", "schema", "pending migrations", "problem"):
            table.add_column(column, overflow="fold")
        colours = {"ok": "green", "not created": "dim", "broken": "bold red"}
        for h in report:
            schema = "" if h.schema_version is None else f"v{h.schema_version}"
            if h.expected_schema_version is not None and h.schema_version not in (None, h.expected_schema_version):
                schema += f" (code v{h.expected_schema_version})"
            table.add_row(h.table, f"[{colours[h.status]}]{h.status}[/]", _text(h.version), _text(h.rows), schema,
                          ", ".join(h.pending_migrations), h.problem or "")
        console = Console(width=160)
        console.print(table)
        if broken:
            console.print(f"[bold red]{len(broken)} broken[/]: restore with "
                          f"`crucible lake restore TABLE --version N` (see README 'Recovering a damaged lake')")
        if any(h.pending_migrations for h in report):
            console.print("schema migrations are pending: run `crucible lake migrate`")
    sys.exit(1 if broken else 0)


def _text(value: object) -> str:
    return "" if value is None else str(value)


@lake.command()
@click.argument("table")
@click.option("--version", "version", type=int, required=True, help="The version to bring back.")
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def restore(table: str, version: int, root: str | None, as_json: bool) -> None:
    """Bring back VERSION of TABLE (e.g. datasets/examples) as its newest version.

    A readable table gets a Delta RESTORE commit; a table whose newest commits are unreadable has
    them moved aside into a folder named _crucible_unreadable_commits_<time> inside the table.
    """
    store = _lake(root)
    try:
        result = store.restore(table, version)
    except (LakeTableError, TableVersionError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        _print_json(dataclasses.asdict(result))
    elif result.moved_aside:
        click.echo(f"{table}: moved {len(result.moved_aside)} unreadable log files "
                   f"({', '.join(result.moved_aside)}) to {result.moved_to}; the table now reads at version "
                   f"{result.version}")
    elif result.version == result.restored_to:
        click.echo(f"{table}: already at version {version}; nothing to do")
    else:
        click.echo(f"{table}: restored version {version} as new version {result.version} (history kept)")


@lake.command()
@click.option("--dry-run", is_flag=True, help="List the pending steps without applying them.")
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def migrate(dry_run: bool, root: str | None, as_json: bool) -> None:
    """Apply pending schema-migration steps in order, recording each in _crucible/migrations."""
    from crucible.migrations import migrate as run_migrations

    store = _lake(root)
    try:
        outcomes = run_migrations(store, dry_run=dry_run)
    except LakeTableError as error:
        raise click.ClickException(f"{error} (migrate needs every table readable)") from error
    if as_json:
        _print_json({"root": store.root, "dry_run": dry_run, "steps": [dataclasses.asdict(o) for o in outcomes]})
        return
    if not outcomes:
        click.echo("no pending migrations: every table is at its code's schema version")
        return
    table = Table(title="pending migrations" if dry_run else "applied migrations")
    for column in ("step", "status", "table version", "description"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        table.add_row(outcome.step_id, outcome.status, str(outcome.table_version), outcome.description)
    Console(width=160).print(table)
