"""`commpro sandbox sms|call|control`: drive the sandbox of the `commpro serve` running on this
data dir, with the same settings (config.toml, the environment, the generated dev secrets)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mimetypes
from pathlib import Path

from commpro.cli_support import CliError, e164, server_config, with_conn, with_database
from commpro.config import Config


def _sandbox_config(config: Config) -> Config:
    if not config.twilio.sandbox:
        raise CliError("the sandbox runs only when no Twilio credentials are set (development)")
    return server_config(config)


def _sandbox_post(config: Config, path: str, payload: dict) -> dict:
    from commpro.sandbox_client import SandboxUnreachable, sandbox_post

    try:
        status, result = asyncio.run(sandbox_post(config, path, payload))
    except SandboxUnreachable as exc:
        raise CliError(f"{exc}: is `make run` running?") from None
    if status != 200:
        raise CliError(f"the sandbox answered {status}: {result}")
    return result


def _owned(config: Config, number: str) -> None:
    """Inbound traffic to a number nobody owns is refused by the service: say so first (once
    the server is known to answer, which is the likelier trouble)."""
    from commpro.numbers.store import get_number_by_e164

    _sandbox_post(config, "/control", {})  # changes nothing: is it there, are these its credentials?

    row = asyncio.run(with_conn(with_database(config), lambda conn: get_number_by_e164(conn, number)))
    if row is None:
        raise CliError(f"nobody owns {number}: give it to a user first (`commpro numbers add USER_ID {number}`)")


def cmd_sandbox_sms(config: Config, args: argparse.Namespace) -> None:
    config = _sandbox_config(config)
    media = []
    for path in args.media or []:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        media.append({"contentType": content_type, "dataBase64": base64.b64encode(data).decode()})
    _owned(config, args.to)
    result = _sandbox_post(config, "/simulate/sms",
                           {"from": args.from_, "to": args.to, "body": args.body, "media": media})
    print(json.dumps(result, indent=2))


def cmd_sandbox_call(config: Config, args: argparse.Namespace) -> None:
    config = _sandbox_config(config)
    _owned(config, args.to)
    result = _sandbox_post(config, "/simulate/call", {"from": args.from_, "to": args.to})
    print(json.dumps(result, indent=2))


# Each option of `commpro sandbox control` (unset: None) and the field of /_sandbox/control it sets.
CONTROLS = {
    "account": "account", "prices_now": "pricesNow", "forget": "forget", "media_failures": "mediaFailures",
    "summary_errors": "summaryErrors", "summaries_complete": "summariesComplete", "create_faults": "createFaults",
    "fault_delay": "faultDelayS", "media_redirect": "mediaRedirect",
}


def cmd_sandbox_control(config: Config, args: argparse.Namespace) -> None:
    payload = {field: value for option, field in CONTROLS.items() if (value := getattr(args, option)) is not None}
    if not payload:
        raise CliError("nothing to change: see `commpro sandbox control --help`")
    print(json.dumps(_sandbox_post(_sandbox_config(config), "/control", payload), indent=2))


def _summary_errors(value: str) -> list[int]:
    try:
        codes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        codes = [0]
    if any(code not in (404, 429) for code in codes):
        raise argparse.ArgumentTypeError("a comma-separated list of 404 and 429")
    return codes


def _create_faults(value: str) -> list[str]:
    faults = [v.strip() for v in value.split(",") if v.strip()]
    if any(fault not in ("late", "drop", "hang") for fault in faults):
        raise argparse.ArgumentTypeError("a comma-separated list of late, drop and hang")
    return faults


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 60:
        raise argparse.ArgumentTypeError("seconds from 0 to 60")
    return seconds


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(value)


def add_parsers(sub) -> None:
    sandbox = sub.add_parser("sandbox", help="drive the local sandbox of the running `commpro serve`").add_subparsers(
        dest="sandbox_command", required=True)
    p = sandbox.add_parser("sms", help="an SMS/MMS to one of your numbers, through the signed webhook")
    p.add_argument("--from", dest="from_", required=True, type=e164, metavar="+E164")
    p.add_argument("--to", required=True, type=e164, metavar="+E164")
    p.add_argument("--body", default="", help="the text")
    p.add_argument("--media", action="append", metavar="FILE", help="attach a file (repeatable)")
    p.set_defaults(func=cmd_sandbox_sms)
    p = sandbox.add_parser("call", help="a call to one of your numbers, through the signed webhook")
    p.add_argument("--from", dest="from_", required=True, type=e164, metavar="+E164")
    p.add_argument("--to", required=True, type=e164, metavar="+E164")
    p.set_defaults(func=cmd_sandbox_call)
    p = sandbox.add_parser("control", help="make the sandbox misbehave (or behave again)")
    p.add_argument("--account", choices=("active", "suspended"),
                   help="suspended: every create fails as for an account out of funds (402)")
    p.add_argument("--prices-now", action="store_const", const=True, help="price every ended call and message at once")
    p.add_argument("--forget", action="store_const", const=True,
                   help="forget every call, message, media and recording the sandbox keeps in the database")
    p.add_argument("--media-failures", type=_count, metavar="N", help="the next N media downloads fail (500)")
    p.add_argument("--summary-errors", type=_summary_errors, metavar="CODES",
                   help="the next Voice Insights summary requests answer these, in order (e.g. 404,429)")
    p.add_argument("--summaries-complete", action=argparse.BooleanOptionalAction,
                   help="every summary complete at once (--no-summaries-complete to undo)")
    p.add_argument("--create-faults", type=_create_faults, metavar="FAULTS",
                   help="the next creates answer late, drop the connection or hang, in order (e.g. late,drop)")
    p.add_argument("--fault-delay", type=_seconds, metavar="S", help="how late a late create answers (default 1)")
    p.add_argument("--media-redirect", choices=("cdn", "s3"),
                   help="s3: media downloads go through an S3-like host (cdn to undo)")
    p.set_defaults(func=cmd_sandbox_control)
