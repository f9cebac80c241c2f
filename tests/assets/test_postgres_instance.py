"""The Dagster instance on a real PostgreSQL server: materializations, runs and partitions land there."""

import os

import dagster as dg
import pytest

from tests.support.postgres import postgres_bin_dir, start_postgres

pytestmark = pytest.mark.skipif(postgres_bin_dir() is None and os.environ.get("CI") != "true",
                                reason="PostgreSQL is not installed (scripts/setup.sh apt-installs it)")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server, stop = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    stop()


def test_materializations_are_stored_in_postgres(postgres, tmp_path, monkeypatch, resources_for):
    import psycopg2

    from crucible_assets.datasets.assets import examples
    from crucible_assets.instance import POSTGRES_INSTANCE_CONFIG, ensure_instance_config
    from crucible_assets.partitions import datasets_partitions

    for name, value in postgres.env().items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    assert "storage" in ensure_instance_config(home, POSTGRES_INSTANCE_CONFIG)
    resources = resources_for(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions(datasets_partitions.name, ["gsm8k"])
        result = dg.materialize([examples], instance=instance, partition_key="gsm8k", resources=resources)
        assert result.success
        record = instance.fetch_materializations(dg.AssetKey(["datasets", "examples"]), limit=1).records[0]
        assert record.partition_key == "gsm8k"
        assert record.asset_materialization.metadata["dagster/row_count"].value > 0

    # Read back from the database itself: the run and its materialization are rows in PostgreSQL.
    with psycopg2.connect(postgres.url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)
        cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                       "'ASSET_MATERIALIZATION'", (result.run_id,))
        assert cursor.fetchone()[0] == 1
        cursor.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s",
                       (datasets_partitions.name,))
        assert cursor.fetchall() == [("gsm8k",)]


def test_missing_variables_name_the_variable(tmp_path, monkeypatch):
    from crucible_assets.instance import POSTGRES_INSTANCE_CONFIG, ensure_instance_config

    for name in ("CRUCIBLE_PG_HOST", "CRUCIBLE_PG_PORT", "CRUCIBLE_PG_DB", "CRUCIBLE_PG_USER", "CRUCIBLE_PG_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "dagster_home"
    ensure_instance_config(home, POSTGRES_INSTANCE_CONFIG)
    with pytest.raises(Exception, match="CRUCIBLE_PG_"):
        dg.DagsterInstance.from_config(str(home))
