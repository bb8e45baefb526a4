"""The status batch statements (sql/0012, set-based, in rounds) against 0011's item-after-item
loops, and against themselves one callback at a time: a batch that holds several callbacks of
each call (or message), out of order, repeated, on every kind of leg, leaves the calls, legs,
messages, jobs, Voice Insights enrolments and events exactly as 0011's functions left them, and
as the same callbacks applied one by one, in the same order."""

from __future__ import annotations

import random
import uuid
from functools import partial
from pathlib import Path

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


MIGRATION_0011 = Path(__file__).parent.parent / "sql" / "0011_webhook_batches.sql"


def functions_of_0011() -> str:
    """0011's two status functions, as they were before 0012 replaced them, renamed *_0011."""
    text = MIGRATION_0011.read_text()
    text = text[text.index("CREATE FUNCTION call_status_callbacks"):]
    for name in ("call_status_callbacks", "message_status_callbacks"):
        text = text.replace(f"CREATE FUNCTION {name}(", f"CREATE FUNCTION {name}_0011(")
    return text


async def calls_0011(conn, items: list[dict]) -> list[str]:
    rows = await conn.fetch("SELECT n, outcome FROM call_status_callbacks_0011($1::jsonb, 'calls-prices', 30, "
                            "'voice-insights', 60, 'commpro_events') ORDER BY n",
                            [{**item, "n": n} for n, item in enumerate(items)])
    return [r["outcome"] for r in rows]


async def messages_0011(conn, items: list[dict]) -> list[str]:
    rows = await conn.fetch("SELECT n, outcome FROM message_status_callbacks_0011($1::jsonb, 'messages-prices', 30, "
                            "6, 'commpro_events') ORDER BY n", [{**item, "n": n} for n, item in enumerate(items)])
    return [r["outcome"] for r in rows]


async def batched_and_one_by_one(database_url: str, scenario, apply, read_state, reference=None,
                                 runs: tuple[str, ...] = ("batched", "one by one", "reference")
                                 ) -> list[tuple[list[str], dict]]:
    """(outcomes, state after) for each of `runs`, each a new user's scenario: applied as one
    batch, one callback at a time in the same order, or as one batch by `reference` (0011's
    function; that run only with it)."""
    pool = await create_pool(database_url)
    results = []
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute(functions_of_0011())
            for run in (r for r in runs if reference or r != "reference"):
                user = new_user()
                items, names = await scenario(conn, user)
                if run == "batched":
                    outcomes = await apply(conn, items)
                elif run == "one by one":
                    outcomes = [(await apply(conn, [item]))[0] for item in items]
                else:
                    outcomes = await reference(conn, items)
                results.append((outcomes, await read_state(conn, user, names)))
    finally:
        await pool.close()
    return results


apply_calls = partial(apply_status_callbacks, price_kind="calls-prices", price_after_s=30,
                      quality_kind="voice-insights", quality_after_s=60, channel="commpro_events")


@pytest.mark.parametrize("seed", range(6))
async def test_a_batch_ends_as_0011_and_as_its_callbacks_one_by_one(empty_database_url, seed):
    templates = callbacks(random.Random(seed))
    batched, one_by_one, reference = await batched_and_one_by_one(
        empty_database_url, lambda conn, user: scenario(conn, user, templates), apply_calls, state, calls_0011)
    assert batched == reference
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
async def test_a_message_status_batch_ends_as_0011_and_as_its_callbacks_one_by_one(empty_database_url, seed):
    rng = random.Random(seed)
    templates = [{"message": label, "status": (status := rng.choice(MESSAGE_STATUSES)), "by_id": rng.random() < 0.5,
                  "error": rng.choice((None, None, 30003)),
                  "erase": MESSAGE_RANK[status] >= 6 and rng.random() < 0.2}
                 for label in MESSAGES for _ in range(rng.randint(4, 8))]
    templates += [dict(t) for t in rng.sample(templates, 4)] + [{**templates[0], "message": None}]
    rng.shuffle(templates)
    apply = partial(status_store.apply_status_callbacks, price_kind="messages-prices", price_after_s=30,
                    channel="commpro_events")
    batched, one_by_one, reference = await batched_and_one_by_one(
        empty_database_url, lambda conn, user: message_scenario(conn, user, templates), apply, message_state,
        messages_0011)
    assert batched == reference
    assert batched == one_by_one
    outcomes, after = batched
    assert {"done", "slow", "unknown"} <= set(outcomes)
    assert after["events"] and after["jobs"]


ALL_STATUSES = tuple(STATUS_RANK)
INSERT_ANY_CALL = """
INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank, answered_by, dial_sid)
VALUES ($1, $2, $3, '+14155550100', '+447911123456', 'initiated', 0, $4, $5) RETURNING id
"""


async def wide_scenario(conn, user: str, seed: int) -> tuple[list[dict], dict]:
    """Calls in every state a callback can find them in (a dial leg already known, answered by
    either device, an app leg that took the call), and callbacks of every status, found by id,
    by the call's SID, by its dial SID or by a leg's SID."""
    rng = random.Random(seed)
    names: dict = {}
    calls = []
    for k in range(6):
        direction, confirmed = rng.choice((("outbound", True), ("outbound", False), ("inbound", True)))
        sid = "CA" + uuid.uuid4().hex if confirmed else None
        dial = "CA" + uuid.uuid4().hex if rng.random() < 0.3 else None
        call_id = await conn.fetchval(INSERT_ANY_CALL, user, sid, direction, rng.choice((None, None, "app", "phone")),
                                      dial)
        legs = ([dial] if dial else []) + ["CA" + uuid.uuid4().hex for _ in range(2)]
        names.update({str(call_id): f"c{k}", **({sid: f"c{k}"} if sid else {})})
        names.update({leg: f"c{k}-leg{j}" for j, leg in enumerate(legs)})
        if direction == "inbound" and rng.random() < 0.5:  # an app leg took it
            await conn.execute("INSERT INTO call_legs (sid, call_id, device, target, status, status_rank) "
                               "VALUES ($1, $2, 'app', 'client:x', 'in-progress', 2)", legs[-1], call_id)
            await conn.execute("UPDATE calls SET answered_leg_sid = $2 WHERE id = $1", call_id, legs[-1])
        calls.append((call_id, sid, legs))
    items = []
    for _ in range(40):
        call_id, sid, legs = rng.choice(calls)
        # Completed more often than the others: most of what a callback may do happens then.
        leg, status = rng.choice((None, "user", "user", "dial", "dial")), rng.choice(ALL_STATUSES + ("completed",) * 4)
        item_sid = rng.choice(legs) if leg == "dial" else (sid or "CA" + uuid.uuid4().hex)
        names.setdefault(item_sid, "other")
        items.append({
            "callId": str(call_id) if rng.random() < 0.6 or (sid is None and leg != "dial") else None,
            "sid": item_sid, "status": status, "rank": STATUS_RANK[status], "seq": rng.randint(0, 3),
            "duration": rng.choice((None, 0, 17)), "error": rng.choice((None, 31603)), "leg": leg,
            "parent": (sid if rng.random() < 0.5 else None) if leg == "dial" else None,
            "target": "+447911123456", "device": rng.choice(("phone", "app")),
            "accepts": leg == "dial" and status == "in-progress" and rng.random() < 0.3,
        })
    return items, names


@pytest.mark.parametrize("seed", range(12))
async def test_a_batch_of_any_callbacks_ends_as_0011(empty_database_url, seed):
    """Found by SIDs alone, a leg first recorded by the batch is not found by a later callback of
    the same batch, by either function (both find every call before applying any): compared
    batch with batch here, not with one by one."""
    batched, reference = await batched_and_one_by_one(
        empty_database_url, lambda conn, user: wide_scenario(conn, user, seed), apply_calls, state, calls_0011,
        runs=("batched", "reference"))
    assert batched == reference
    assert batched[1]["events"]
