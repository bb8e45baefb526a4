"""What the `commpro` commands share: one-line errors, argument types, the database, and where
the running server listens."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import phonenumbers

from commpro.config import Config


class CliError(Exception):
    """A failure to report in one line, without a traceback."""


def e164(value: str) -> str:
    """argparse type: a valid E.164 number, normalised."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise argparse.ArgumentTypeError(f"{value!r} is not an E.164 number (+ and country code)") from None
    if not phonenumbers.is_possible_number(parsed):
        raise argparse.ArgumentTypeError(f"{value!r} is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def with_database(config: Config) -> Config:
    """The config with a database URL: the given one, or the embedded server's."""
    if config.database.url:
        return config
    from commpro.embedded import EmbeddedDatabaseError, embedded_database_url

    try:
        url = embedded_database_url(config.data_dir)
    except EmbeddedDatabaseError as exc:
        raise CliError(str(exc)) from None
    return dataclasses.replace(config, database=dataclasses.replace(config.database, url=url))


async def with_conn(config: Config, fn):
    from commpro.db import create_pool, migrate

    pool = await create_pool(config.database.url, min_size=1, max_size=1,
                             timeout_s=config.database.connect_timeout_s)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            return await fn(conn)
    finally:
        await pool.close()


SERVING_RECORD = "serving.json"


def serving(config: Config, pid: int | None = None) -> tuple[str, int] | None:
    """The host and port of the `commpro serve` running on this data dir (or of process `pid`)."""
    try:
        record = json.loads((config.data_dir / SERVING_RECORD).read_text())
        if pid is not None and record["pid"] != pid:
            return None
        os.kill(record["pid"], 0)
        return record["host"], int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none written, unreadable, or its process is gone


def server_config(config: Config) -> Config:
    """The settings of the server to talk to: the `commpro serve` running on this data dir
    (whatever its PORT was), unless a port is given here too."""
    running = serving(config)
    if running is None or "PORT" in os.environ or "COMMPRO_SERVER_PORT" in os.environ:
        return config
    host, port = running
    return dataclasses.replace(config, server=dataclasses.replace(config.server, host=host, port=port))


def record_serving(config: Config) -> None:
    """Written once listening, for the commands run from another shell (in development: a
    production host may have no writable data dir, and needs no such help)."""
    if config.production:
        return
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        (config.data_dir / SERVING_RECORD).write_text(
            json.dumps({"pid": os.getpid(), "host": config.server.host, "port": config.server.port}))
    except OSError:
        pass  # the commands then use the settings they are given


def forget_serving(config: Config) -> None:
    """On the way out; only our own record, never that of the server that holds the port."""
    if serving(config, pid=os.getpid()) is not None:
        (config.data_dir / SERVING_RECORD).unlink(missing_ok=True)
