"""Migrations: every file on an empty database, nothing the second time, one apply under races."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from commpro.db import (
    MIGRATION_LOCK_ID,
    MIGRATIONS_DIR,
    MigrationError,
    create_pool,
    load_migrations,
    mask_dsn,
    migrate,
)
from commpro.events import store as events_store
from tests.conftest import PYTHON, REPO, WAIT_S, python_env

TABLES = {"phone_numbers", "calls", "contacts", "messages", "message_media", "conversations", "user_keys"}


async def test_empty_database_gets_every_migration_then_nothing(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        applied = await migrate(conn)
        assert applied == [m.name for m in load_migrations()]
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert TABLES | {"schema_migrations"} <= tables
        assert await migrate(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
    finally:
        await conn.close()


async def test_an_edited_migration_stops_startup(empty_database_url, tmp_path):
    copy = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, copy)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, copy)
        first = min(copy.glob("*.sql"))
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate(conn, copy)
    finally:
        await conn.close()


def test_migration_files_are_numbered_without_gaps(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(tmp_path)


async def test_a_failing_migration_leaves_nothing_half_applied(empty_database_url, tmp_path):
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE b (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('b')") is None
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]
    finally:
        await conn.close()


async def test_two_processes_migrating_at_once_apply_each_file_once(empty_database_url):
    env = python_env(DATABASE_URL=empty_database_url)
    procs = [
        await asyncio.create_subprocess_exec(PYTHON, "-m", "commpro", "migrate", cwd=REPO, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    said = sorted(out.decode().split(":")[0] for out, _ in outputs)
    assert said == ["applied 0 migration(s)\n", f"applied {len(load_migrations())} migration(s)"]
    conn = await asyncpg.connect(empty_database_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in load_migrations()]
    finally:
        await conn.close()


def test_mask_dsn_hides_the_password():
    assert mask_dsn("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert mask_dsn("postgresql://postgres:@/postgres?host=/tmp/s") == "postgresql://postgres:***@/postgres?host=/tmp/s"


# The service's migration waiting on the lock for longer than its command timeout (0.2 s) allows.
WAITED_ON_LOCK = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'SELECT pg_advisory_lock%'
  AND now() - query_start > interval '1 second'
"""


async def test_start_up_waits_for_migrations_longer_than_a_requests_command_timeout(start_service,
                                                                                 empty_database_url):
    """A migration may take longer than a request may (a table rewrite; another replica's
    migrations holding the lock): start-up waits for it rather than failing on command_timeout_s."""
    holder = await asyncpg.connect(empty_database_url)
    starting = None
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        starting = asyncio.ensure_future(start_service(DATABASE_URL=empty_database_url,
                                                       COMMPRO_DATABASE_COMMAND_TIMEOUT_S="0.2"))

        async def waited() -> None:
            while not await holder.fetchval(WAITED_ON_LOCK):
                assert not starting.done(), starting.exception()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(waited(), WAIT_S)
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        await holder.close()
    service = await asyncio.wait_for(starting, WAIT_S)
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())


EVENTS_KEY = "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'p'"
EVENTS_INDEXES = """
SELECT array_agg(indexrelid::regclass::text ORDER BY indexrelid::regclass::text) FROM pg_index
WHERE indrelid = 'events'::regclass
"""
EVENTS_COLUMNS = """
SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped
"""


async def test_events_published_before_0017_keep_their_numbers_and_the_next_follow_them(empty_database_url,
                                                                                        tmp_path):
    """sql/0017 keys events by (user_id, seq) and drops the identity column nothing read: an event
    then writes two index entries, not three. Events stored before it keep their numbers, a
    stream's replay reads them as before, and the user's next events take the numbers after."""
    before = tmp_path / "sql"
    before.mkdir()
    for m in load_migrations():
        if m.version < 17:
            shutil.copy(MIGRATIONS_DIR / m.name, before)
    pool = await create_pool(empty_database_url)  # its connections' jsonb codec, for the payloads
    try:
        async with pool.acquire() as conn:
            await _events_keep_their_numbers(conn, before)
    finally:
        await pool.close()


async def _events_keep_their_numbers(conn: asyncpg.Connection, before_0017: Path) -> None:
    await migrate(conn, before_0017)
    assert "id" in await conn.fetchval(EVENTS_COLUMNS)
    for user in ("u-a", "u-b", "u-a"):
        await events_store.publish(conn, user, "call.created", {"user": user})
    assert await migrate(conn) == ["0017_events_keyed_by_user_and_number.sql"]
    assert await conn.fetchval(EVENTS_KEY) == "PRIMARY KEY (user_id, seq)"
    assert await conn.fetchval(EVENTS_INDEXES) == ["events_created_idx", "events_pkey"]
    assert await conn.fetchval(EVENTS_COLUMNS) == ["user_id", "type", "payload", "created_at", "seq"]
    assert [r["id"] for r in await events_store.events_since(conn, "u-a", 0, 10)] == [1, 2]
    assert await events_store.publish(conn, "u-a", "call.status", {}) == 3
    await events_store.publish_many(conn, [("u-b", "call.status", {}), ("u-b", "call.status", {})])
    replayed = await events_store.events_since(conn, "u-b", 0, 10)
    assert [(r["id"], r["type"]) for r in replayed] == [(1, "call.created"), (2, "call.status"), (3, "call.status")]
    with pytest.raises(asyncpg.UniqueViolationError):  # the key still refuses a number twice
        await conn.execute("INSERT INTO events (user_id, seq, type, payload) VALUES ('u-b', 3, 'x', '{}')")
