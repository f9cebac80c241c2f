"""The Dagster instance configuration Crucible ships (run monitoring on) and how it reaches DAGSTER_HOME."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

INSTANCE_CONFIG = Path(__file__).with_name("dagster.yaml")
# The same settings with runs, event logs and schedules in PostgreSQL (CRUCIBLE_PG_* variables).
POSTGRES_INSTANCE_CONFIG = Path(__file__).with_name("dagster_postgres.yaml")


def ensure_instance_config(dagster_home: str | Path, shipped_config: Path = INSTANCE_CONFIG) -> list[str]:
    """Give ``<dagster_home>/dagster.yaml`` every top-level section of the shipped config it lacks.

    Sections the file already has are left exactly as written (a user's ``run_monitoring`` or
    ``run_launcher`` wins); missing ones are appended, so comments and order survive. Returns the
    sections added.
    """
    path = Path(dagster_home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    shipped = shipped_config.read_text()
    if not path.exists():
        path.write_text(shipped)
        return list(yaml.safe_load(shipped))
    text = path.read_text()
    current = yaml.safe_load(text) or {}
    if not isinstance(current, dict):
        raise ValueError(f"{path}: expected a mapping of Dagster instance settings, got {type(current).__name__}; "
                         f"fix or remove the file (Crucible's defaults are in {shipped_config})")
    missing = {key: value for key, value in yaml.safe_load(shipped).items() if key not in current}
    if missing:
        block = yaml.safe_dump(missing, sort_keys=False)
        separator = "" if not text or text.endswith("\n") else "\n"
        path.write_text(f"{text}{separator}# Added by Crucible (defaults and reasons in {shipped_config}):\n{block}")
    return list(missing)


def main() -> int:
    """``python -m crucible_assets.instance [--postgres]``: prepare ``$DAGSTER_HOME/dagster.yaml`` (used by
    ``make ui``); ``--postgres`` writes the PostgreSQL variant (storage from the CRUCIBLE_PG_* variables)."""
    postgres = "--postgres" in sys.argv[1:]
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("DAGSTER_HOME is not set: set it to the folder of the Dagster instance", file=sys.stderr)
        return 2
    added = ensure_instance_config(home, POSTGRES_INSTANCE_CONFIG if postgres else INSTANCE_CONFIG)
    print(f"{Path(home) / 'dagster.yaml'}: " + (f"added {', '.join(added)}" if added else "up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
