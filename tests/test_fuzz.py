"""schemathesis against the live service (issue 11): a small seeded run here, the full one in
`make harden`. Checks: not_a_server_error, response_schema_conformance, negative_data_rejection,
ignored_auth; and object-level authorisation (user A's ids with user B's token are 404)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import create_database, fresh_number, new_user
from tests.fuzz import FUZZ_ENV, ThreadedService, fuzz, object_level_authorization, seed_user

SEED, EXAMPLES = 20261121, 6


@pytest.fixture
def fuzzed(make_config, pg_server_url):
    # A database of its own: the call seeded here must not reach other tests' pollers.
    database_url = asyncio.run(create_database(pg_server_url))
    with ThreadedService(make_config(DATABASE_URL=database_url, **FUZZ_ENV)) as service:
        yield service, seed_user(service, new_user(), fresh_number())


def test_seeded_fuzz_finds_nothing(fuzzed):
    service, owned = fuzzed
    result = fuzz(service, service.token(owned.user), examples=EXAMPLES, seed=SEED)
    print(f"fuzz: {result.cases} cases, statuses {sorted(result.by_status.items())}")
    assert result.cases >= 200
    assert not result.failures, f"{len(result.failures)} failures:\n\n" + "\n\n".join(result.failures[:5])
    assert not [status for status in result.by_status if status >= 500]


def test_user_b_gets_404_for_every_object_of_user_a(fuzzed):
    service, owned = fuzzed
    cases, failures = object_level_authorization(service, owned, new_user())
    assert cases >= 8
    assert not failures, "\n".join(failures)
