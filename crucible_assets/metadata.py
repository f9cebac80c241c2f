"""Turn what the core reports into Dagster metadata, the same way for every asset."""

import dagster as dg

from crucible.quarantine import StoredTable


def table_metadata(stored: StoredTable, prefix: str = "") -> dict[str, dg.MetadataValue]:
    return {
        f"{prefix}table": dg.MetadataValue.text(stored.table),
        f"{prefix}dagster/row_count": dg.MetadataValue.int(stored.accepted),
        f"{prefix}rows_in": dg.MetadataValue.int(stored.rows_in),
        f"{prefix}quarantined": dg.MetadataValue.int(stored.quarantined),
        f"{prefix}delta_version": dg.MetadataValue.int(stored.version),
    }
