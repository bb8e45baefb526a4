"""GET /: the console page; in development also the sandbox console and its proxy routes.

The page is public (a person opens it in a browser), so what it renders for everyone is what
/status says, which names no user and holds no secret. The sandbox panels and the routes behind
them are only built when the sandbox is mounted: in production they do not exist, not merely
hidden. The proxy routes need the demo user's JWT like any API route, and hold the sandbox's
Basic credentials server-side so they never reach the page.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from aiohttp import web

from commpro.appkeys import config_key, pool_key
from commpro.auth import mint_token, user_id
from commpro.errors import BadGateway, BadRequest, Forbidden, ServiceUnavailable
from commpro.numbers.store import get_owned_number, list_numbers
from commpro.ops import service_status
from commpro.sandbox_client import SandboxUnreachable, sandbox_post
from commpro.validation import Fields, json_body

routes = web.RouteTableDef()
sandbox_routes = web.RouteTableDef()
MAX_SIMULATED_BODY = 1600


def _template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render(template: str, **values: str) -> str:
    """Replace each `{{name}}` with its value, already escaped by the caller where needed."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _uptime(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {sec:02d}s" if hours else f"{minutes}m {sec:02d}s"


def _status_rows(status: dict[str, Any]) -> str:
    db = status["database"]
    database = f"ok ({db['latencyMs']} ms)" if db["ok"] else "unreachable"
    rows = [("Version", status["version"]), ("Environment", status["environment"]),
            ("Uptime", _uptime(status["uptimeSec"])), ("Database", database),
            ("Twilio", status["twilio"]["mode"])]
    return "\n".join(f'<tr><th>{_esc(k)}</th><td data-field="{_esc(k.lower())}">{_esc(v)}</td></tr>'
                     for k, v in rows)


def _job_rows(tasks: list[dict[str, Any]]) -> str:
    def lag(value: float | None) -> str:
        return "no round yet" if value is None else f"{value:g} s"

    return "\n".join(f"<tr><td>{_esc(t['name'])}</td><td>{'running' if t['running'] else 'stopped'}</td>"
                     f"<td>{_esc(lag(t['lagSec']))}</td></tr>" for t in tasks) or '<tr><td colspan="3">none</td></tr>'


def _endpoint_rows(endpoints: list[dict[str, Any]]) -> str:
    return "\n".join(f"<tr><td>{_esc(e['method'])}</td><td><code>{_esc(e['path'])}</code></td>"
                     f"<td>{_esc(e['auth'])}</td></tr>" for e in endpoints)


@routes.get("/", name="console")
async def console(request: web.Request) -> web.Response:
    config = request.config_dict[config_key]
    status = await service_status(request)
    sandbox = ""
    if config.twilio.sandbox:
        sandbox = await _sandbox_panels(request)
    page = render(_template("page.html"), status_rows=_status_rows(status),
                  job_rows=_job_rows(status["backgroundTasks"]),
                  endpoint_rows=_endpoint_rows(status["endpoints"]), sandbox=sandbox)
    return web.Response(text=page, content_type="text/html", headers={
        # The page carries a token in development: never cached, never framed elsewhere.
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                   "style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; "
                                   "img-src 'self' data:; frame-ancestors 'none'",
    })


async def _sandbox_panels(request: web.Request) -> str:
    config = request.config_dict[config_key]
    user = config.sandbox.demo_user
    async with request.config_dict[pool_key].acquire() as conn:
        numbers = [row["e164"] for row in await list_numbers(conn, user)]
    boot = {"user": user, "numbers": numbers, "token": mint_token(config, user)}
    # "</" would end the script element: JSON may carry it escaped.
    boot_json = json.dumps(boot).replace("</", "<\\/")
    options = "".join(f'<option value="{_esc(n)}">{_esc(n)}</option>' for n in numbers)
    return render(_template("sandbox.html"), boot=boot_json, user=_esc(user), number_options=options,
                  numbers=_esc(", ".join(numbers) or "none: start with `commpro serve` to get the demo numbers"),
                  token=_esc(boot["token"]))


@sandbox_routes.post("/console/simulate/{kind:sms|call}", name="console_simulate")
async def simulate(request: web.Request) -> web.Response:
    """An inbound SMS or call to one of the caller's numbers, played by the sandbox through the
    signed webhooks: the sandbox's /_sandbox/simulate/*, without its credentials in the page."""
    kind = request.match_info["kind"]
    data = await json_body(request)
    fields = Fields(data, allowed=("from", "to", "body") if kind == "sms" else ("from", "to"))
    from_number, to_number = fields.e164("from"), fields.e164("to")
    body = fields.string("body", required=False, min_len=0, max_len=MAX_SIMULATED_BODY) if kind == "sms" else None
    fields.check()
    async with request.config_dict[pool_key].acquire() as conn:
        if await get_owned_number(conn, user_id(request), to_number) is None:
            raise Forbidden("'to' is not one of your numbers", details={"to": "not yours"})
    payload = {"from": from_number, "to": to_number}
    if kind == "sms":
        payload["body"] = body or ""
    try:
        status, result = await sandbox_post(request.config_dict[config_key], f"/simulate/{kind}", payload)
    except SandboxUnreachable:
        raise ServiceUnavailable("The sandbox did not answer") from None
    if status == 400:
        raise BadRequest(str(result))
    if status != 200:
        raise BadGateway(f"The sandbox answered {status}")
    return web.json_response(result)
