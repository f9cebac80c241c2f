"""The model registry: register versions with their artifacts and lineage, move them through stages, name them
with aliases, walk their lineage, all checked against the acting principal's roles and written to the audit log.

How a registration becomes visible as one unit: its artifact rows and lineage edges are written first,
tagged with a fresh registration id, and the version row (which carries that id) is written last, by a
read-modify-write that also takes the version number. Every read keeps only artifacts and edges whose
registration id has a version row, so a registration killed before that row is invisible, and its
leftovers are deleted by a later registration of the model once they are older than ``orphan_grace``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from crucible.lake import CommitContentionError, DeltaLake
from crucible.registry import access, audit, lineage
from crucible.registry.access import ACTION_ROLES, AccessDenied, Principal
from crucible.registry.audit import AuditEvent
from crucible.registry.versions import (
    MODEL_NAME,
    REGISTRATION_STAGES,
    WEIGHTS_ARTIFACTS,
    artifact_sha256,
    artifact_size,
    check_alias,
    check_transition,
    next_version,
    normalize_stage,
    parse_version_ref,
)
from schemas import ALIASES, ARTIFACTS, LINEAGE_EDGES, MODEL_VERSIONS, MODELS
from schemas.registry import ARTIFACT_TYPES, RELATIONSHIPS, STAGES

if TYPE_CHECKING:
    from crucible.registry.storage import ArtifactStore


class VersionNotFound(LookupError):
    """A model, version or alias the registry does not hold."""


@dataclass(frozen=True)
class Artifact:
    artifact_type: str
    uri: str
    sha256: str
    size: int
    backend: str


@dataclass(frozen=True)
class ModelVersion:
    """A committed version as readers see it; ``duplicate_of`` is set when a registration found these weights
    already registered (and wrote nothing)."""

    model_name: str
    version: int
    stage: str
    sha256: str
    artifact_uri: str
    metrics: dict[str, float]
    tags: tuple[str, ...]
    training_run_id: str
    dataset: str
    dataset_version: int
    created_at: pd.Timestamp
    created_by: str | None = None
    recipe_name: str | None = None
    recipe_hash: str | None = None
    base_model: str | None = None
    training_config: dict[str, Any] = field(default_factory=dict)
    parent_version: int | None = None
    registration_id: str | None = None
    artifacts: tuple[Artifact, ...] = ()
    aliases: tuple[str, ...] = ()
    duplicate_of: int | None = None

    @property
    def node(self) -> str:
        return lineage.model_node(self.model_name, self.version)

    def artifact(self, artifact_type: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.artifact_type == artifact_type:
                return artifact
        raise VersionNotFound(f"{self.model_name} v{self.version} has no {artifact_type} artifact; it has "
                              f"{', '.join(a.artifact_type for a in self.artifacts) or 'none'}")


# -- reads (no principal needed: every role may read) ---------------------------------------------


def _none(value: Any) -> Any:
    return None if value is None or (not isinstance(value, list | dict) and pd.isna(value)) else value


def _with_all_columns(rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``rows`` with the columns a table written by older code lacks until its next write, as nulls."""
    return rows.assign(**{column: None for column in columns if column not in rows.columns})


def committed_versions(lake: DeltaLake, model_name: str | None = None, include_deleted: bool = False) -> pd.DataFrame:
    """Version rows (each one a committed registration), stages of old rows renamed, sorted by model and version."""
    rows = _with_all_columns(lake.read(MODEL_VERSIONS, where={"model_name": model_name} if model_name else None),
                             MODEL_VERSIONS.columns)
    if not include_deleted:
        rows = rows.loc[rows["deleted_at"].isna()]
    rows = rows.assign(stage=rows["stage"].map(normalize_stage))
    return rows.sort_values(["model_name", "version"]).reset_index(drop=True)


def registration_ids(versions: pd.DataFrame) -> set[str]:
    return set(versions["registration_id"].dropna())


def lineage_edges(lake: DeltaLake) -> pd.DataFrame:
    """The visible lineage graph: edges added on their own and those of committed registrations."""
    versions = committed_versions(lake, include_deleted=True)
    return lineage.visible_edges(_with_all_columns(lake.read(LINEAGE_EDGES), LINEAGE_EDGES.columns),
                                 registration_ids(versions))


def _version_from_row(row: Mapping[str, Any], artifacts: pd.DataFrame, aliases: pd.DataFrame) -> ModelVersion:
    registration = _none(row.get("registration_id"))
    mine = artifacts.loc[(artifacts["registration_id"] == registration)
                         & (artifacts["version"] == row["version"])] if registration else artifacts.iloc[0:0]
    names = aliases.loc[(aliases["model_name"] == row["model_name"]) & (aliases["version"] == row["version"])]
    parent = _none(row.get("parent_version"))
    return ModelVersion(
        model_name=row["model_name"], version=int(row["version"]), stage=normalize_stage(row["stage"]),
        sha256=row["sha256"], artifact_uri=row["artifact_uri"], metrics=json.loads(row["metrics"] or "{}"),
        tags=tuple(json.loads(_none(row.get("tags")) or "[]")), training_run_id=row["training_run_id"],
        dataset=row["dataset"], dataset_version=int(row["dataset_version"]), created_at=pd.Timestamp(row["created_at"]),
        created_by=_none(row.get("created_by")), recipe_name=_none(row.get("recipe_name")),
        recipe_hash=_none(row.get("recipe_hash")), base_model=_none(row.get("base_model")),
        training_config=json.loads(_none(row.get("training_config")) or "{}"),
        parent_version=None if parent is None else int(parent), registration_id=registration,
        artifacts=tuple(Artifact(a.artifact_type, a.uri, a.sha256, int(a.size), a.backend)
                        for a in mine.sort_values("artifact_type").itertuples()),
        aliases=tuple(sorted(names["alias"])),
    )


def read_version(lake: DeltaLake, model_name: str, ref: int | str) -> ModelVersion:
    """Version ``ref`` of ``model_name``: a number (``3``, ``"v3"``), an alias, ``latest`` or a stage name (the
    newest version in it)."""
    versions = committed_versions(lake, model_name)
    if versions.empty:
        raise VersionNotFound(f"model {model_name!r} has no registered versions")
    aliases = lake.read(ALIASES, where={"model_name": model_name})
    number = parse_version_ref(ref)
    if number is None:
        name = str(ref)
        if name == "latest":
            number = int(versions["version"].max())
        elif name in STAGES:
            in_stage = versions.loc[versions["stage"] == name, "version"]
            if in_stage.empty:
                raise VersionNotFound(f"model {model_name!r} has no version in {name}")
            number = int(in_stage.max())
        else:
            named = aliases.loc[aliases["alias"] == name]
            if named.empty:
                known = ", ".join(sorted(aliases["alias"])) or "none"
                raise VersionNotFound(f"model {model_name!r} has no alias {name!r} (aliases: {known})")
            number = int(named["version"].iloc[0])
    row = versions.loc[versions["version"] == number]
    if row.empty:
        raise VersionNotFound(f"model {model_name!r} has no version {number} (versions: "
                              f"{', '.join(str(v) for v in versions['version'])})")
    artifacts = lake.read(ARTIFACTS, where={"model_name": model_name})
    return _version_from_row(row.iloc[0].to_dict(), artifacts, aliases)


def parse_model_ref(text: str) -> tuple[str, str]:
    """``"tiny-gpt@champion"`` -> ("tiny-gpt", "champion"); ``"tiny-gpt/v3"`` -> ("tiny-gpt", "3")."""
    for separator in ("@", "/"):
        name, found, ref = text.partition(separator)
        if found and name and ref:
            return name, ref
    raise ValueError(f"model reference {text!r}: expected <model>@<alias> or <model>/v<N>")


# -- the registry ---------------------------------------------------------------------------------


class Registry:
    """The registry as one principal sees it: every change is checked against its roles and audited."""

    def __init__(self, lake: DeltaLake, principal: Principal, store: ArtifactStore | None = None,
                 orphan_grace: dt.timedelta = dt.timedelta(hours=1)) -> None:
        self.lake, self.principal, self.store, self.orphan_grace = lake, principal, store, orphan_grace

    @classmethod
    def for_service(cls, lake: DeltaLake, token_env: str = "CRUCIBLE_REGISTRY_TOKEN",
                    store: ArtifactStore | None = None) -> Registry:
        """The registry as the service principal whose token is in ``token_env`` (Dagster runs)."""
        return cls(lake, access.principal_from_env(lake, token_env), store)

    @classmethod
    def from_token(cls, lake: DeltaLake, token: str, store: ArtifactStore | None = None) -> Registry:
        return cls(lake, access.authenticate(lake, token), store)

    # -- access ------------------------------------------------------------------------------

    def _refuse(self, denied: AccessDenied, action: str, model_name: str | None, version: int | None,
                details: dict[str, Any]) -> None:
        audit.record(self.lake, self.principal.name, action, model_name, version, details, allowed=False,
                     reason=denied.reason)
        raise denied

    def _authorize(self, action: str, what: str, model_name: str | None = None, version: int | None = None,
                   details: dict[str, Any] | None = None) -> None:
        """Return when the principal may do ``action``, else audit the refusal and raise :class:`AccessDenied`."""
        if not self.principal.may(action):
            denied = AccessDenied(self.principal.name, what, ACTION_ROLES[action], self.principal.roles)
            self._refuse(denied, action, model_name, version, details or {})

    # -- reads -------------------------------------------------------------------------------

    def get(self, model_name: str, ref: int | str = "latest") -> ModelVersion:
        return read_version(self.lake, model_name, ref)

    def resolve(self, text: str) -> ModelVersion:
        """``model@alias`` (or ``model/v3``, ``model@production``) to its version."""
        return self.get(*parse_model_ref(text))

    def list_versions(self, model_name: str | None = None) -> pd.DataFrame:
        """Committed versions, one row each (the frame the query language filters)."""
        return committed_versions(self.lake, model_name)

    def models(self) -> pd.DataFrame:
        return self.lake.read(MODELS).sort_values("model_name").reset_index(drop=True)

    def aliases(self, model_name: str | None = None) -> pd.DataFrame:
        rows = self.lake.read(ALIASES, where={"model_name": model_name} if model_name else None)
        return rows.sort_values(["model_name", "alias"]).reset_index(drop=True)

    def ancestors(self, node: str | ModelVersion, depth: int | None = None) -> list[lineage.LineageHop]:
        """Every edge upstream of ``node`` (models, datasets, feedback windows, runs), nearest first."""
        return lineage.walk(lineage_edges(self.lake), self._node(node), "ancestors", depth)

    def descendants(self, node: str | ModelVersion, depth: int | None = None) -> list[lineage.LineageHop]:
        return lineage.walk(lineage_edges(self.lake), self._node(node), "descendants", depth)

    def audit_log(self, model_name: str | None = None, action: str | None = None,
                  since: pd.Timestamp | None = None) -> list[AuditEvent]:
        return audit.read_events(self.lake, model_name, action, since)

    @staticmethod
    def _node(node: str | ModelVersion) -> str:
        return node.node if isinstance(node, ModelVersion) else lineage.check_node(node)

    # -- registration ------------------------------------------------------------------------

    def register(self, model_name: str, artifacts: Mapping[str, Artifact | str | Path], *, training_run_id: str,
                 dataset: str, dataset_version: int, metrics: Mapping[str, float] | None = None,
                 tags: Iterable[str] = (), recipe_name: str | None = None, recipe_hash: str | None = None,
                 base_model: str | None = None, training_config: Mapping[str, Any] | None = None,
                 parent_version: int | None = None, derived_by: str = "fine_tuned_from",
                 lineage_from: Iterable[tuple[str, str]] = (), stage: str = "experiment",
                 description: str | None = None, owner: str | None = None) -> ModelVersion:
        """Register the next version of ``model_name``; its row, artifacts and lineage appear together.

        ``artifacts`` maps a type (checkpoint, tokenizer, config, merged_weights, lora_adapter, gguf) to a
        local path (uploaded through the artifact store when there is one) or a stored :class:`Artifact`;
        one must hold weights. Weights already registered (same sha256) return the existing version with
        ``duplicate_of`` set and write nothing. Lineage: the run ``produced`` it, it was ``trained_on``
        ``dataset@v<dataset_version>``, it was ``derived_by`` (fine_tuned_from, dpo_trained_from, ...)
        from ``parent_version`` of this model or else from ``base_model``; ``lineage_from`` adds
        (source node, relationship) pairs, e.g. ``("feedback:2026-11-01..2026-11-07", "curated_from")``.
        """
        self._authorize("register", f"register a version of {model_name!r}", model_name)
        if not MODEL_NAME.match(model_name):
            raise ValueError(f"model name {model_name!r}: expected letters, digits, '.', '_' or '-' (starting with a "
                             f"letter or digit, at most 128 characters)")
        if stage not in REGISTRATION_STAGES:
            raise ValueError(f"{model_name}: a version is registered in {' or '.join(REGISTRATION_STAGES)}, not "
                             f"{stage!r}; promote it with transition() afterwards")
        unknown = sorted(set(artifacts) - set(ARTIFACT_TYPES))
        if unknown:
            raise ValueError(f"{model_name}: unknown artifact types {unknown}; expected {', '.join(ARTIFACT_TYPES)}")
        weights_type = next((t for t in WEIGHTS_ARTIFACTS if t in artifacts), None)
        if weights_type is None:
            raise ValueError(f"{model_name}: no weights among the artifacts {sorted(artifacts)}; give one of "
                             f"{', '.join(WEIGHTS_ARTIFACTS)}")
        versions = committed_versions(self.lake, model_name)
        if parent_version is not None and parent_version not in set(versions["version"]):
            raise VersionNotFound(f"{model_name}: parent version {parent_version} is not registered")
        sources = self._lineage_sources(model_name, training_run_id, dataset, dataset_version, parent_version,
                                        base_model, derived_by, lineage_from)

        weights = artifacts[weights_type]
        local_sha = None if isinstance(weights, Artifact) else artifact_sha256(weights)
        duplicate = self._duplicate(versions, weights.sha256 if isinstance(weights, Artifact) else local_sha)
        if duplicate is not None:
            return replace(self.get(model_name, duplicate), duplicate_of=duplicate)

        registration_id = uuid.uuid4().hex
        stored = {kind: self._store_artifact(model_name, registration_id, kind, value)
                  for kind, value in artifacts.items()}
        primary = stored[weights_type]
        self._ensure_model(model_name, description, owner)
        now = pd.Timestamp.now(tz="UTC")
        row = {
            "model_name": model_name, "artifact_uri": primary.uri, "sha256": primary.sha256,
            "metrics": json.dumps(dict(metrics or {}), sort_keys=True), "training_run_id": training_run_id,
            "dataset": dataset, "dataset_version": int(dataset_version), "stage": stage, "created_at": now,
            "recipe_name": recipe_name, "recipe_hash": recipe_hash, "base_model": base_model,
            "training_config": json.dumps(dict(training_config or {}), sort_keys=True, default=str),
            "tags": json.dumps(sorted(set(tags))), "parent_version": parent_version,
            "created_by": self.principal.name, "registration_id": registration_id, "updated_at": now,
            "deleted_at": None,
        }
        # A first guess; the commit itself checks it against every row, deleted versions included.
        numbers = committed_versions(self.lake, model_name, include_deleted=True)["version"].astype(int).tolist()
        version, duplicate = self._commit_registration(row, stored, sources, now, next_version(numbers))
        if duplicate:
            return replace(self.get(model_name, version), duplicate_of=version)
        audit.record(self.lake, self.principal.name, "register", model_name, version,
                     {"registration_id": registration_id, "sha256": primary.sha256, "stage": stage,
                      "artifacts": sorted(stored)})
        self.clean_orphans(model_name)
        return self.get(model_name, version)

    def _lineage_sources(self, model_name: str, training_run_id: str, dataset: str, dataset_version: int,
                         parent_version: int | None, base_model: str | None, derived_by: str,
                         lineage_from: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        pairs = [(lineage.run_node(training_run_id), "produced"),
                 (lineage.dataset_node(dataset, dataset_version), "trained_on")]
        if parent_version is not None:
            pairs.append((lineage.model_node(model_name, parent_version), derived_by))
        elif base_model:
            # A registered base is named by its node id (model:name/v2); anything else is outside the registry.
            pairs.append((base_model if base_model.startswith("model:") else f"base:{base_model}", derived_by))
        pairs.extend(lineage_from)
        checked: list[tuple[str, str]] = []
        for source, relation in pairs:
            lineage.check_node(source)
            if relation not in RELATIONSHIPS:
                raise ValueError(f"{model_name}: unknown lineage relationship {relation!r}; expected one of "
                                 f"{', '.join(RELATIONSHIPS)}")
            self._require_node(source)
            if (source, relation) not in checked:
                checked.append((source, relation))
        return checked

    def _require_node(self, node: str) -> None:
        """A ``model:`` node must be a committed version; other kinds live outside the registry."""
        parsed = lineage.parse_model_node(node)
        if parsed is not None:
            versions = committed_versions(self.lake, parsed[0], include_deleted=True)
            if parsed[1] not in set(versions["version"]):
                raise VersionNotFound(f"lineage node {node}: model {parsed[0]!r} has no version {parsed[1]}")

    @staticmethod
    def _duplicate(versions: pd.DataFrame, sha256: str | None) -> int | None:
        same = versions.loc[versions["sha256"] == sha256, "version"] if sha256 else []
        return int(min(same)) if len(same) else None

    def _store_artifact(self, model_name: str, registration_id: str, kind: str,
                        value: Artifact | str | Path) -> Artifact:
        if isinstance(value, Artifact):
            if value.artifact_type != kind:
                raise ValueError(f"{model_name}: artifact given as {kind} says it is a {value.artifact_type}")
            return value
        path = Path(value)
        if not path.exists():
            raise FileNotFoundError(f"{model_name}: {kind} artifact {path} does not exist")
        if self.store is None:
            return Artifact(kind, str(path.resolve()), artifact_sha256(path), artifact_size(path), "local")
        ref = self.store.put(path, f"{model_name}/{registration_id}/{kind}")
        return Artifact(kind, ref.uri, ref.sha256, int(ref.size), ref.backend)

    def _ensure_model(self, model_name: str, description: str | None, owner: str | None) -> None:
        def insert(rows: pd.DataFrame) -> pd.DataFrame:
            if len(rows):
                stored = rows.iloc[0]
                if (description is None or description == stored["description"]) and \
                        (owner is None or owner == stored["owner"]):
                    return rows.iloc[0:0]
                return rows.assign(description=description or stored["description"], owner=owner or stored["owner"])
            return pd.DataFrame([{"model_name": model_name, "description": description,
                                  "owner": owner or self.principal.name, "created_at": pd.Timestamp.now(tz="UTC")}])

        self.lake.read_modify_write(MODELS, {"model_name": model_name}, insert)

    def _stage(self, row: dict[str, Any], version: int, artifacts: Mapping[str, Artifact],
               sources: list[tuple[str, str]], now: pd.Timestamp) -> None:
        """Write the artifact rows and lineage edges of a registration (invisible until its version row)."""
        registration_id, model_name = row["registration_id"], row["model_name"]
        self.lake.replace_where(ARTIFACTS, pd.DataFrame([
            {"registration_id": registration_id, "model_name": model_name, "version": version,
             "artifact_type": a.artifact_type, "backend": a.backend, "uri": a.uri, "sha256": a.sha256,
             "size": a.size, "created_at": now} for a in artifacts.values()]), {"registration_id": registration_id})
        target = lineage.model_node(model_name, version)
        self.lake.replace_where(LINEAGE_EDGES, pd.DataFrame([
            {"source": source, "target": target, "relation": relation, "registration_id": registration_id,
             "created_by": self.principal.name, "created_at": now} for source, relation in sources]),
            {"registration_id": registration_id})

    def _commit_registration(self, row: dict[str, Any], artifacts: Mapping[str, Artifact],
                             sources: list[tuple[str, str]], now: pd.Timestamp,
                             version: int) -> tuple[int, bool]:
        """Stage at ``version`` and write the version row, renumbering while other registrations take numbers.

        The version row is written by a read-modify-write on the model's rows: it goes in only when
        ``version`` is still the next free number and these weights are still unregistered, both judged
        on the rows the commit is made against. Otherwise the staged rows move to the next free number and
        the commit is tried again. Returns (version, False), or (its version, True) when a registration of
        the same weights committed first.
        """
        deadline = time.monotonic() + self.lake.commit_deadline_s
        attempts = 0
        outcome: dict[str, int] = {}
        while True:
            self._stage(row, version, artifacts, sources, now)

            def claim(rows: pd.DataFrame, version: int = version) -> pd.DataFrame:
                outcome.clear()
                live = rows.loc[rows["deleted_at"].isna()]
                same = live.loc[live["sha256"] == row["sha256"], "version"]
                if len(same):
                    outcome["duplicate"] = int(same.min())
                    return rows.iloc[0:0]
                free = next_version(rows["version"].astype(int).tolist())
                if free != version:
                    outcome["next"] = free
                    return rows.iloc[0:0]
                return pd.DataFrame([{**row, "version": version}])

            self.lake.read_modify_write(MODEL_VERSIONS, {"model_name": row["model_name"]}, claim)
            if "duplicate" in outcome:
                self._drop_staged([row["registration_id"]])
                return outcome["duplicate"], True
            if "next" not in outcome:
                return version, False
            version, attempts = outcome["next"], attempts + 1
            if time.monotonic() > deadline:
                self._drop_staged([row["registration_id"]])
                raise CommitContentionError(
                    f"{row['model_name']}: other registrations kept taking the next version number ({attempts} "
                    f"attempts in {self.lake.commit_deadline_s:.0f}s); register again")

    def _drop_staged(self, registrations: list[str]) -> None:
        # Edges first: artifacts are how a model's leftovers are found, so they must go last.
        self.lake.replace_where(LINEAGE_EDGES, pd.DataFrame(columns=LINEAGE_EDGES.columns),
                                {"registration_id": registrations})
        self.lake.replace_where(ARTIFACTS, pd.DataFrame(columns=ARTIFACTS.columns), {"registration_id": registrations})

    def clean_orphans(self, model_name: str, older_than: dt.timedelta | None = None) -> list[str]:
        """Delete the staged rows of registrations of ``model_name`` that never committed and are older than
        ``older_than`` (default ``orphan_grace``: younger ones may still be on their way). Returns their ids."""
        cutoff = pd.Timestamp.now(tz="UTC") - (self.orphan_grace if older_than is None else older_than)
        committed = registration_ids(committed_versions(self.lake, model_name, include_deleted=True))
        staged = self.lake.read(ARTIFACTS, where={"model_name": model_name})
        stale = staged.loc[~staged["registration_id"].isin(committed) & (staged["created_at"] <= cutoff)]
        orphans = sorted(set(stale["registration_id"]))
        if orphans:
            self._drop_staged(orphans)
        return orphans

    # -- stages ------------------------------------------------------------------------------

    def transition(self, model_name: str, version: int, stage: str) -> AuditEvent:
        """Move ``version`` to ``stage`` (see ``versions.TRANSITIONS``) and return the audit event.

        Promoting to production archives the version that was in production in the same commit, so a
        model never has two; the ``promote`` event is what a sensor acts on. Needs trainer, approver to
        enter production, admin to leave it. The stage it moves from is read in the commit itself.
        """
        moved: list[tuple[int, str, str]] = []
        refused: list[tuple[AccessDenied, str]] = []

        def move(rows: pd.DataFrame) -> pd.DataFrame:
            moved.clear()
            refused.clear()
            rows = rows.loc[rows["deleted_at"].isna()].assign(stage=rows["stage"].map(normalize_stage))
            current = rows.loc[rows["version"] == version]
            if current.empty:
                raise VersionNotFound(f"model {model_name!r} has no version {version}")
            source = current["stage"].iloc[0]
            check_transition(model_name, version, source, stage)
            action = "promote" if stage == "production" else "leave_production" if source == "production" \
                else "transition"
            if not self.principal.may(action):
                refused.append((AccessDenied(self.principal.name, f"move {model_name} v{version} from {source} to "
                                             f"{stage}", ACTION_ROLES[action], self.principal.roles), action))
                return rows.iloc[0:0]
            now = pd.Timestamp.now(tz="UTC")
            changed = current.assign(stage=stage, updated_at=now)
            moved.append((version, source, stage))
            if stage == "production":
                previous = rows.loc[(rows["stage"] == "production") & (rows["version"] != version)]
                moved.extend((int(v), "production", "archived") for v in previous["version"])
                changed = pd.concat([changed, previous.assign(stage="archived", updated_at=now)])
            return changed

        self.lake.read_modify_write(MODEL_VERSIONS, {"model_name": model_name}, move)
        if refused:
            denied, action = refused[0]
            self._refuse(denied, action, model_name, version, {"to": stage})
        (_, source, _), *archived = moved
        details = {"from": source, "to": stage}
        if stage == "production":
            details["archived"] = [v for v, _, _ in archived]
        event = AuditEvent("promote" if stage == "production" else "transition", self.principal.name, model_name,
                           version, details)
        caused = [AuditEvent("transition", self.principal.name, model_name, v, {"from": a, "to": b,
                             "cause": f"v{version} promoted to production"}) for v, a, b in archived]
        audit.write_events(self.lake, [event, *caused])
        return event

    def delete(self, model_name: str, version: int) -> AuditEvent:
        """Hide ``version`` from reads (its number is never reused, its lineage stays) and drop its aliases.

        Needs trainer, or admin when the version is in production.
        """
        refused: list[AccessDenied] = []

        def mark(rows: pd.DataFrame) -> pd.DataFrame:
            refused.clear()
            current = rows.loc[(rows["version"] == version) & rows["deleted_at"].isna()]
            if current.empty:
                raise VersionNotFound(f"model {model_name!r} has no version {version}")
            action = "delete_production" if normalize_stage(current["stage"].iloc[0]) == "production" else "delete"
            if not self.principal.may(action):
                refused.append(AccessDenied(self.principal.name, f"delete {model_name} v{version} (in production)",
                                            ACTION_ROLES[action], self.principal.roles))
                return rows.iloc[0:0]
            now = pd.Timestamp.now(tz="UTC")
            return current.assign(deleted_at=now, updated_at=now)

        self.lake.read_modify_write(MODEL_VERSIONS, {"model_name": model_name}, mark)
        if refused:
            self._refuse(refused[0], "delete", model_name, version, {})
        aliases = self.lake.read(ALIASES, where={"model_name": model_name})
        dropped = sorted(aliases.loc[aliases["version"] == version, "alias"])
        if dropped:
            self.lake.replace_where(ALIASES, pd.DataFrame(columns=ALIASES.columns),
                                    {"model_name": model_name, "alias": dropped})
        return audit.record(self.lake, self.principal.name, "delete", model_name, version,
                            {"aliases_dropped": dropped})

    # -- aliases -----------------------------------------------------------------------------

    def set_alias(self, model_name: str, alias: str, version: int) -> AuditEvent:
        """Point ``alias`` at ``version`` (moving it when it pointed elsewhere)."""
        self._authorize("set_alias", f"set alias {model_name}@{alias}", model_name, version, {"alias": alias})
        check_alias(alias)
        self.get(model_name, int(version))
        before: dict[str, int | None] = {}

        def point(rows: pd.DataFrame) -> pd.DataFrame:
            before["version"] = int(rows["version"].iloc[0]) if len(rows) else None
            return pd.DataFrame([{"model_name": model_name, "alias": alias, "version": int(version),
                                  "updated_by": self.principal.name, "updated_at": pd.Timestamp.now(tz="UTC")}])

        self.lake.read_modify_write(ALIASES, {"model_name": model_name, "alias": alias}, point)
        return audit.record(self.lake, self.principal.name, "set_alias", model_name, int(version),
                            {"alias": alias, "from": before["version"], "to": int(version)})

    def delete_alias(self, model_name: str, alias: str) -> AuditEvent:
        self._authorize("delete_alias", f"delete alias {model_name}@{alias}", model_name, None, {"alias": alias})
        rows = self.lake.read(ALIASES, where={"model_name": model_name, "alias": alias})
        if rows.empty:
            raise VersionNotFound(f"model {model_name!r} has no alias {alias!r}")
        self.lake.replace_where(ALIASES, pd.DataFrame(columns=ALIASES.columns),
                                {"model_name": model_name, "alias": alias})
        return audit.record(self.lake, self.principal.name, "delete_alias", model_name, int(rows["version"].iloc[0]),
                            {"alias": alias})

    # -- lineage -----------------------------------------------------------------------------

    def add_edge(self, source: str | ModelVersion, target: str | ModelVersion, relation: str) -> AuditEvent:
        """Add ``source -[relation]-> target`` (e.g. a version ``evaluated_on`` a dataset); an edge that would
        close a cycle is refused with the cycle it would make."""
        source, target = self._node(source), self._node(target)
        self._authorize("add_edge", f"add lineage edge {source} -> {target}", details={"relation": relation})
        if relation not in RELATIONSHIPS:
            raise ValueError(f"unknown lineage relationship {relation!r}; expected one of {', '.join(RELATIONSHIPS)}")
        for node in (source, target):
            self._require_node(node)
        committed = registration_ids(committed_versions(self.lake, include_deleted=True))

        def insert(rows: pd.DataFrame) -> pd.DataFrame:
            edges = lineage.visible_edges(rows, committed)
            if ((edges["source"] == source) & (edges["target"] == target) & (edges["relation"] == relation)).any():
                return rows.iloc[0:0]
            lineage.check_acyclic(edges, source, target, relation)
            return pd.DataFrame([{"source": source, "target": target, "relation": relation, "registration_id": None,
                                  "created_by": self.principal.name, "created_at": pd.Timestamp.now(tz="UTC")}])

        self.lake.read_modify_write(LINEAGE_EDGES, None, insert)
        parsed = lineage.parse_model_node(target) or lineage.parse_model_node(source)
        return audit.record(self.lake, self.principal.name, "add_edge", parsed[0] if parsed else None,
                            parsed[1] if parsed else None, {"source": source, "target": target, "relation": relation})

