"""Every JWT case refused with a JSON 401, a valid token accepted, public paths exactly public."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from commpro.auth import auth_for_path


def token(secret: str, alg: str = "HS256", **claims) -> str:
    now = int(time.time())
    body = {"sub": "alice", "iat": now, "exp": now + 300}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm=alg)


def unsigned(**claims) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return part({"alg": "none", "typ": "JWT"}) + "." + part({"sub": "alice", "exp": now + 300, **claims}) + "."


async def get_status(service, authorization: str | None) -> tuple[int, dict]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = await service.client.get("/status", headers=headers)
    return resp.status, await resp.json()


async def test_a_valid_token_is_accepted(service):
    status, body = await get_status(service, f"Bearer {service.token()}")
    assert status == 200 and body["service"] == "commpro"


@pytest.mark.parametrize(
    "case",
    ["missing", "malformed", "expired", "no_exp", "no_sub", "empty_sub", "alg_none", "wrong_secret",
     "hs512_not_allowed", "bearerx", "lowercase_scheme", "basic", "two_spaces", "not_yet_valid"],
)
async def test_bad_tokens_are_refused(service, case, logs):
    secret = service.config.auth.jwt_secret
    now = int(time.time())
    authorization = {
        "missing": None,
        "malformed": "Bearer not.a.jwt",
        "expired": f"Bearer {token(secret, exp=now - 3600)}",
        "no_exp": f"Bearer {token(secret, exp=None)}",
        "no_sub": f"Bearer {token(secret, sub=None)}",
        "empty_sub": f"Bearer {token(secret, sub='')}",
        "alg_none": f"Bearer {unsigned()}",
        "wrong_secret": f"Bearer {token('another-secret-of-sufficient-length-000')}",
        "hs512_not_allowed": f"Bearer {token(secret, alg='HS512')}",
        "bearerx": f"BearerX {token(secret)}",
        "lowercase_scheme": f"bearer {token(secret)}",
        "basic": "Basic YWxpY2U6cGFzcw==",
        "two_spaces": f"Bearer  {token(secret)}",
        "not_yet_valid": f"Bearer {token(secret, nbf=now + 3600)}",
    }[case]
    status, body = await get_status(service, authorization)
    assert status == 401
    assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    refused = [r for r in logs.records() if r["event"] == "auth_refused"]
    assert len(refused) == 1 and "exception" not in refused[0]
    if authorization:
        assert authorization.split()[-1] not in logs.getvalue()


async def test_clock_skew_within_leeway_is_tolerated(service):
    now = int(time.time())
    secret = service.config.auth.jwt_secret
    status, _ = await get_status(service, f"Bearer {token(secret, exp=now - 5, iat=now + 5)}")
    assert status == 200
    status, _ = await get_status(service, f"Bearer {token(secret, exp=now - 120)}")
    assert status == 401


async def test_audience_and_issuer_are_checked_when_configured(start_service):
    service = await start_service(JWT_AUDIENCE="commpro-apps", JWT_ISSUER="https://id.example.com")
    secret = service.config.auth.jwt_secret
    good = token(secret, aud="commpro-apps", iss="https://id.example.com")
    assert (await get_status(service, f"Bearer {good}"))[0] == 200
    for bad in (
        token(secret, aud="another-app", iss="https://id.example.com"),
        token(secret, aud="commpro-apps", iss="https://evil.example.com"),
        token(secret, iss="https://id.example.com"),
    ):
        status, body = await get_status(service, f"Bearer {bad}")
        assert status == 401, body


async def test_rs256_with_a_public_key_and_no_key_confusion(start_service):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    service = await start_service(JWT_ALGORITHMS="RS256", JWT_PUBLIC_KEY=public_pem)
    assert (await get_status(service, f"Bearer {token(private, alg='RS256')}"))[0] == 200
    # The classic attack: HS256 "signed" with the public key as the HMAC secret.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps({"sub": "mallory", "exp": int(time.time()) + 60}).encode()).rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(public_pem.encode(), header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    status, _ = await get_status(service, "Bearer " + (header + b"." + payload + b"." + sig).decode())
    assert status == 401


@pytest.mark.parametrize(
    "path",
    ["/healthz/../status", "/webhook/../status", "/webhook/sms/../../status", "/readyz%2F..%2Fstatus",
     "/healthzstatus", "/_sandbox/../status", "/webhook/sms/x/../../../status"],
)
async def test_no_public_prefix_opens_a_protected_path(service, path):
    async with aiohttp.ClientSession() as session, session.get(URL(service.url + path, encoded=True)) as resp:
        assert resp.status in (401, 404), path
        if resp.status == 401:
            assert (await resp.json())["error"]["code"] == "unauthorized"


def test_public_patterns_are_anchored():
    assert auth_for_path("/healthz") == "none"
    assert auth_for_path("/healthz/") == "jwt"
    assert auth_for_path("/xhealthz") == "jwt"
    assert auth_for_path("/webhook/sms") == "twilio-signature"
    assert auth_for_path("/webhook/voice/status") == "twilio-signature"
    assert auth_for_path("/webhook/../api/calls") == "jwt"
    assert auth_for_path("/api/webhook/sms") == "jwt"
    assert auth_for_path("/status") == "jwt"
