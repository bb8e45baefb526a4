"""Encryption at rest: nothing readable in the database, ciphertexts bound to their row and user,
fresh nonces, master-key rotation, and erasure by shredding a user's key."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import aiohttp
import pytest
from cryptography.exceptions import InvalidTag

from commpro.keys import KeyRing
from commpro.keys import store as keys
from commpro.settings import CryptoSettings
from tests.conftest import PYTHON, REPO, new_user, python_env

PEER = "+447911123456"
SECRET = "the vault code is 7-4-1-9, burn this message"
PNG = b"\x89PNG\r\n\x1a\n" + b"secret-pixels" * 8


def master() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def exchange(service, user: str, number: str) -> None:
    """An outbound SMS, an outbound MMS and an inbound SMS, all carrying SECRET."""
    auth = service.auth(user)
    resp = await service.client.post("/api/messages/send", json={"from": number, "to": PEER, "body": SECRET},
                                     headers=auth)
    assert resp.status == 201
    form = aiohttp.FormData()
    form.add_field("from", number)
    form.add_field("to", PEER)
    form.add_field("body", SECRET)
    form.add_field("media", PNG, filename="p.png", content_type="image/png")
    assert (await service.client.post("/api/messages/send-mms", data=form, headers=auth)).status == 201
    params = {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number, "Body": SECRET, "NumMedia": "0"}
    assert (await service.webhook("/webhook/sms", params)).status == 200
    await service.sandbox_idle()


async def bodies(service, user: str) -> list[tuple[str | None, str]]:
    convs = await (await service.client.get("/api/messages/conversations", headers=service.auth(user))).json()
    out = []
    for conv in convs["conversations"]:
        resp = await service.client.get(f"/api/messages/conversations/{conv['contactId']}", headers=service.auth(user))
        out += [(m["body"], m["content"]) for m in (await resp.json())["messages"]]
    return out


async def test_no_plaintext_anywhere_in_the_database(service):
    user = new_user()
    number = await service.add_number(user)
    await exchange(service, user, number)
    assert await bodies(service, user) == [(SECRET, "available")] * 3
    async with service.pool.acquire() as conn:
        tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        dump = "\n".join([str(await conn.fetch(f'SELECT * FROM "{t}"')) for t in tables])
    assert "vault code" not in dump and SECRET not in dump
    assert "secret-pixels" not in dump and b"secret-pixels".hex() not in dump
    async with service.pool.acquire() as conn:
        wrapped = await conn.fetchval("SELECT wrapped_key FROM user_keys WHERE user_id = $1", user)
    # nonce + the 32-byte key sealed + the GCM tag: the key itself is never stored.
    assert wrapped is not None and len(wrapped) == 12 + 32 + 16


async def test_a_ciphertext_moved_to_another_row_or_user_does_not_open(service):
    alice, bob = new_user(), new_user()
    alice_number, bob_number = await service.add_number(alice), await service.add_number(bob)
    for user, number, text in ((alice, alice_number, "alice's"), (bob, bob_number, "bob's")):
        for i in range(2):
            await service.webhook("/webhook/sms", {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER,
                                                   "To": number, "Body": f"{text} {i}"})
    async with service.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, user_id, body_ciphertext, body_nonce FROM messages "
                                "WHERE user_id = ANY($1::text[]) ORDER BY created_at", [alice, bob])
        a1, a2, b1, _ = rows
        # Alice's second message gets her first one's ciphertext; Bob's first gets Alice's.
        await conn.execute("UPDATE messages SET body_ciphertext = $2, body_nonce = $3 WHERE id = $1",
                           a2["id"], a1["body_ciphertext"], a1["body_nonce"])
        await conn.execute("UPDATE messages SET body_ciphertext = $2, body_nonce = $3 WHERE id = $1",
                           b1["id"], a1["body_ciphertext"], a1["body_nonce"])
    assert sorted(await bodies(service, alice), key=str) == sorted(
        [("alice's 0", "available"), (None, "unreadable")], key=str)
    assert sorted(await bodies(service, bob), key=str) == sorted([("bob's 1", "available"), (None, "unreadable")], key=str)


async def test_nonces_never_repeat(service):
    user = new_user()
    number = await service.add_number(user)
    for _ in range(40):
        await service.webhook("/webhook/sms", {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number,
                                               "Body": "same words"})
    async with service.pool.acquire() as conn:
        rows = await conn.fetch("SELECT body_nonce, body_ciphertext FROM messages WHERE user_id = $1", user)
    assert len({r["body_nonce"] for r in rows}) == len({r["body_ciphertext"] for r in rows}) == 40
    assert all(len(r["body_nonce"]) == 12 for r in rows)


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(PYTHON, "-m", "commpro", *args, cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_rotate_master_is_resumable_and_everything_still_decrypts(start_service, empty_database_url, tmp_path):
    # A database of its own: every other test's keys are wrapped by its own dev master key.
    database_url = empty_database_url
    old, new = master(), master()
    service = await start_service(COMMPRO_MASTER_KEY=old, DATABASE_URL=database_url)
    users = [new_user() for _ in range(3)]
    for user in users:
        await exchange(service, user, await service.add_number(user))
    # During the rotation the servers know both: the new key, and the old one as previous.
    rotating = await start_service(COMMPRO_MASTER_KEY=new, COMMPRO_CRYPTO_PREVIOUS_MASTER_KEYS=old,
                                   DATABASE_URL=database_url)
    # As if an earlier run had been interrupted after the first user.
    ring = KeyRing(rotating.config.crypto)
    async with rotating.pool.acquire() as conn:
        row = await keys.get_user_key(conn, users[0])
        await keys.rewrap(conn, users[0], ring.wrap(users[0], ring.unwrap(users[0], row["wrapped_key"],
                                                                          row["master_key_id"])), ring.current_id)
    env = python_env(DATABASE_URL=database_url, COMMPRO_APP_DATA_DIR=str(tmp_path / "cli"),
                     COMMPRO_MASTER_KEY=new, COMMPRO_CRYPTO_PREVIOUS_MASTER_KEYS=old)
    async with rotating.pool.acquire() as conn:
        pending = await keys.count_to_rewrap(conn, ring.current_id)
    assert pending >= 2
    code, _, err = await run_cli("keys", "rotate-master", "--batch", "1", env=env)
    assert code == 0, err
    assert f"re-wrapped {pending} data key(s)" in err and f"{pending}/{pending}" in err
    code, _, err = await run_cli("keys", "rotate-master", env=env)
    assert code == 0 and "re-wrapped 0 data key(s)" in err
    # Now the old key can go: a server with the new one alone reads everything.
    after = await start_service(COMMPRO_MASTER_KEY=new, DATABASE_URL=database_url)
    for user in users:
        assert await bodies(after, user) == [(SECRET, "available")] * 3


async def test_shred_erases_a_users_content_and_says_so(start_service, database_url, tmp_path):
    service = await start_service(COMMPRO_CRYPTO_KEY_CACHE_TTL_S="0")
    user, other = new_user(), new_user()
    number, other_number = await service.add_number(user), await service.add_number(other)
    await exchange(service, user, number)
    await exchange(service, other, other_number)
    env = python_env(DATABASE_URL=database_url, COMMPRO_APP_DATA_DIR=str(tmp_path / "data"))
    code, _, err = await run_cli("keys", "shred", user, env=env)
    assert code == 1 and "--yes" in err
    code, _, err = await run_cli("keys", "shred", user, "--yes", env=env)
    assert code == 0, err
    assert await bodies(service, user) == [(None, "erased")] * 3
    convs = await (await service.client.get("/api/messages/conversations", headers=service.auth(user))).json()
    assert convs["conversations"][0]["lastMessage"]["content"] == "erased"
    assert await bodies(service, other) == [(SECRET, "available")] * 3  # nobody else is touched
    # What arrives afterwards is readable again, under a new key.
    await service.webhook("/webhook/sms", {"MessageSid": "SM" + uuid.uuid4().hex, "From": PEER, "To": number,
                                           "Body": "after"})
    assert ("after", "available") in await bodies(service, user)
    code, _, err = await run_cli("keys", "shred", new_user(), "--yes", env=env)
    assert code == 1 and "no data key" in err


def test_wrapped_keys_are_bound_to_their_user():
    ring = KeyRing(CryptoSettings(master_key=master()))
    wrapped = ring.wrap("alice", b"k" * 32)
    assert ring.unwrap("alice", wrapped, ring.current_id) == b"k" * 32
    with pytest.raises(InvalidTag):
        ring.unwrap("bob", wrapped, ring.current_id)
    with pytest.raises(RuntimeError, match="not configured"):
        ring.unwrap("alice", wrapped, "0" * 16)
