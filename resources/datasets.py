"""Where datasets come from: the benchmarks shipped with Crucible, and a drop folder for users' own."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import dagster as dg
import yaml
from pydantic import Field

from crucible.data.loaders import BUILTIN_DATASETS, FieldMapping, LoadResult, load_benchmark, load_file
from crucible.data.loaders.base import DATA_FILE_SUFFIXES
from crucible.data.remote import SOURCE_SUFFIX, RemoteSourceError, load_remote, read_source_file
from resources.lake import default_home

# A ``<name>.source.yaml`` describes a remote dataset (object storage, Delta, SQL, BigQuery).
DATA_SUFFIXES = (SOURCE_SUFFIX, *DATA_FILE_SUFFIXES)
MAPPING_KEYS = ("input", "target", "id", "split", "messages")

# A dataset's name is its Dagster partition key, and it appears in run keys, tags and the lake's
# predicates: letters, digits, '_', '-' and '.', starting with a letter or digit.
_VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_RULE = "use letters, digits, '_', '-' and '.' only, starting with a letter or digit"


def dataset_name_of(path: Path) -> str | None:
    """The dataset a drop-folder entry would hold (its name without the data suffix), None if no data suffix."""
    lowered = path.name.lower()
    for suffix in DATA_SUFFIXES:
        if lowered.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dataset (and so a Dagster partition key), or None."""
    if not name:
        return "has no name before its suffix; rename it, e.g. to my-data.jsonl"
    if not _VALID_NAME.fullmatch(name) or "..." in name:
        return f"names a dataset {name!r} that cannot be a partition key: rename the file ({_NAME_RULE})"
    if name in BUILTIN_DATASETS:
        return (f"has the name of the built-in benchmark {name!r}, which keeps its own data: rename the file "
                f"(e.g. to my-{name}) to load it as a dataset of its own")
    return None


def read_mapping(path: Path) -> FieldMapping:
    """The field mapping for a drop-folder data file: its ``<name>.yaml`` if there is one, else input/target.
    A remote source carries its mapping inside its ``<name>.source.yaml``."""
    if path.name.lower().endswith(SOURCE_SUFFIX):
        try:
            return read_source_file(path).mapping
        except RemoteSourceError as error:
            raise ValueError(str(error)) from None
    name = dataset_name_of(path) or path.stem
    mapping_file = path.with_name(f"{name}.yaml")
    if not mapping_file.exists():
        return FieldMapping(input="input", target="target")
    try:
        fields = yaml.safe_load(mapping_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{mapping_file}: cannot read the field mapping ({error}); fix or remove it") from None
    optional = MAPPING_KEYS[2:]
    if not isinstance(fields, dict) or not set(fields) <= set(MAPPING_KEYS) or not all(
            (isinstance(value, str) and value) or (value is None and key in optional) for key, value in fields.items()):
        raise ValueError(f"{mapping_file}: bad field mapping {fields!r}; it must map some of the keys "
                         f"{', '.join(MAPPING_KEYS)} to field names ({', '.join(optional)} may be null)")
    return FieldMapping(**{"input": "input", "target": "target", **fields})


@dataclasses.dataclass(frozen=True)
class DropFile:
    """A dataset file in the drop folder; ``stamp`` changes when it or its field mapping changes."""

    name: str
    path: Path
    stamp: float


@dataclasses.dataclass(frozen=True)
class DropProblem:
    """A drop-folder entry that is not loaded, and what to do about it."""

    path: Path
    problem: str

    @property
    def message(self) -> str:
        return f"drop folder entry {self.path.name!r} skipped: {self.problem}"


@dataclasses.dataclass
class DropFolderScan:
    """What the drop folder holds: loadable dataset files by name, and the entries that are not loadable."""

    files: dict[str, DropFile] = dataclasses.field(default_factory=dict)
    problems: list[DropProblem] = dataclasses.field(default_factory=list)
    # names that two or more entries claim, with those entries
    collisions: dict[str, list[Path]] = dataclasses.field(default_factory=dict)


def _both(paths: list[Path]) -> str:
    return "both" if len(paths) == 2 else "all"


def _stamp(path: Path) -> float:
    """The newest modification time of a data file and its mapping (raises OSError for a dangling link)."""
    stamp = path.stat().st_mtime
    mapping_file = path.with_name(f"{dataset_name_of(path)}.yaml")
    try:
        return max(stamp, mapping_file.stat().st_mtime)
    except OSError:
        return stamp


def _entry_problem(path: Path) -> str | None:
    """Why one data-named entry cannot be loaded (not a readable regular file, bad mapping), or None."""
    if path.is_symlink() and not path.exists():
        return f"is a link to {os.readlink(path)}, which does not exist; fix or remove the link"
    if path.is_dir():
        return "is a folder, not a data file; rename it or move it out of the drop folder"
    if not path.is_file():
        return "is not a regular file; remove it"
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        return f"cannot be read ({error.strerror or error}); fix its permissions or remove it"
    try:
        read_mapping(path)
    except ValueError as error:
        return str(error)
    return None


def scan_drop_folder(folder: Path) -> DropFolderScan:
    """Every data-named entry of ``folder``, sorted into loadable files and problems; never raises."""
    scan = DropFolderScan()
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError as error:
        scan.problems.append(DropProblem(folder, f"the drop folder cannot be listed ({error.strerror or error})"))
        return scan
    claims: dict[str, list[Path]] = {}
    for path in entries:
        name = dataset_name_of(path)
        if name is not None:
            claims.setdefault(name, []).append(path)
    for name, paths in claims.items():
        if len(paths) > 1:
            scan.collisions[name] = paths
            names = " and ".join(path.name for path in paths)
            scan.problems.append(DropProblem(paths[0], f"{names} {_both(paths)} name the dataset {name!r}; rename or "
                                                       "remove all but one of them"))
            continue
        path = paths[0]
        problem = name_problem(name)
        try:
            problem = problem or _entry_problem(path)
            stamp = 0.0 if problem else _stamp(path)
        except OSError as error:  # the entry changed or vanished while it was looked at
            problem = f"cannot be read ({error.strerror or error}); fix or remove it"
        if problem:
            scan.problems.append(DropProblem(path, problem))
        else:
            scan.files[name] = DropFile(name, path, stamp)
    return scan


class DatasetSourcesResource(dg.ConfigurableResource):
    """Built-in benchmarks by name; any ``<drop_folder>/<name>.{jsonl[.gz],json[.gz],csv,parquet}`` as a user dataset.

    A user file may sit beside a ``<name>.yaml`` holding its field mapping (``input``, ``target``,
    and optionally ``id``, ``split``, ``messages``); without one the fields are ``input``/``target``.
    Entries that cannot be loaded (dangling links, folders, unreadable files, two files with one
    name, a built-in benchmark's name, a name that cannot be a partition key) are reported by
    ``scan()`` with what to do, and never stop the other files from loading.

    A ``<name>.source.yaml`` makes a remote dataset (see ``crucible.data.remote``): files or a Delta
    table on S3-compatible storage, a SQL query through SQLAlchemy, or a BigQuery query.
    """

    drop_folder: str = Field(
        default_factory=lambda: os.environ.get("CRUCIBLE_DATASET_DROP", f"{default_home()}/datasets_drop"),
        description="Folder watched for user datasets (one file or folder per dataset); $CRUCIBLE_DATASET_DROP.")

    def scan(self) -> DropFolderScan:
        return scan_drop_folder(Path(self.drop_folder))

    def load(self, name: str, limit: int | None = None) -> LoadResult:
        if name in BUILTIN_DATASETS:
            return load_benchmark(name, limit=limit)
        scan = self.scan()
        if name in scan.collisions:
            files = " and ".join(str(path) for path in scan.collisions[name])
            raise ValueError(f"dataset {name!r}: {files} {_both(scan.collisions[name])} name it, and Crucible will "
                             "not pick one; "
                             "rename or remove all but one of them")
        if name not in scan.files:
            reported = [problem.message for problem in scan.problems if dataset_name_of(problem.path) == name]
            raise FileNotFoundError(
                f"dataset {name!r}: " + ("; ".join(reported) if reported else
                                         f"not a built-in benchmark ({', '.join(BUILTIN_DATASETS)}) and no file "
                                         f"{name}.<{'|'.join(s[1:] for s in DATA_SUFFIXES)}> in {self.drop_folder}"))
        path = scan.files[name].path
        if path.name.lower().endswith(SOURCE_SUFFIX):
            import tempfile

            with tempfile.TemporaryDirectory(prefix=f"crucible-{name}-") as workdir:
                return load_remote(read_source_file(path), Path(workdir), limit=limit)
        return load_file(path, read_mapping(path), dataset=name, limit=limit)
