"""Model versions: content hashes of artifacts, the next version number, and the stages a version moves through."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from schemas.registry import STAGES

# Which stage a version may move to from each stage. Leaving production is only by archiving it or
# sending it back to staging; an archived version comes back through staging, never straight to production.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "experiment": ("staging", "archived"),
    "staging": ("production", "experiment", "archived"),
    "production": ("archived", "staging"),
    "archived": ("staging",),
}
# Stages a version may be registered in; production is reached only by a transition (an approver's).
REGISTRATION_STAGES = ("experiment", "staging")
# Rows written before the stages were renamed.
LEGACY_STAGES = {"candidate": "experiment"}
# Names that ``get`` resolves itself, so no alias may take them.
RESERVED_REFS = ("latest", *STAGES)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
WEIGHTS_ARTIFACTS = ("checkpoint", "merged_weights", "lora_adapter", "gguf")


class InvalidTransition(ValueError):
    """A stage change the life cycle does not allow."""


def artifact_sha256(path: str | Path) -> str:
    """sha256 over a file, or over a folder's files (relative names and contents, sorted by name)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"artifact {path} holds no files")
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def artifact_size(path: str | Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def next_version(existing_versions: list[int]) -> int:
    return max(existing_versions, default=0) + 1


def normalize_stage(stage: str) -> str:
    return LEGACY_STAGES.get(stage, stage)


def check_transition(model_name: str, version: int, current: str, stage: str) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> stage`` is in :data:`TRANSITIONS`."""
    if stage not in STAGES:
        raise InvalidTransition(f"{model_name} v{version}: unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    if stage == current:
        raise InvalidTransition(f"{model_name} v{version} is already in {stage}")
    if stage not in TRANSITIONS[current]:
        raise InvalidTransition(f"{model_name} v{version}: cannot move from {current} to {stage}; from {current} "
                                f"it can move to {' or '.join(TRANSITIONS[current])}")


def check_alias(alias: str) -> str:
    if not ALIAS_PATTERN.match(alias):
        raise ValueError(f"alias {alias!r}: expected lower-case letters, digits, '-' or '_', starting with a letter "
                         f"(at most 64 characters)")
    if alias in RESERVED_REFS:
        raise ValueError(f"alias {alias!r} is reserved ({', '.join(RESERVED_REFS)} resolve by themselves); pick "
                         f"another name")
    return alias


def parse_version_ref(ref: int | str) -> int | None:
    """The version number in ``3``, ``"3"`` or ``"v3"``; None for a name (an alias, latest, a stage)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref
    match = re.fullmatch(r"v?([0-9]+)", str(ref).strip())
    return int(match[1]) if match else None
