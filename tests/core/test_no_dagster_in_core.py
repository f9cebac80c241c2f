"""The domain core (crucible/) and the table schemas (schemas/) never import Dagster, not even
inside a function or under TYPE_CHECKING: they return plain data and crucible_assets/ adapts it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_PACKAGES = ("crucible", "schemas")


def dagster_imports(source: str, filename: str = "<source>") -> list[str]:
    """``file:line module`` of every import of dagster or a dagster-* package anywhere in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [f"{filename}:{node.lineno} {module}" for module in modules
                  if module.split(".")[0] == "dagster" or module.startswith("dagster_")]
    return found


def core_modules() -> list[Path]:
    return sorted(path for package in CORE_PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_walk_sees_the_whole_core():
    names = {path.relative_to(ROOT).as_posix() for path in core_modules()}
    assert {"crucible/train/loggers.py", "crucible/train/backends.py", "crucible/lake.py",
            "schemas/__init__.py"} <= names


@pytest.mark.parametrize("snippet", [
    "import dagster as dg",
    "from dagster import asset",
    "import dagster._core.definitions",
    "from dagster_deltalake import DeltaLakeIOManager",
    "def f():\n    import dagster\n    return dagster",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dagster",
    "class A:\n    def m(self):\n        from dagster import MetadataValue",
])
def test_an_import_anywhere_is_found(snippet):
    assert dagster_imports(snippet)


def test_lookalike_names_are_not_dagster():
    assert dagster_imports("import dagsterish\nfrom .dagster import x\nx = 'import dagster'") == []


def test_no_core_module_imports_dagster():
    found = [hit for path in core_modules()
             for hit in dagster_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not found, "the core imports dagster (return plain data; convert it in crucible_assets/): " + \
        "; ".join(found)
