"""The status batch statements (sql/0012, set-based, in rounds) against themselves one callback
at a time: a batch that holds several callbacks of each call (or message), out of order,
repeated, on every kind of leg, leaves the calls, legs, messages, jobs, Voice Insights
enrolments and events exactly as the same callbacks applied one by one, in the same order."""

from __future__ import annotations

import random
import uuid
from functools import partial

import pytest

from commpro.calls.store import STATUS_RANK, apply_status_callbacks
from commpro.db import create_pool, migrate
from commpro.messages import status_store
from commpro.messages.store import STATUS_RANK as MESSAGE_RANK
from tests.conftest import new_user

STATUSES = ("ringing", "in-progress", "completed", "busy", "no-answer", "in-progress", "completed")
# label: (direction, has its SID, the legs its callbacks come from)
CALLS = {
    "out": ("outbound", True, (None,)),
    "out-dialled": ("outbound", True, ("user", "dial")),
    "out-unconfirmed": ("outbound", False, (None, "user")),
    "in": ("inbound", True, (None, "dial")),
    "in-answered": ("inbound", True, ("dial",)),
}
INSERT_CALL = """
INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank, answered_by)
VALUES ($1, $2, $3, '+14155550100', '+447911123456', 'initiated', 0, $4) RETURNING id
"""


def callbacks(rng: random.Random) -> list[dict]:
    """Callbacks by label: several per call, in a shuffled order, some twice; and an unknown SID."""
    out = []
    for label, (direction, _, legs) in CALLS.items():
        for _ in range(rng.randint(4, 8)):
            leg = rng.choice(legs)
            status = rng.choice(STATUSES)
            out.append({
                "call": label, "leg": leg, "status": status, "seq": rng.randint(0, 4),
                "duration": rng.choice((None, 0, 30)), "error": rng.choice((None, None, 31603)),
                "dial": f"{label}-leg{rng.randint(1, 2)}" if leg == "dial" else None,
                # A screened phone leg (not accepting), or an app leg answering (accepting: slow).
                "accepts": leg == "dial" and direction == "inbound" and status == "in-progress" and rng.random() < 0.3,
                "parent": leg == "dial" and rng.random() < 0.5, "by_id": rng.random() < 0.5,
            })
    out += [dict(out[i]) for i in rng.sample(range(len(out)), 6)]  # retried webhooks
    out.append({**out[0], "call": None})
    # The first leg of a call whose SID is still to adopt: left to the Python code.
    out.append({**out[0], "call": "out-unconfirmed", "leg": "user", "dial": None, "accepts": False, "parent": False})
    rng.shuffle(out)
    return out


async def scenario(conn, user: str, templates: list[dict]) -> tuple[list[dict], dict]:
    """This user's calls, and the callbacks' items with this user's SIDs; labels by SID and id."""
    names = {}
    sids = {}
    ids = {}
    for label, (direction, confirmed, _) in CALLS.items():
        sid = "CA" + uuid.uuid4().hex if confirmed else None
        answered_by = "app" if label == "in-answered" else None
        call_id = await conn.fetchval(INSERT_CALL, user, sid, direction, answered_by)
        sids[label] = sid
        ids[label] = str(call_id)
        names[str(call_id)] = label
        if sid:
            names[sid] = label
    legs = {}
    items = []
    for t in templates:
        if t["call"] is None:
            sid = "CA" + uuid.uuid4().hex
        elif t["dial"]:
            sid = legs.setdefault(t["dial"], "CA" + uuid.uuid4().hex)
            names[sid] = t["dial"]
        else:
            sid = sids[t["call"]] or "CA" + uuid.uuid4().hex
        items.append({
            # The legs' callbacks carry the call's id, as our TwiML and creates ask; a parent leg's
            # may have only its SID (a status callback URL set in Twilio's console).
            "callId": ids[t["call"]] if t["call"] and (t["by_id"] or t["leg"] or not sids[t["call"]]) else None,
            "sid": sid, "status": t["status"], "rank": STATUS_RANK[t["status"]], "seq": t["seq"],
            "duration": t["duration"], "error": t["error"], "leg": t["leg"],
            "parent": sids[t["call"]] if t["parent"] else None, "target": "+447911123456",
            "device": "phone", "accepts": t["accepts"],
        })
    return items, names


async def state(conn, user: str, names: dict) -> dict:
    """Everything the callbacks changed, with SIDs and ids as labels and times as present or not."""
    def name(value) -> str | None:
        return None if value is None else names[str(value)]

    calls = await conn.fetch("SELECT * FROM calls WHERE user_id = $1", user)
    ids = [c["id"] for c in calls]
    legs = await conn.fetch("SELECT * FROM call_legs WHERE call_id = ANY($1)", ids)
    jobs = await conn.fetch("SELECT kind, key FROM jobs WHERE key = ANY($1)", [str(i) for i in ids])
    quality = await conn.fetch("SELECT call_id, call_sid FROM call_quality WHERE call_id = ANY($1)", ids)
    events = await conn.fetch("SELECT seq, type, payload FROM events WHERE user_id = $1 ORDER BY seq", user)
    return {
        "calls": sorted((name(c["id"]), c["status"], c["status_rank"], c["sequence_number"], name(c["dial_sid"]),
                         c["answered_at"] is None, c["ended_at"] is None, c["duration_s"], c["error_code"])
                        for c in calls),
        "legs": sorted((name(g["sid"]), name(g["call_id"]), g["device"], g["status"], g["status_rank"],
                        g["sequence_number"], g["answered_at"] is None, g["ended_at"] is None, g["duration_s"])
                       for g in legs),
        "jobs": sorted((j["kind"], name(j["key"])) for j in jobs),
        "quality": sorted((name(q["call_id"]), name(q["call_sid"])) for q in quality),
        "events": [(e["seq"], e["type"], name(e["payload"]["callId"]), e["payload"]["status"]) for e in events],
    }


async def batched_and_one_by_one(database_url: str, scenario, apply, read_state) -> list[tuple[list[str], dict]]:
    """(outcomes, state after) of a new user's scenario applied as one batch, then of another's
    applied one callback at a time, in the same order."""
    pool = await create_pool(database_url)
    runs = []
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            for batched in (True, False):
                user = new_user()
                items, names = await scenario(conn, user)
                outcomes = await apply(conn, items) if batched else [(await apply(conn, [i]))[0] for i in items]
                runs.append((outcomes, await read_state(conn, user, names)))
    finally:
        await pool.close()
    return runs


@pytest.mark.parametrize("seed", range(6))
async def test_a_batch_ends_as_its_callbacks_one_by_one(empty_database_url, seed):
    templates = callbacks(random.Random(seed))
    apply = partial(apply_status_callbacks, price_kind="calls-prices", price_after_s=30, quality_kind="voice-insights",
                    quality_after_s=60, channel="commpro_events")
    batched, one_by_one = await batched_and_one_by_one(
        empty_database_url, lambda conn, user: scenario(conn, user, templates), apply, state)
    assert batched == one_by_one
    outcomes, after = batched
    assert {"done", "slow", "unknown"} <= set(outcomes)
    # Not vacuous: calls moved, legs were recorded, and events were published.
    assert after["events"] and after["legs"] and after["jobs"]

MESSAGE_STATUSES = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled", "read", "sent")
# label: (direction, has its SID)
MESSAGES = {"out": ("outbound", True), "out-unconfirmed": ("outbound", False), "in": ("inbound", True)}
INSERT_MESSAGE = """
INSERT INTO messages (user_id, contact_id, sid, direction, from_number, to_number, status, status_rank)
VALUES ($1, $2, $3, $4, '+14155550100', '+447911123456', 'queued', 2) RETURNING id
"""


async def message_scenario(conn, user: str, templates: list[dict]) -> tuple[list[dict], dict]:
    contact = await conn.fetchval("INSERT INTO contacts (user_id, phone_number) VALUES ($1, '+447911123456') "
                                  "RETURNING id", user)
    names, sids, ids = {}, {}, {}
    for label, (direction, confirmed) in MESSAGES.items():
        sid = "SM" + uuid.uuid4().hex if confirmed else None
        message_id = await conn.fetchval(INSERT_MESSAGE, user, contact, sid, direction)
        sids[label], ids[label] = sid, str(message_id)
        names[str(message_id)] = label
    items = [{"messageId": ids[t["message"]] if t["message"] and (t["by_id"] or not sids[t["message"]]) else None,
              "sid": (t["message"] and sids[t["message"]]) or "SM" + uuid.uuid4().hex, "status": t["status"],
              "rank": MESSAGE_RANK[t["status"]], "error": t["error"], "errorMessage": t["error"] and "Unreachable",
              "erase": t["erase"]} for t in templates]
    return items, names


async def message_state(conn, user: str, names: dict) -> dict:
    messages = await conn.fetch("SELECT * FROM messages WHERE user_id = $1", user)
    keys = [str(m["id"]) for m in messages]
    jobs = await conn.fetch("SELECT kind, key FROM jobs WHERE key = ANY($1)", keys)
    events = await conn.fetch("SELECT seq, type, payload FROM events WHERE user_id = $1 ORDER BY seq", user)
    return {
        "messages": sorted((names[str(m["id"])], m["status"], m["status_rank"], m["error_code"], m["error_message"],
                            m["price_state"]) for m in messages),
        "jobs": sorted((j["kind"], names[j["key"]]) for j in jobs),
        "events": [(e["seq"], e["type"], names[e["payload"]["messageId"]], e["payload"]["status"]) for e in events],
    }


@pytest.mark.parametrize("seed", range(4))
async def test_a_message_status_batch_ends_as_its_callbacks_one_by_one(empty_database_url, seed):
    rng = random.Random(seed)
    templates = [{"message": label, "status": (status := rng.choice(MESSAGE_STATUSES)), "by_id": rng.random() < 0.5,
                  "error": rng.choice((None, None, 30003)),
                  "erase": MESSAGE_RANK[status] >= 6 and rng.random() < 0.2}
                 for label in MESSAGES for _ in range(rng.randint(4, 8))]
    templates += [dict(t) for t in rng.sample(templates, 4)] + [{**templates[0], "message": None}]
    rng.shuffle(templates)
    apply = partial(status_store.apply_status_callbacks, price_kind="messages-prices", price_after_s=30,
                    channel="commpro_events")
    batched, one_by_one = await batched_and_one_by_one(
        empty_database_url, lambda conn, user: message_scenario(conn, user, templates), apply, message_state)
    assert batched == one_by_one
    outcomes, after = batched
    assert {"done", "slow", "unknown"} <= set(outcomes)
    assert after["events"] and after["jobs"]
