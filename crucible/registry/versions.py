"""Model versions: content hashes of artifacts and the next version number."""

from __future__ import annotations

import hashlib
from pathlib import Path


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


def next_version(existing_versions: list[int]) -> int:
    return max(existing_versions, default=0) + 1
