"""`commpro` (also `python -m commpro`): serve, migrate, numbers, keys, token; sandbox in cli_sandbox.py."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys

import structlog

from commpro import cli_sandbox
from commpro.cli_support import (
    CliError,
    e164,
    forget_serving,
    record_serving,
    server_config,
    with_conn,
    with_database,
)
from commpro.config import Config, ConfigError, load_config
from commpro.logs import configure_logging

log = structlog.get_logger("commpro.cli")
DEMO_NUMBERS = ("+15005550006", "+15005550010")


# -- serve -------------------------------------------------------------------------------------


def cmd_serve(config: Config, args: argparse.Namespace) -> None:
    for notice in config.notices:
        log.warning("config_notice", notice=notice)
    config = with_database(config)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is pinned, but the service runs without it
        loop = asyncio.new_event_loop()
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        runner.run(_serve(config))
    log.info("shutdown_complete")


async def _serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, finish the requests in flight (up to
    server.shutdown_timeout_s), and run every cleanup context: tasks, Twilio client, pool."""
    import signal

    from aiohttp import web

    from commpro.app import create_app

    app = create_app(config)
    if config.twilio.sandbox:
        # Development without a Twilio account: the stand-in, beside the service on this port.
        try:
            from commpro.devserver import mount_sandbox
        except ModuleNotFoundError:
            raise CliError("no Twilio credentials, and the Twilio sandbox of development is not installed here (it "
                           "is part of the repository): set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or run "
                           "`make run` in a clone") from None
        mount_sandbox(app, config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.server.shutdown_timeout_s)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, config.server.host, config.server.port).start()
        except OSError as exc:
            where = f"{config.server.host}:{config.server.port}"
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {config.server.port} is already in use ({where}): another `make run`? "
                               "Stop it, or choose another port with PORT=...") from None
            raise CliError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        # For `commpro sandbox ...` in another shell: where this server listens.
        # Before the banner: whoever reads it may signal at once.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        record_serving(config)
        await _banner(runner.app, config)
        await stop.wait()
        log.info("shutdown_started")
    finally:
        forget_serving(config)
        await runner.cleanup()



async def _banner(app, config: Config) -> None:
    """Once listening: in sandbox mode, a demo user with numbers and a token; then the URL."""
    from commpro.appkeys import pool_key
    from commpro.auth import mint_token
    from commpro.errors import Conflict
    from commpro.numbers.store import insert_number

    twilio = config.twilio
    listening = f"{config.server.host or '*'}:{config.server.port}"
    lines = [f"CommPro {config.app.env} on {config.local_base_url} "
             + f"(listening on {listening}; public: {config.server.public_base_url})"]
    if not twilio.sandbox:
        sid = twilio.account_sid
        lines.append(f"Twilio: live, account {sid[:4]}...{sid[-4:]} (credentials from {twilio.credentials_from})")
    else:
        user = config.sandbox.demo_user
        numbers = []
        async with app[pool_key].acquire() as conn:
            for number in DEMO_NUMBERS:
                try:
                    async with conn.transaction():
                        await insert_number(conn, user, number, identity=user)
                    numbers.append(number)
                except Conflict:
                    pass  # taken by a user of yours: not a demo number any more
        lines += [
            f"Twilio: the local sandbox, no Twilio account needed (its credentials {twilio.credentials_from})",
            f"Demo user {user!r}, numbers: {', '.join(numbers) or 'none free'}",
            f"Token: {mint_token(config, user)}",
        ]
    lines.append(f"Console: open {config.local_base_url}/ in a browser")
    lines.append(f"Try:   curl -H 'Authorization: Bearer <token>' {config.local_base_url}/status")
    print("\n".join(lines), file=sys.stderr, flush=True)


# -- migrate, numbers, token -------------------------------------------------------------------


def cmd_migrate(config: Config, args: argparse.Namespace) -> None:
    from commpro.db import migrate_database

    applied = asyncio.run(migrate_database(with_database(config).database.url))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def _number_json(row) -> dict:
    return {
        "id": str(row["id"]), "userId": row["user_id"], "number": row["e164"],
        "identity": row["identity"], "forwardTo": row["forward_to"], "routing": row["routing"],
    }


def cmd_numbers_add(config: Config, args: argparse.Namespace) -> None:
    from commpro.errors import Conflict
    from commpro.numbers.store import insert_number

    async def add(conn):
        async with conn.transaction():
            return await insert_number(conn, args.user_id, args.number,
                                       identity=args.identity, forward_to=args.forward_to)

    try:
        row = asyncio.run(with_conn(with_database(config), add))
    except Conflict as exc:
        raise CliError(exc.message) from None
    print(json.dumps(_number_json(row)))


def cmd_numbers_list(config: Config, args: argparse.Namespace) -> None:
    from commpro.numbers.store import list_numbers

    rows = asyncio.run(with_conn(with_database(config), lambda conn: list_numbers(conn, args.user)))
    for row in rows:
        print(json.dumps(_number_json(row)))


def cmd_keys_rotate(config: Config, args: argparse.Namespace) -> None:
    """Re-wrap every data key under the current master key. Resumable: what is done stays done,
    and a second run picks up the rest. No message is re-encrypted."""
    from commpro.keys import KeyRing
    from commpro.keys import store as keys

    keyring = KeyRing(config.crypto)

    async def rotate(conn) -> int:
        remaining = await keys.count_to_rewrap(conn, keyring.current_id)
        done = 0
        _progress(done, remaining)
        while True:
            async with conn.transaction():
                rows = await keys.claim_to_rewrap(conn, keyring.current_id, args.batch)
                for row in rows:
                    key = keyring.unwrap(row["user_id"], row["wrapped_key"], row["master_key_id"])
                    await keys.rewrap(conn, row["user_id"], keyring.wrap(row["user_id"], key), keyring.current_id)
            if not rows:
                break
            done += len(rows)
            _progress(done, max(remaining, done))
        return done

    try:
        done = asyncio.run(with_conn(with_database(config), rotate))
    except RuntimeError as exc:  # a key wrapped by a master key we were not given
        raise CliError(str(exc)) from None
    print(f"\nre-wrapped {done} data key(s) under master key {keyring.current_id}", file=sys.stderr)


def _progress(done: int, total: int, width: int = 30) -> None:
    filled = width if total == 0 else width * done // total
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)


def cmd_keys_shred(config: Config, args: argparse.Namespace) -> None:
    """Destroy the user's data key, and queue the erasure of everything Twilio still holds of
    their messages: durable work that a running server carries out, surviving restarts."""
    from commpro.keys import store as keys
    from commpro.messages import erasure_store

    if not args.yes:
        raise CliError(f"this destroys the data key of {args.user_id!r}: all their messages and media become "
                       "unreadable for good, and deletes them at Twilio. Run again with --yes.")

    async def shred(conn):
        async with conn.transaction():
            return await keys.shred_user_key(conn, args.user_id), await erasure_store.enqueue_user(conn, args.user_id)

    shredded_at, queued = asyncio.run(with_conn(with_database(config), shred))
    if shredded_at is None and not queued:
        raise CliError(f"{args.user_id!r} has no data key (none yet, or already shredded)")
    if shredded_at is not None:
        print(f"shredded the data key of {args.user_id!r} at {shredded_at.isoformat()}; running servers forget "
              f"it within crypto.key_cache_ttl_s ({config.crypto.key_cache_ttl_s:g}s)")
    print(f"queued {queued} message(s) for erasure at Twilio (media deleted, body redacted); a running server "
          f"does it. Progress: commpro keys erasure {args.user_id} [--wait]")
    if args.wait:
        _erasure_progress(config, args.user_id, wait=True)


def cmd_keys_erasure(config: Config, args: argparse.Namespace) -> None:
    _erasure_progress(config, args.user_id, wait=args.wait)


def _erasure_progress(config: Config, user_id: str, wait: bool) -> None:
    """Print how far the user's erasure at Twilio has come; with `wait`, until nothing is pending."""
    from commpro.messages import erasure_store

    async def poll(conn):
        while True:
            row = await erasure_store.progress(conn, user_id)
            total = row["pending"] + row["done"] + row["gave_up"]
            _progress(row["done"] + row["gave_up"], total)
            if not wait or row["pending"] == 0:
                return row
            await asyncio.sleep(1)

    row = asyncio.run(with_conn(with_database(config), poll))
    print(f"\nerasure at Twilio of {user_id!r}: {row['done']} done, {row['pending']} pending, "
          f"{row['gave_up']} given up", file=sys.stderr)
    if row["gave_up"]:
        raise CliError(f"{row['gave_up']} message(s) could not be erased at Twilio: see the erasure_failed logs, "
                       "then run `commpro keys shred` again to retry them")


def cmd_token(config: Config, args: argparse.Namespace) -> None:
    from commpro.auth import mint_token

    try:
        print(mint_token(config, args.user_id, args.ttl))
    except ValueError as exc:
        raise CliError(str(exc)) from None


# -- sandbox -----------------------------------------------------------------------------------


def cmd_events(config: Config, args: argparse.Namespace) -> None:
    """The user's events as they happen, one JSON line each: the WebSocket /api/events."""
    import aiohttp

    from commpro.auth import mint_token

    config = server_config(config)
    try:
        token = args.token or mint_token(config, args.user or config.sandbox.demo_user)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    url = f"{config.local_base_url}/api/events"
    params = {"since": str(args.since)} if args.since is not None else {}

    async def listen() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, params=params, headers={"Authorization": f"Bearer {token}"}) as ws:
                print(f"listening to {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
                seen = 0
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    print(msg.data, flush=True)
                    seen += 1
                    if seen == args.count:
                        return
                raise CliError(f"the server closed the stream (code {ws.close_code}): run again with --since")

    try:
        asyncio.run(listen())
    except aiohttp.WSServerHandshakeError as exc:
        raise CliError(f"the server refused the stream ({exc.status}): is the token right?") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise CliError(f"cannot reach {url} ({type(exc).__name__}): is `make run` running?") from None
    except KeyboardInterrupt:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="commpro", description="CommPro backend")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the API, the webhooks (and the sandbox in development)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="apply the database migrations that are not applied yet")
    p.set_defaults(func=cmd_migrate)

    numbers = sub.add_parser("numbers", help="phone numbers owned by users").add_subparsers(
        dest="numbers_command", required=True)
    p = numbers.add_parser("add", help="give a phone number to a user")
    p.add_argument("user_id", metavar="USER_ID", help="the user (the JWT sub)")
    p.add_argument("number", metavar="+E164", type=e164)
    p.add_argument("--forward-to", type=e164, metavar="+E164", help="a phone that rings for this number")
    p.add_argument("--identity", metavar="NAME", help="the app identity that rings (client:NAME)")
    p.set_defaults(func=cmd_numbers_add)
    p = numbers.add_parser("list", help="list numbers")
    p.add_argument("--user", metavar="USER_ID", help="only this user's numbers")
    p.set_defaults(func=cmd_numbers_list)

    keys = sub.add_parser("keys", help="the per-user data keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("rotate-master", help="re-wrap every data key under COMMPRO_MASTER_KEY (resumable)")
    p.add_argument("--batch", type=int, default=100, help="keys per transaction (default 100)")
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser("shred", help="destroy a user's data key: their content becomes unreadable")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    p.add_argument("--wait", action="store_true", help="wait until Twilio holds nothing more, showing progress")
    p.set_defaults(func=cmd_keys_shred)
    p = keys.add_parser("erasure", help="how far the erasure at Twilio of a shredded user has come")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--wait", action="store_true", help="wait until nothing is pending")
    p.set_defaults(func=cmd_keys_erasure)

    p = sub.add_parser("token", help="print a JWT for a user (HS256, for local use)")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime (default auth.dev_token_ttl_s)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("events", help="print a user's events as they happen (the WebSocket /api/events)")
    p.add_argument("--user", metavar="USER_ID", help="whose events, with a token minted here (default: the demo user)")
    p.add_argument("--token", help="a JWT to use instead")
    p.add_argument("--since", type=int, metavar="ID", help="first replay what came after this event id")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.set_defaults(func=cmd_events)

    cli_sandbox.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config()
        # The service logs on stdout; a one-shot command keeps stdout for its result.
        configure_logging(config.log.level, sys.stdout if args.func is cmd_serve else sys.stderr, config.log.format)
        args.func(config, args)
    except ConfigError as exc:
        print(f"commpro: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CliError, ConnectionError) as exc:
        print(f"commpro: {exc}", file=sys.stderr)
        return 1
    return 0
