"""The asyncpg pool's lifetime, and the migrations that run before anything uses it.

Migrations are the files sql/NNNN_what.sql, applied in order, each in its own transaction, under
a PostgreSQL advisory lock so that several processes starting at once apply each file exactly
once. Applied files are recorded with a checksum: an edited migration stops start-up.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog
from aiohttp import web

from commpro.appkeys import config_key, metrics_key, pool_key

log = structlog.get_logger("commpro.db")

# Installed, the migrations ship inside the package (commpro/sql/); in a checkout they are the
# repository's top-level sql/, which setup.cfg maps to commpro/sql/ in the wheel.
_PACKAGE = Path(__file__).resolve().parent
MIGRATIONS_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"
# Any constant shared by every CommPro process; it only has to differ from other lock users.
MIGRATION_LOCK_ID = 0x436F6D6D50726F  # "CommPro"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(Exception):
    pass


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced, for logs and errors."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects, through orjson.
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does (roll back an open
    transaction, drop listener callbacks).

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release: one more round trip per request, for session state CommPro never leaves on a pooled
    connection. What holds: settings are `SET LOCAL` inside a transaction, locks are
    `pg_advisory_xact_lock` or (migrations) unlocked explicitly in `finally`, LISTEN has a
    connection of its own (events), cursors live inside their transaction. Session state left
    on a pooled connection would leak to the next request: keep it that way.
    """


_UNREACHABLE = (TimeoutError, OSError, asyncpg.PostgresError)


def _unreachable(dsn: str, exc: BaseException) -> ConnectionError:
    return ConnectionError(f"database unreachable at {mask_dsn(dsn)}: {type(exc).__name__}: {exc}")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, timeout_s: float = 5.0,
                      command_timeout_s: float | None = None) -> asyncpg.Pool:
    """A pool that has proved it can run a query, or a clear error naming the masked DSN."""
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, timeout=timeout_s,
            command_timeout=command_timeout_s, init=_init_connection, reset=_keep_session,
        )
        await pool.fetchval("SELECT 1", timeout=timeout_s)
    except _UNREACHABLE as exc:
        raise _unreachable(dsn, exc) from None
    return pool


async def migrate_database(dsn: str, *, timeout_s: float = 5.0) -> list[str]:
    """Apply what is not applied yet (`migrate`), at start-up and by `commpro migrate`, on a
    connection of its own without a command timeout (the pool's is a bound for requests): a
    table rewrite at a million rows, or another process's migrations holding the lock, takes
    longer, and start-up would fail the same way on every restart. `timeout_s` bounds the connect."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except _UNREACHABLE as exc:
        raise _unreachable(dsn, exc) from None
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[config_key]
    dsn = config.database.url
    log.info("db_connecting", dsn=mask_dsn(dsn))
    pool = await create_pool(
        dsn, min_size=config.database.pool_min, max_size=config.database.pool_max,
        timeout_s=config.database.connect_timeout_s, command_timeout_s=config.database.command_timeout_s,
    )
    try:
        await migrate_database(dsn, timeout_s=config.database.connect_timeout_s)
        app[pool_key] = pool
        if metrics_key in app:
            app[metrics_key].live.pool = pool
        yield
    finally:
        await pool.close()
        log.info("db_closed")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path.name}: migrations are named NNNN_what.sql")
        found.append(Migration(int(m.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1, 2, 3... without gaps, found {versions}")
    return found


CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is not applied yet; return the names applied now."""
    migrations = load_migrations(directory)
    applied_now = []
    # A session lock, held across the per-file transactions and released even on error.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        applied = {r["version"]: r for r in await conn.fetch(SELECT_APPLIED)}
        for m in migrations:
            done = applied.get(m.version)
            if done is not None:
                if done["checksum"] != m.checksum:
                    raise MigrationError(
                        f"{m.name} was edited after it was applied: add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(INSERT_APPLIED, m.version, m.name, m.checksum)
            applied_now.append(m.name)
            log.info("migration_applied", migration=m.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now
