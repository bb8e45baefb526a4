"""The embedded PostgreSQL (pgserver) used when DATABASE_URL is unset."""

from __future__ import annotations

import warnings
from pathlib import Path

DATABASE = "commpro"


def embedded_database_url(data_dir: Path, database: str = DATABASE) -> str:
    """Start, or join if another process already has, the server under `data_dir/pgdata`.

    It stops when the last process using it exits. The data stays, so it survives restarts.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    if database not in server.psql("SELECT datname FROM pg_database;").split():
        # psql does not stop on an error: a concurrent creator makes this a harmless no-op.
        server.psql(f'CREATE DATABASE "{database}";')
    return server.get_uri(database=database)
