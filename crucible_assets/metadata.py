"""Turn what the core reports into Dagster metadata, the same way for every asset."""

import dagster as dg

from crucible.quarantine import StoredTable


def table_metadata(stored: StoredTable) -> dict[str, dg.MetadataValue]:
    """Row counts (accepted, in, quarantined) and the Delta version a write produced."""
    return {
        "table": dg.MetadataValue.text(stored.table),
        "dagster/row_count": dg.MetadataValue.int(stored.accepted),
        "rows_in": dg.MetadataValue.int(stored.rows_in),
        "quarantined": dg.MetadataValue.int(stored.quarantined),
        "delta_version": dg.MetadataValue.int(stored.version),
    }
