"""The ``crucible`` command: ``crucible lake check|restore|migrate`` as readable tables, ``--json`` for scripts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

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


# -- registry -------------------------------------------------------------------------------------

_TOKEN_HELP = "Registry token of the acting principal (default: $CRUCIBLE_REGISTRY_TOKEN)."
_REF_HELP = "REF is MODEL (its newest version), MODEL/vN, MODEL@ALIAS or MODEL@STAGE."


def _registry_errors() -> tuple[type[BaseException], ...]:
    """What the registry raises for a mistake of the caller: printed as one clear message, exit status 1."""
    from crucible.registry.access import AccessDenied, AuthenticationError
    from crucible.registry.lineage import LineageCycleError
    from crucible.registry.query import QuerySyntaxError
    from crucible.registry.registry import VersionNotFound
    from crucible.registry.storage import ArtifactIntegrityError, HubUnreachableError
    from crucible.registry.versions import InvalidTransition

    return (AccessDenied, AuthenticationError, VersionNotFound, InvalidTransition, QuerySyntaxError,
            LineageCycleError, ArtifactIntegrityError, HubUnreachableError, LookupError, ValueError, TypeError,
            FileNotFoundError, LakeTableError)


class _RegistryGroup(click.Group):
    """Runs each subcommand with the registry's errors turned into ``Error: <message>`` and no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except _registry_errors() as error:
            raise click.ClickException(str(error)) from None


def _registry_options(command):
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(command)
    return click.option("--root", help=_ROOT_HELP)(command)


def _token_option(command):
    return click.option("--token", envvar="CRUCIBLE_REGISTRY_TOKEN", show_envvar=True, help=_TOKEN_HELP)(command)


def _plain_row(table: Table, *cells: object) -> None:
    """A row shown as written: names, URIs and JSON are never read as rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(str(cell)) for cell in cells))


def _reader(root: str | None):
    """The registry for reading (every role may read, so no token is needed)."""
    from crucible.registry.access import Principal
    from crucible.registry.registry import Registry

    return Registry(_lake(root), Principal("cli-reader", frozenset({"viewer"})))


def _acting(root: str | None, token: str | None, store=None, create_lake: bool = False):
    """The registry as the principal ``token`` belongs to."""
    from crucible.registry.access import AuthenticationError
    from crucible.registry.registry import Registry

    if not token:
        raise click.ClickException("this command changes the registry: pass --token or set CRUCIBLE_REGISTRY_TOKEN "
                                   "(an admin creates tokens with `crucible registry principal create`)")
    lake_ = DeltaLake(root or default_lake_root()) if create_lake else _lake(root)
    try:
        return Registry.from_token(lake_, token, store)
    except AuthenticationError as error:
        raise click.ClickException(f"--token/$CRUCIBLE_REGISTRY_TOKEN: {error}") from None


def _version_ref(registry, ref: str):
    """``MODEL``, ``MODEL/vN``, ``MODEL@ALIAS``: the version it names."""
    if "@" not in ref and "/" not in ref:
        return registry.get(ref, "latest")
    return registry.resolve(ref)


def _version_json(version) -> dict:
    return dataclasses.asdict(version)


def _versions_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in ("model", "version", "stage", "aliases", "created", "by", "run", "dataset", "metrics", "tags"):
        table.add_column(column, overflow="fold")
    colours = {"production": "bold green", "staging": "yellow", "archived": "dim"}
    for r in rows:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r["metrics"].items()))
        # Text cells: names, tags and metric keys are shown as written, never read as rich markup.
        table.add_row(*(Text(cell) for cell in (r["model_name"], str(r["version"]))),
                      Text(r["stage"], style=colours.get(r["stage"], "")),
                      *(Text(cell) for cell in (", ".join(r["aliases"]), str(r["created_at"])[:19],
                                                _text(r["created_by"]), r["training_run_id"],
                                                f"{r['dataset']}@v{r['dataset_version']}", metrics,
                                                ", ".join(r["tags"]))))
    return table


def _version_rows(registry, frame) -> list[dict]:
    """Version rows as plain records: metrics and tags decoded, aliases joined in."""
    aliases = registry.aliases()
    records = []
    for row in frame.to_dict("records"):
        names = aliases.loc[(aliases["model_name"] == row["model_name"]) & (aliases["version"] == row["version"]),
                            "alias"]
        records.append({
            "model_name": row["model_name"], "version": int(row["version"]), "stage": row["stage"],
            "aliases": sorted(names), "created_at": row["created_at"], "created_by": row.get("created_by"),
            "training_run_id": row["training_run_id"], "dataset": row["dataset"],
            "dataset_version": int(row["dataset_version"]), "metrics": json.loads(row["metrics"] or "{}"),
            "tags": json.loads(row.get("tags") or "[]"), "recipe_name": row.get("recipe_name"),
            "sha256": row["sha256"], "artifact_uri": row["artifact_uri"]})
    return records


@main.group(cls=_RegistryGroup)
def registry() -> None:
    """Model versions, stages, aliases, lineage, queries and comparisons (README: 'Model registry').

    Reading needs no token; changes act as the principal of --token or $CRUCIBLE_REGISTRY_TOKEN.
    """


@registry.command("list")
@click.argument("model", required=False)
@click.option("--stage", help="Only versions in this stage.")
@_registry_options
def list_versions(model: str | None, stage: str | None, root: str | None, as_json: bool) -> None:
    """Registered versions (of MODEL, or of every model), oldest first."""
    reader = _reader(root)
    frame = reader.list_versions(model)
    if stage:
        frame = frame.loc[frame["stage"] == stage]
    rows = _version_rows(reader, frame)
    if as_json:
        _print_json(rows)
    else:
        Console(width=200).print(_versions_table(f"registry {reader.lake.root}", rows))


@registry.command()
@click.argument("ref")
@_registry_options
def show(ref: str, root: str | None, as_json: bool) -> None:
    """One version: its fields, artifacts, aliases and direct lineage. """
    reader = _reader(root)
    version = _version_ref(reader, ref)
    parents = reader.ancestors(version, depth=1)
    if as_json:
        _print_json({**_version_json(version), "lineage": [dataclasses.asdict(hop) for hop in parents]})
        return
    console = Console(width=200)
    fields = Table(title=f"{version.model_name} v{version.version}", show_header=False)
    fields.add_column("field", style="bold")
    fields.add_column("value", overflow="fold")
    for name in ("stage", "aliases", "sha256", "artifact_uri", "training_run_id", "dataset", "dataset_version",
                 "recipe_name", "recipe_hash", "base_model", "parent_version", "tags", "metrics", "created_at",
                 "created_by"):
        value = getattr(version, name)
        _plain_row(fields, name, json.dumps(value) if isinstance(value, dict | tuple) else _text(value))
    console.print(fields)
    artifacts = Table(title="artifacts")
    for column in ("type", "backend", "uri", "sha256", "bytes"):
        artifacts.add_column(column, overflow="fold")
    for artifact in version.artifacts:
        _plain_row(artifacts, artifact.artifact_type, artifact.backend, artifact.uri, artifact.sha256[:12],
                          str(artifact.size))
    console.print(artifacts)
    console.print(_hops_table("made from", parents))


def _hops_table(title: str, hops) -> Table:
    table = Table(title=title)
    for column in ("depth", "source", "relation", "target"):
        table.add_column(column, overflow="fold")
    for hop in hops:
        _plain_row(table, str(hop.depth), hop.source, hop.relation, hop.target)
    return table


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, found, rest = value.partition("=")
        if not found or not key or not rest:
            raise click.BadParameter(f"{value!r}: expected NAME=VALUE", param_hint=what)
        pairs[key] = rest
    return pairs


@registry.command()
@click.argument("model")
@click.option("--checkpoint", type=click.Path(exists=True), help="The checkpoint folder (weights and its files).")
@click.option("--artifact", "artifacts", multiple=True, metavar="TYPE=PATH",
              help="Another artifact: tokenizer, config, merged_weights, lora_adapter or gguf (repeatable).")
@click.option("--run-id", required=True, help="The training run that produced it.")
@click.option("--dataset", required=True, help="The dataset it was trained on.")
@click.option("--dataset-version", type=int, required=True, help="The dataset's table version.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=VALUE", help="A metric (repeatable).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--recipe", help="Recipe name.")
@click.option("--recipe-hash", help="Recipe hash.")
@click.option("--base-model", help="Base model it was fine-tuned from (hub id, path or model:NAME/vN).")
@click.option("--training-config", help="Training config: a JSON or YAML file, or inline JSON.")
@click.option("--parent-version", type=int, help="The version of MODEL it was trained from.")
@click.option("--evaluated-on", "evaluated_on", multiple=True, metavar="NODE",
              help="A dataset node it was evaluated on, e.g. dataset:gsm8k@v3 (repeatable).")
@click.option("--stage", default="experiment", show_default=True, help="experiment or staging.")
@click.option("--store", help="Artifact store: folder, s3://bucket/prefix or hf://org/repo "
                              "(default: $CRUCIBLE_HOME/registry_artifacts).")
@click.option("--s3-endpoint-url", help="Endpoint of an S3-compatible store.")
@_token_option
@_registry_options
def register(model: str, checkpoint: str | None, artifacts: tuple[str, ...], run_id: str, dataset: str,
             dataset_version: int, metrics: tuple[str, ...], tags: tuple[str, ...], recipe: str | None,
             recipe_hash: str | None, base_model: str | None, training_config: str | None,
             parent_version: int | None, evaluated_on: tuple[str, ...], stage: str, store: str | None,
             s3_endpoint_url: str | None, token: str | None, root: str | None, as_json: bool) -> None:
    """Register the next version of MODEL from local artifact files (copied into the artifact store)."""
    from crucible.registry.service import default_artifact_root
    from crucible.registry.storage import artifact_store

    files = {**({"checkpoint": checkpoint} if checkpoint else {}), **_pairs(artifacts, "--artifact")}
    try:
        values = {name: float(value) for name, value in _pairs(metrics, "--metric").items()}
    except ValueError as error:
        raise click.BadParameter(f"{error}: metric values are numbers", param_hint="--metric") from None
    options = {"endpoint_url": s3_endpoint_url} if s3_endpoint_url else {}
    acting = _acting(root, token, artifact_store(store or default_artifact_root(), **options), create_lake=True)
    version = acting.register(
        model, files, training_run_id=run_id, dataset=dataset, dataset_version=dataset_version, metrics=values,
        tags=tags, recipe_name=recipe, recipe_hash=recipe_hash, base_model=base_model,
        training_config=_training_config(training_config), parent_version=parent_version,
        lineage_from=[(node, "evaluated_on") for node in evaluated_on], stage=stage)
    if as_json:
        _print_json(_version_json(version))
    elif version.duplicate_of:
        click.echo(f"{model}: these weights are already registered as v{version.duplicate_of}; nothing written")
    else:
        click.echo(f"registered {model} v{version.version} ({version.stage}) sha256 {version.sha256[:12]}… "
                   f"at {version.artifact_uri}")


def _training_config(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    if path.is_file():
        import yaml

        loaded = yaml.safe_load(path.read_text())
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"{text!r} is neither a file nor JSON ({error})",
                                     param_hint="--training-config") from None
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"expected a mapping, got {type(loaded).__name__}", param_hint="--training-config")
    return loaded


@registry.command()
@click.argument("ref")
@click.option("--to", "stage", default="production", show_default=True,
              help="Target stage: staging, production, archived or experiment.")
@_token_option
@_registry_options
def promote(ref: str, stage: str, token: str | None, root: str | None, as_json: bool) -> None:
    """Move the version REF names to a stage (production needs the approver role). """
    acting = _acting(root, token)
    version = _version_ref(acting, ref)
    event = acting.transition(version.model_name, version.version, stage)
    if as_json:
        _print_json(dataclasses.asdict(event))
    else:
        archived = event.details.get("archived") or []
        click.echo(f"{version.model_name} v{version.version}: {event.details['from']} -> {stage}"
                   + (f" (archived {', '.join(f'v{v}' for v in archived)})" if archived else ""))


@registry.command()
@click.argument("model")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("--delete", is_flag=True, help="Remove ALIAS instead of setting it.")
@_token_option
@_registry_options
def alias(model: str, alias: str, version: str | None, delete: bool, token: str | None, root: str | None,
          as_json: bool) -> None:
    """Point ALIAS of MODEL at VERSION (a number or vN), or remove it with --delete."""
    from crucible.registry.versions import parse_version_ref

    acting = _acting(root, token)
    if delete:
        event = acting.delete_alias(model, alias)
    else:
        number = parse_version_ref(version) if version else None
        if number is None:
            raise click.BadParameter(f"{version!r}: expected a version number like 3 or v3", param_hint="VERSION")
        event = acting.set_alias(model, alias, number)
    if as_json:
        _print_json(dataclasses.asdict(event))
    elif delete:
        click.echo(f"{model}@{alias} removed (it pointed at v{event.version})")
    else:
        moved = event.details.get("from")
        click.echo(f"{model}@{alias} -> v{event.version}" + (f" (was v{moved})" if moved else ""))


@registry.command()
@click.argument("ref")
@click.option("--descendants", is_flag=True, help="Walk downstream (what was made from it) instead of upstream.")
@click.option("--depth", type=click.IntRange(min=1), help="At most this many edges away.")
@_registry_options
def lineage(ref: str, descendants: bool, depth: int | None, root: str | None, as_json: bool) -> None:
    """The lineage of a version (REF) or of any node id (dataset:gsm8k@v3, run:ID, ...)."""
    reader = _reader(root)
    node = ref if ":" in ref else _version_ref(reader, ref).node
    hops = reader.descendants(node, depth) if descendants else reader.ancestors(node, depth)
    if as_json:
        _print_json({"node": node, "direction": "descendants" if descendants else "ancestors",
                     "edges": [dataclasses.asdict(hop) for hop in hops]})
    else:
        Console(width=200).print(_hops_table(f"{'descendants' if descendants else 'ancestors'} of {node}", hops))


@registry.command()
@click.argument("text")
@click.option("--model", help="Only versions of this model.")
@_registry_options
def query(text: str, model: str | None, root: str | None, as_json: bool) -> None:
    """Versions matching TEXT, e.g. 'stage = "production" and metrics."gsm8k/exact_match" >= 0.4 order by
    created_at desc limit 5'."""
    from crucible.registry.query import parse_query

    reader = _reader(root)
    frame = reader.list_versions(model)
    rows = _version_rows(reader, parse_query(text, fields=frame.columns).apply(frame))
    if as_json:
        _print_json(rows)
    else:
        Console(width=200).print(_versions_table(f"{len(rows)} version(s) where {text}", rows))


@registry.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--benchmark", "benchmarks", multiple=True, help="Only these benchmarks in the statistics.")
@click.option("--markdown", is_flag=True, help="Print the comparison as markdown.")
@_registry_options
def compare(refs: tuple[str, ...], benchmarks: tuple[str, ...], markdown: bool, root: str | None,
            as_json: bool) -> None:
    """Two or more versions side by side (the first is the baseline): config, metrics and lineage differences,
    and paired statistics where both were evaluated on the same items."""
    from crucible.registry.compare import compare_registered

    reader = _reader(root)
    result = compare_registered(reader.lake, [_version_ref(reader, ref) for ref in refs],
                                benchmarks=list(benchmarks) or None)
    if as_json:
        _print_json(result.to_dict())
    elif markdown:
        click.echo(result.markdown())
    else:
        _print_comparison(result)


def _print_comparison(result) -> None:
    from crucible.evaluate.report import comparison_table

    console = Console(width=200)
    labels = list(result.labels)
    data = result.to_dict()
    overview = Table(title="versions")
    for column in ["", *labels]:
        overview.add_column(column, overflow="fold")
    for key in [k for k in data["versions"][0] if k != "label"]:
        _plain_row(overview, key, *(_text(entry[key]) for entry in data["versions"]))
    console.print(overview)
    config = Table(title="training config differences")
    for column in ["key", *labels]:
        config.add_column(column, overflow="fold")
    for key, values in data["config_diff"].items():
        _plain_row(config, key, *(json.dumps(values[label]) for label in labels))
    console.print(config if data["config_diff"] else "training config: no differences")
    metrics = Table(title="metrics")
    for column in ["metric", *labels, *(f"{label} - {labels[0]}" for label in labels[1:])]:
        metrics.add_column(column, overflow="fold")
    for name, values in result.metrics.items():
        deltas = result.metric_deltas[name]
        _plain_row(metrics, name, *(_number(values[label]) for label in labels),
                        *(_number(deltas[label], signed=True) for label in labels[1:]))
    console.print(metrics)
    lineage_table = Table(title="lineage only in one version")
    for column in ("only in", "kind", "node or edge"):
        lineage_table.add_column(column, overflow="fold")
    for label, kinds in result.lineage_only.items():
        for kind, items in kinds.items():
            for item in items:
                _plain_row(lineage_table, label, kind, item)
    console.print(lineage_table)
    for comparison in result.statistics:
        frame = comparison_table(comparison)
        stats = Table(title=f"{comparison.candidate_version} vs {comparison.baseline_version} (paired)")
        for column in ("benchmark", "n_paired", "baseline", "candidate", "difference", "ci", "test", "adjusted_p",
                       "verdict"):
            stats.add_column(column, overflow="fold")
        for r in frame.itertuples():
            _plain_row(stats, r.benchmark, str(r.n_paired), f"{r.baseline:.4f}", f"{r.candidate:.4f}",
                          f"{r.difference:+.4f}", f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]", r.test,
                          f"{r.adjusted_p:.4g}", r.verdict)
        console.print(stats)
    for note in result.notes:
        console.print(f"note: {note}")


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


@registry.group()
def principal() -> None:
    """Who may change the registry: principals with roles and their tokens."""


@principal.command("create")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["viewer", "trainer", "approver", "admin"]), help="A role (repeatable).")
@_token_option
@_registry_options
def create_principal(name: str, roles: tuple[str, ...], token: str | None, root: str | None, as_json: bool) -> None:
    """Create principal NAME and print its token once (it is stored only as a salted hash).

    Needs an admin's --token, except for the very first principal, which must be an admin (the bootstrap).
    """
    from crucible.registry import access

    store = DeltaLake(root or default_lake_root())
    bootstrap = access.principals(store).empty
    by = None if bootstrap and not token else _acting(root, token).principal
    new_token = access.create_principal(store, name, roles, by=by)
    if as_json:
        _print_json({"name": name, "roles": sorted(roles), "token": new_token, "bootstrap": by is None})
        return
    click.echo(f"created principal {name} ({', '.join(sorted(roles))})"
               + (" as the registry's first admin" if by is None else f" by {by.name}"))
    click.echo(f"token (shown once; keep it secret): {new_token}")


@principal.command("list")
@_registry_options
def list_principals(root: str | None, as_json: bool) -> None:
    """Principals and their roles (never their tokens)."""
    from crucible.registry import access

    rows = [{"name": r["name"], "roles": json.loads(r["roles"]), "created_by": r["created_by"],
             "created_at": r["created_at"]} for r in access.principals(_lake(root)).to_dict("records")]
    if as_json:
        _print_json(rows)
        return
    table = Table(title="principals")
    for column in ("name", "roles", "created by", "created at"):
        table.add_column(column)
    for r in rows:
        _plain_row(table, r["name"], ", ".join(r["roles"]), r["created_by"], str(r["created_at"])[:19])
    Console(width=160).print(table)


@main.group()
def feedback() -> None:
    """Curated feedback: export it, review it."""


def _day(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a YYYY-MM-DD day") from None


@feedback.command("export")
@click.argument("what", type=click.Choice(["curated", "pairs"]))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet", "hf"]), default="jsonl", show_default=True,
              help="hf = a Hugging Face datasets folder (load it with datasets.load_from_disk).")
@click.option("--start", help="First day (YYYY-MM-DD) of the events to export.")
@click.option("--end", help="Last day (YYYY-MM-DD), included.")
@click.option("--all-statuses", is_flag=True,
              help="curated: also export pending hard examples (by default only SFT targets are exported).")
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a line of text.")
def export_feedback(what: str, out: Path, fmt: str, start: str | None, end: str | None, all_statuses: bool,
                    root: str | None, as_json: bool) -> None:
    """Export curated examples (SFT chats) or preference pairs to OUT as JSONL, Parquet or a datasets folder."""
    from crucible.feedback.export import export_from_lake

    try:
        result = export_from_lake(_lake(root), what, out, fmt, start=_day(start), end=_day(end),
                                  targets_only=not all_statuses)
    except (LookupError, ValueError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        _print_json(dataclasses.asdict(result))
    else:
        click.echo(f"exported {result.rows} {what} rows to {result.path} ({result.format})")


@main.group()
def review() -> None:
    """The human review page of curated feedback examples."""


@review.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The page has no login: keep it on a loopback address.")
@click.option("--port", type=int, default=8765, show_default=True, help="0 picks a free port (printed).")
@click.option("--lake", "--root", "root", help=_ROOT_HELP)
@click.option("--reviewer", help="Reviewer name recorded when the page's Reviewer field is left empty.")
@click.option("--per-page", type=click.IntRange(1, 200), default=20, show_default=True)
def review_serve(host: str, port: int, root: str | None, reviewer: str | None, per_page: int) -> None:
    """Serve the review page until SIGTERM/SIGINT: approve, reject or edit curated examples.

    Prints `crucible review: listening on URL` once listening.
    """
    import ipaddress

    from crucible.feedback.review import ReviewServer

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        click.echo(f"crucible review: warning: {host} is not a loopback address and the page has no login; "
                   f"anyone who reaches it can change reviews", err=True)
    server = ReviewServer(_lake(root), host=host, port=port, reviewer=reviewer, per_page=per_page)
    try:
        server.serve_forever(lambda url: click.echo(f"crucible review: listening on {url}"))
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    click.echo("crucible review: stopped")


@main.command()
@click.argument("model_ref", required=False, metavar="[MODEL/vN | MODEL@ALIAS]")
@click.option("--model", "model_name", help="The registered model to serve (or give MODEL/vN, MODEL@ALIAS).")
@click.option("--version", "version", type=int, help="Serve this version number.")
@click.option("--stage", help="Serve the newest version in this stage (default: production).")
@click.option("--alias", help="Serve the version this alias points to.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port (printed).")
@click.option("--deployment", help="Deployment name recorded on every inference event (default: the model).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("--max-batch-size", type=int, default=8, show_default=True)
@click.option("--max-wait-ms", type=float, default=5.0, show_default=True,
              help="Longest a batch is held open for more requests.")
@click.option("--inject-fault", help="CHAOS TESTING ONLY, plants a broken version: error, error:RATE, hang, slow:MS.")
@click.option("--no-events", is_flag=True, help="Record no inference events.")
@click.option("--pii-key-env", default="CRUCIBLE_PII_KEY", show_default=True,
              help="Variable holding the key that pseudonymizes user ids (unset: ids are left to the ingestion).")
@click.option("--spill-dir", type=click.Path(path_type=Path),
              help="Where events that cannot be written are kept (default: $CRUCIBLE_HOME/feedback_inbox).")
@click.option("--root", help=_ROOT_HELP)
def serve(model_ref: str | None, model_name: str | None, version: int | None, stage: str | None, alias: str | None, host: str, port: int,
          deployment: str | None, device: str, max_batch_size: int, max_wait_ms: float, inject_fault: str | None,
          no_events: bool, pii_key_env: str, spill_dir: Path | None, root: str | None) -> None:
    """Serve a registered version over an OpenAI-compatible API until SIGTERM/SIGINT.

    Prints `crucible serve: ... listening on URL` once listening; GET /readyz answers 200 once loaded.
    """
    import os

    from crucible.deploy.batching import FaultSpec
    from crucible.deploy.server import ModelServer
    from crucible.lake import default_home
    from crucible.registry.registry import VersionNotFound, parse_model_ref

    refs = [ref for ref in (version, stage, alias) if ref is not None]
    if model_ref is not None:
        if model_name is not None or refs:
            raise click.UsageError(f"{model_ref} names the model and version; drop --model/--version/--stage/--alias")
        try:
            model_name, named = parse_model_ref(model_ref)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="MODEL_REF") from None
        refs = [named]
    if model_name is None:
        raise click.UsageError("name the model: --model NAME, or MODEL/vN or MODEL@ALIAS")
    if len(refs) > 1:
        raise click.UsageError("give at most one of --version, --stage and --alias")
    try:
        fault = FaultSpec.parse(inject_fault)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--inject-fault") from None
    from crucible.feedback.pii import pii_key_from_env

    user_key = pii_key_from_env(pii_key_env) if os.environ.get(pii_key_env, "").strip() else None
    try:
        server = ModelServer.from_registry(
            _lake(root), model_name, refs[0] if refs else "production", device=device, record_events=not no_events,
            user_key=user_key, spill_dir=spill_dir or Path(default_home()) / "feedback_inbox", host=host, port=port,
            deployment=deployment, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, fault=fault)
    except VersionNotFound as error:
        raise click.ClickException(str(error)) from None
    label = f"{model_name} v{server.model_version}" + (f" (fault {fault})" if fault else "")
    server.serve_forever(lambda url: click.echo(f"crucible serve: {label} listening on {url}", nl=True))
    click.echo(f"crucible serve: {label} stopped")


@main.group()
def deploy() -> None:
    """Deployments: roll a registered version out locally, render it for vLLM/TGI/Kubernetes, list, probe, stop."""


def _deploy_dir(workdir: str | None) -> Path:
    from crucible.lake import default_home

    return Path(workdir or f"{default_home()}/deployments")


def _deployment_json(deployment) -> dict:
    return {k: v for k, v in deployment.row().items() if k not in ("history", "config")} | {
        "history": list(deployment.history)}


def _serve_spec(store: DeltaLake, model_name: str, ref: str, serve_args: tuple[str, ...] = ()):
    from crucible.deploy.targets import ServeSpec
    from crucible.registry.registry import VersionNotFound, read_version

    try:
        version = read_version(store, model_name, ref)
    except VersionNotFound as error:
        raise click.ClickException(str(error)) from None
    return ServeSpec.from_version(version, lake_root=str(store.root), extra_args=serve_args)


@deploy.command("up")
@click.option("--model", "model_name", required=True, help="The registered model.")
@click.option("--ref", default="production", show_default=True, help="Version number, stage, alias or latest.")
@click.option("--strategy", type=click.Choice(["replace", "blue_green", "canary", "ab"]), default="canary",
              show_default=True)
@click.option("--steps", default="10,30,50,100", show_default=True, help="Canary traffic percents.")
@click.option("--hold-s", type=float, default=60.0, show_default=True, help="Seconds each step is watched.")
@click.option("--max-error-rate", type=float, default=0.05, show_default=True)
@click.option("--max-p99-ms", type=float, default=5000.0, show_default=True)
@click.option("--candidate-timeout-s", type=float, default=10.0, show_default=True)
@click.option("--serve-arg", "serve_args", multiple=True, help="Extra `crucible serve` argument (repeatable).")
@click.option("--workdir", help="Logs and router state (default: $CRUCIBLE_HOME/deployments).")
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def deploy_up(model_name: str, ref: str, strategy: str, steps: str, hold_s: float, max_error_rate: float,
              max_p99_ms: float, candidate_timeout_s: float, serve_args: tuple[str, ...], workdir: str | None,
              root: str | None, as_json: bool) -> None:
    """Roll a registered version out on this machine behind the model's router; rolls back by itself."""
    from crucible.deploy.deployments import deploy_local
    from crucible.deploy.strategies import Thresholds, strategy_from_config
    from crucible.deploy.targets import LocalTarget

    store = _lake(root)
    try:
        plan = strategy_from_config(strategy, canary_steps=[float(p) for p in steps.split(",")], hold_s=hold_s)
        result = deploy_local(store, _serve_spec(store, model_name, ref, serve_args),
                              target=LocalTarget(_deploy_dir(workdir) / "local"), strategy=plan,
                              thresholds=Thresholds(max_error_rate, max_p99_ms),
                              candidate_timeout_s=candidate_timeout_s,
                              on_event=None if as_json else click.echo)
    except (ValueError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        _print_json(_deployment_json(result))
    else:
        click.echo(f"{result.deployment_id} {result.model_name} v{result.model_version}: {result.state} "
                   f"({result.reason}); endpoint {result.endpoint}")
    if result.state == "failed":
        sys.exit(1)


@deploy.command("render")
@click.option("--model", "model_name", required=True, help="The registered model.")
@click.option("--ref", default="production", show_default=True, help="Version number, stage, alias or latest.")
@click.option("--target", type=click.Choice(["kubernetes", "vllm", "tgi"]), required=True)
@click.option("--gpus", type=int, default=1, show_default=True)
@click.option("--image", default="crucible:latest", show_default=True, help="kubernetes: container image.")
@click.option("--workdir", help="Where the rendered file goes (default: $CRUCIBLE_HOME/deployments).")
@click.option("--root", help=_ROOT_HELP)
def deploy_render(model_name: str, ref: str, target: str, gpus: int, image: str, workdir: str | None,
                  root: str | None) -> None:
    """Render and validate the launch command or manifests of a version; print them and where they were written."""
    from crucible.deploy.deployments import render_deployment
    from crucible.deploy.targets import TargetConfigError

    store = _lake(root)
    options = {"kubernetes": {"gpus": gpus, "image": image}, "vllm": {"tensor_parallel_size": gpus},
               "tgi": {"num_shard": gpus}}[target]
    try:
        record, path = render_deployment(store, _serve_spec(store, model_name, ref), target,
                                         _deploy_dir(workdir) / target, **options)
    except TargetConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(path.read_text(), nl=False)
    click.echo(f"# {record.deployment_id}: {record.reason}", err=True)


@deploy.command("list")
@click.option("--state", "states", multiple=True, help="Only deployments in this state (repeatable).")
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def deploy_list(states: tuple[str, ...], root: str | None, as_json: bool) -> None:
    """Deployments, oldest first."""
    from crucible.deploy.deployments import list_deployments

    rows = list_deployments(_lake(root), states=states or None)
    if as_json:
        _print_json([_deployment_json(d) for d in rows])
        return
    table = Table(title="deployments")
    for column in ("id", "model", "target", "strategy", "state", "traffic %", "endpoint", "reason"):
        table.add_column(column)
    for d in rows:
        _plain_row(table, d.deployment_id, f"{d.model_name} v{d.model_version}", d.target, d.strategy, d.state,
                   f"{d.traffic_percent:g}", d.endpoint or "", d.reason or "")
    Console(width=200).print(table)


@deploy.command("probe")
@click.option("--root", help=_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def deploy_probe(root: str | None, as_json: bool) -> None:
    """Probe every live local deployment once and write its deployment/health row."""
    from crucible.deploy.health import probe_live_deployments

    rows = probe_live_deployments(_lake(root))
    if as_json:
        _print_json(rows.to_dict("records"))
        return
    for r in rows.itertuples():
        click.echo(f"{r.deployment_id} {r.url}: live={r.live} ready={r.ready} latency={r.latency_ms} ms"
                   + (f" ({r.error})" if isinstance(r.error, str) else ""))


@deploy.command("stop")
@click.argument("deployment_id")
@click.option("--keep-router", is_flag=True, help="Leave the model's router running.")
@click.option("--workdir", help="Logs and router state (default: $CRUCIBLE_HOME/deployments).")
@click.option("--root", help=_ROOT_HELP)
def deploy_stop(deployment_id: str, keep_router: bool, workdir: str | None, root: str | None) -> None:
    """Stop a local deployment's server (and its model's router) and mark it terminated."""
    from crucible.deploy.deployments import DeploymentNotFound, IllegalTransition, terminate_local
    from crucible.deploy.targets import LocalTarget

    try:
        result = terminate_local(_lake(root), deployment_id, LocalTarget(_deploy_dir(workdir) / "local"),
                                 stop_router=not keep_router)
    except (DeploymentNotFound, IllegalTransition) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{result.deployment_id}: {result.state}")
