"""The job queue (commpro.jobs) with a real PostgreSQL and real apps: claims and leases across
instances, backoff with jitter, give-up, metrics, recurring jobs, idempotent enqueue, restarts."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from commpro.appkeys import jobs_key, tasks_key
from commpro.db import MIGRATIONS_DIR, load_migrations, migrate
from commpro.jobs import Backoff, GiveUp, Kind, Retry, enqueue, job_stats, run_due
from commpro.jobs import store as job_store
from commpro.jobs.store import get_job
from commpro.messages.media import MEDIA_FETCH
from commpro.messages.prices import PRICES as MESSAGE_PRICES
from tests.conftest import WAIT_S, new_user


def kind_name() -> str:
    """Each test its own kind: the test database is shared by the whole run."""
    return "test-" + uuid.uuid4().hex[:8]


def registering(*kinds: Kind):
    def hook(app) -> None:
        for kind in kinds:
            app[jobs_key].register(kind)

    return hook


async def add_job(service, kind: str, key: str = "k", run_at: datetime | None = None, **kw) -> bool:
    async with service.pool.acquire() as conn:
        return await enqueue(conn, kind, key, run_at=run_at, **kw)


async def job_row(service, kind: str, key: str = "k"):
    async with service.pool.acquire() as conn:
        return await get_job(conn, kind, key)


async def test_a_failing_job_is_retried_and_shutdown_stops_its_loop(start_service, logs):
    name, runs, second_run = kind_name(), [], asyncio.Event()

    async def flaky(app, job) -> None:
        runs.append(job.attempts)
        if len(runs) == 1:
            raise RuntimeError("transient")
        second_run.set()

    kind = Kind(name, flaky, Backoff(first_s=0.01, jitter=0), poll_s=0.05)
    service = await start_service(app_hook=registering(kind))
    await add_job(service, name)
    service.app[jobs_key].wake(name)
    await asyncio.wait_for(second_run.wait(), WAIT_S)
    await service.app[jobs_key].between_rounds(name)
    assert runs == [1, 2]
    crashed = [r for r in logs.records() if r["event"] == "job_crashed" and r["kind"] == name]
    assert crashed and "RuntimeError: transient" in crashed[0]["exception"]
    row = await job_row(service, name)
    assert (row["state"], row["attempts"], row["claim"]) == ("done", 2, None)
    task = service.app[tasks_key][name]
    resp = await service.client.get("/status", headers=service.auth())
    listed = {t["name"]: t for t in (await resp.json())["backgroundTasks"]}
    assert listed[name]["running"] is True
    assert listed[name]["jobs"] == {"due": 0, "running": 0, "failed": 0, "lagSec": 0.0}
    assert set(listed["calls-prices"]["jobs"]) == {"due", "running", "failed", "lagSec"}
    await service.client.close()
    assert task.cancelled()
    assert any(r["event"] == "background_stopped" and r["task"] == name for r in logs.records())


async def test_a_job_whose_database_connection_dies_is_retried_without_a_traceback(start_service, logs):
    """The database going away under a job is an outage, not a bug: the job is due again after
    its backoff, and the log says so in one line (the health tracker reports the outage)."""
    name = kind_name()

    async def loses_its_connection(app, job) -> None:
        async with service.pool.acquire() as conn:
            async with service.pool.acquire() as other:
                await other.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            await conn.fetchval("SELECT 1")

    kind = Kind(name, loses_its_connection, Backoff(first_s=30, jitter=0), poll_s=3600)
    service = await start_service(app_hook=registering(kind))
    now = datetime.now(UTC) + timedelta(hours=1)
    await add_job(service, name, run_at=now)  # beyond the loop's reach: driven by hand
    assert await run_due(service.app, name, now=now) == 0
    row = await job_row(service, name)
    assert (row["state"], row["attempts"], row["run_at"]) == ("pending", 1, now + timedelta(seconds=30))
    lines = [r for r in logs.records() if r.get("kind") == name]
    assert [r["event"] for r in lines] == ["job_interrupted", "job_retry"]
    assert not [r for r in lines if "exception" in r]


def test_backoff_doubles_with_jitter_within_its_bounds():
    backoff = Backoff(first_s=5, max_s=60, jitter=0.2)
    assert [backoff.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]
    assert [backoff.delay(n, rand=lambda: 1.0) for n in (1, 2, 5)] == [4, 8, 48]
    delays = [backoff.delay(2) for _ in range(500)]
    assert all(8 <= d <= 10 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # spread out, not one value


async def test_a_retried_job_is_due_again_after_its_jittered_backoff(start_service):
    name = kind_name()

    async def refuse(app, job) -> None:
        raise Retry("not yet")

    kind = Kind(name, refuse, Backoff(first_s=30, max_s=600, jitter=0.5), poll_s=3600)
    service = await start_service(app_hook=registering(kind))
    now = datetime.now(UTC) + timedelta(hours=1)
    await add_job(service, name, run_at=now)  # beyond the loop's reach: driven by hand
    for attempt in (1, 2, 3):
        assert await run_due(service.app, name, now=now) == 0
        row = await job_row(service, name)
        base = 30 * 2 ** (attempt - 1)
        assert (row["attempts"], row["last_error"], row["state"]) == (attempt, "not yet", "pending")
        assert now + timedelta(seconds=base * 0.5) <= row["run_at"] <= now + timedelta(seconds=base)
        # Not due before its time.
        assert await run_due(service.app, name, now=row["run_at"] - timedelta(milliseconds=1)) == 0
        assert (await job_row(service, name))["attempts"] == attempt
        now = row["run_at"]


async def test_give_up_after_max_attempts_or_the_window_logs_the_reason(start_service, logs):
    name, marked = kind_name(), []

    async def refuse(app, job) -> None:
        if job.key == "refused":
            raise GiveUp("too large")
        raise Retry("HTTP 503")

    async def gave_up(conn, job, reason) -> None:
        marked.append((job.key, reason, conn.is_in_transaction()))

    kind = Kind(name, refuse, Backoff(first_s=60, max_s=60, jitter=0, max_attempts=3, give_up_after_s=3600),
                poll_s=3600, gave_up=gave_up)
    service = await start_service(app_hook=registering(kind))
    later = datetime.now(UTC) + timedelta(minutes=1)
    for key in ("attempts", "refused"):
        await add_job(service, name, key, run_at=later)
    now = later
    for _ in range(5):
        await run_due(service.app, name, now=now)
        now += timedelta(minutes=2)
    row = await job_row(service, name, "attempts")
    assert (row["state"], row["attempts"], row["last_error"]) == ("failed", 3, "HTTP 503 (3 attempts)")
    row = await job_row(service, name, "refused")
    assert (row["state"], row["attempts"], row["last_error"]) == ("failed", 1, "too large")
    assert sorted(marked) == [("attempts", "HTTP 503 (3 attempts)", True), ("refused", "too large", True)]
    gave_up_logs = {r["key"]: r for r in logs.records() if r["event"] == "job_gave_up" and r["kind"] == name}
    assert gave_up_logs["attempts"]["reason"] == "HTTP 503 (3 attempts)" and gave_up_logs["attempts"]["level"] == "warning"
    assert gave_up_logs["refused"]["reason"] == "too large"
    # The window: a job enqueued long ago is given up once its next attempt would fall outside it.
    async with service.pool.acquire() as conn:
        await enqueue(conn, name, "window", run_at=later)
        await conn.execute("UPDATE jobs SET created_at = $3 WHERE kind = $1 AND key = $2", name, "window",
                           later - timedelta(minutes=59, seconds=30))
    await run_due(service.app, name, now=later)
    row = await job_row(service, name, "window")
    assert (row["state"], row["attempts"]) == ("failed", 1) and "no success within 3600 s" in row["last_error"]


async def test_metrics_per_kind(start_service):
    name, started, release = kind_name(), asyncio.Event(), asyncio.Event()

    async def work(app, job) -> None:
        if job.key == "bad":
            raise GiveUp("refused")
        if job.key == "slow":
            started.set()
            await release.wait()

    kind = Kind(name, work, poll_s=3600)
    service = await start_service(COMMPRO_METRICS_TOKEN="m", app_hook=registering(kind))
    t0 = datetime.now(UTC)
    soon, later = t0 + timedelta(hours=1), t0 + timedelta(hours=3)
    await add_job(service, name, "bad", run_at=soon)
    await add_job(service, name, "slow", run_at=soon + timedelta(minutes=30))
    for key in ("a", "b"):
        await add_job(service, name, key, run_at=later)
    assert await run_due(service.app, name, now=soon) == 0  # "bad" gives up
    running = asyncio.create_task(run_due(service.app, name, now=soon + timedelta(minutes=31)))
    await asyncio.wait_for(started.wait(), WAIT_S)
    figures = (await job_stats(service.app, now=later + timedelta(seconds=90)))[name]
    assert figures == {"due": 2, "running": 1, "failed": 1, "lagSec": 90.0}
    release.set()
    assert await asyncio.wait_for(running, WAIT_S) == 1
    resp = await service.client.get("/metrics", headers={"Authorization": "Bearer m"})
    text = await resp.text()
    # Scraped in real time: "a" and "b" are not due yet.
    assert f'commpro_jobs_due{{kind="{name}"}} 0.0' in text
    assert f'commpro_jobs_running{{kind="{name}"}} 0.0' in text
    assert f'commpro_jobs_failed{{kind="{name}"}} 1.0' in text
    assert f'commpro_jobs_lag_seconds{{kind="{name}"}} 0.0' in text
    assert f'commpro_job_runs_total{{kind="{name}",outcome="gave_up"}} 1.0' in text
    assert f'commpro_job_runs_total{{kind="{name}",outcome="done"}} 1.0' in text
    assert f'commpro_job_failures_total{{kind="{name}"}} 1.0' in text
    assert 'commpro_jobs_due{kind="voice-insights"}' in text


async def test_recurring_retention_of_events_and_rate_limit_buckets(start_service, make_config, empty_database_url):
    # A database of its own: no other process of the run holds a lease on the recurring rows.
    service = await start_service(config=make_config(DATABASE_URL=empty_database_url,
                                                     COMMPRO_JOBS_RATE_LIMIT_IDLE_S="7200"))
    t0 = datetime.now(UTC)
    old_user, new_user_id = new_user(), new_user()
    async with service.pool.acquire() as conn:
        for user, age in ((old_user, timedelta(days=8)), (new_user_id, timedelta(0))):
            await conn.execute("INSERT INTO events (user_id, seq, type, payload, created_at) "
                               "VALUES ($1, 1, 't', '{}', $2)", user, t0 - age)
        for user, age in ((old_user, timedelta(hours=3)), (new_user_id, timedelta(0))):
            await conn.execute("INSERT INTO rate_limits (user_id, name, tokens, updated_at) VALUES ($1, 'sms', 1, $2)",
                               user, t0 - age)
    # Each recurring kind has its one row; it runs at start-up, then every interval.
    intervals = {"events-retention": service.config.events.retention_interval_s,
                 "rate-limits-retention": service.config.jobs.retention_interval_s}
    for kind, interval in intervals.items():
        await service.app[jobs_key].between_rounds(kind)
        next_round = t0 + timedelta(seconds=interval + 60)
        assert await run_due(service.app, kind, now=next_round) == 1
        row = await job_row(service, kind, "recurring")
        assert (row["state"], row["attempts"]) == ("pending", 0)
        assert row["run_at"] == next_round + timedelta(seconds=interval)
        assert await run_due(service.app, kind, now=next_round) == 0  # not due again before then
    async with service.pool.acquire() as conn:
        events = await conn.fetch("SELECT user_id FROM events WHERE user_id = ANY($1)", [old_user, new_user_id])
        buckets = await conn.fetch("SELECT user_id FROM rate_limits WHERE user_id = ANY($1)", [old_user, new_user_id])
    assert [r["user_id"] for r in events] == [new_user_id]
    assert [r["user_id"] for r in buckets] == [new_user_id]


async def test_finished_jobs_are_purged_after_their_retention(start_service, make_config, empty_database_url):
    name = kind_name()

    async def ok(app, job) -> None:
        return None

    service = await start_service(config=make_config(DATABASE_URL=empty_database_url),
                                  app_hook=registering(Kind(name, ok, poll_s=3600)))
    t0 = datetime.now(UTC)
    await add_job(service, name, run_at=t0 + timedelta(hours=1))
    assert await run_due(service.app, name, now=t0 + timedelta(hours=1)) == 1
    assert (await job_row(service, name))["state"] == "done"
    # Enqueued again while kept: nothing happens twice.
    assert await add_job(service, name) is False
    assert await run_due(service.app, name, now=t0 + timedelta(hours=2)) == 0
    retention = service.config.jobs.retention_s + service.config.jobs.retention_interval_s
    await service.app[jobs_key].between_rounds("jobs-retention")
    assert await run_due(service.app, "jobs-retention", now=t0 + timedelta(seconds=retention + 60)) == 1
    assert await job_row(service, name) is None


async def test_enqueue_is_idempotent_and_transactional(service):
    name = kind_name()
    async with service.pool.acquire() as conn:
        async with conn.transaction():
            assert await enqueue(conn, name, "a", after_s=3600) is True
            assert await enqueue(conn, name, "a", after_s=0) is False
        assert await enqueue(conn, name, "a") is False
        assert await enqueue(conn, name + "-other", "a") is True
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await enqueue(conn, name, "rolled-back")
                raise RuntimeError("the change fails")
        count = await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = $1", name)
        assert count == 1 and await get_job(conn, name, "rolled-back") is None
        # The first enqueue's schedule stands.
        assert (await get_job(conn, name, "a"))["run_at"] > datetime.now(UTC) + timedelta(minutes=59)


async def test_a_retried_inbound_mms_webhook_enqueues_its_jobs_once(service):
    user = new_user()
    number = await service.add_number(user)
    sid = "MM" + uuid.uuid4().hex
    form = {"MessageSid": sid, "From": "+447911123456", "To": number, "Body": "", "NumMedia": "1",
            "MediaUrl0": "http://127.0.0.1:9/nowhere/ME" + uuid.uuid4().hex, "MediaContentType0": "image/gif"}
    for _ in range(2):
        assert (await service.webhook("/webhook/sms", form)).status == 200
    async with service.pool.acquire() as conn:
        message_id = await conn.fetchval("SELECT id FROM messages WHERE sid = $1", sid)
        media_ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM message_media WHERE message_id = $1",
                                                           message_id)]
        price_jobs = await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = $1 AND key = $2",
                                         MESSAGE_PRICES.kind, str(message_id))
        media_jobs = await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = $1 AND key = ANY($2)",
                                         MEDIA_FETCH, media_ids)
    assert (len(media_ids), price_jobs, media_jobs) == (1, 1, 1)


async def test_a_slow_job_is_not_claimed_twice_by_two_instances(start_service, make_config, empty_database_url):
    name, runs, started, release = kind_name(), [], asyncio.Event(), asyncio.Event()
    lease_s = 1.0

    async def slow(app, job) -> None:
        runs.append(app[jobs_key])
        started.set()
        await release.wait()

    def hook(app) -> None:
        app[jobs_key].register(Kind(name, slow, poll_s=3600, lease_s=lease_s))

    first = await start_service(config=make_config(DATABASE_URL=empty_database_url), app_hook=hook)
    second = await start_service(config=make_config(DATABASE_URL=empty_database_url), app_hook=hook)
    due = datetime.now(UTC) + timedelta(hours=1)
    await add_job(first, name, run_at=due)
    running = asyncio.create_task(run_due(first.app, name, now=due))
    await asyncio.wait_for(started.wait(), WAIT_S)
    # Let the first lease run out more than twice over: only its renewal keeps the job claimed.
    await asyncio.sleep(lease_s * 2.5)
    assert await run_due(second.app, name, now=due + timedelta(days=1)) == 0
    async with second.pool.acquire() as conn:
        assert await conn.fetchval("SELECT lease_until > clock_timestamp() FROM jobs WHERE kind = $1", name)
    release.set()
    assert await asyncio.wait_for(running, WAIT_S) == 1
    assert await run_due(second.app, name, now=due + timedelta(days=1)) == 0
    assert runs == [first.app[jobs_key]]
    assert (await job_row(first, name))["state"] == "done"


async def test_a_dead_workers_job_is_taken_over_once_its_lease_lapses(start_service):
    name = kind_name()

    async def ok(app, job) -> None:
        return None

    service = await start_service(app_hook=registering(Kind(name, ok, poll_s=3600)))
    due = datetime.now(UTC) + timedelta(hours=1)
    await add_job(service, name, run_at=due)
    async with service.pool.acquire() as conn:  # a worker that claims, then dies: nobody renews
        [claimed] = await job_store.claim(conn, name, due, 1, uuid.uuid4(), 1.0)
    assert await run_due(service.app, name, now=due) == 0
    await asyncio.sleep(1.5)  # the dead worker's lease runs out
    assert await run_due(service.app, name, now=due) == 1
    row = await job_row(service, name)
    assert (row["state"], row["attempts"]) == ("done", 2) and claimed["attempts"] == 1


async def test_a_job_survives_a_restart(start_service, make_config, empty_database_url):
    name, started, finished = kind_name(), asyncio.Event(), asyncio.Event()

    async def never_ends(app, job) -> None:
        started.set()
        await asyncio.Event().wait()

    async def ends(app, job) -> None:
        finished.set()

    config = make_config(DATABASE_URL=empty_database_url)
    first = await start_service(config=config, app_hook=registering(Kind(name, never_ends, poll_s=3600)))
    await add_job(first, name)
    first.app[jobs_key].wake(name)
    await asyncio.wait_for(started.wait(), WAIT_S)
    await first.client.close()  # the process stops while the job runs
    second = await start_service(config=make_config(DATABASE_URL=empty_database_url),
                                 app_hook=registering(Kind(name, ends, poll_s=3600)))
    await asyncio.wait_for(finished.wait(), WAIT_S)
    await second.app[jobs_key].between_rounds(name)
    row = await job_row(second, name)
    # Handed back at shutdown, taken at once by the next start; the interrupted run is not counted.
    assert (row["state"], row["attempts"]) == ("done", 1)


async def test_the_upgrade_moves_pending_work_into_the_queue(empty_database_url, tmp_path):
    """Work the old per-table schedules still had to do is enqueued by the migration; finished
    work is not."""
    jobs_migration = next(m for m in load_migrations() if m.name.endswith("_jobs.sql"))
    for m in load_migrations():
        if m.version < jobs_migration.version:
            shutil.copy(MIGRATIONS_DIR / m.name, tmp_path / m.name)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn, tmp_path)
        due = datetime.now(UTC) + timedelta(minutes=5)
        calls = {}
        for name, state in (("pending", "pending"), ("priced", "done")):
            calls[name] = await conn.fetchval(
                "INSERT INTO calls (user_id, sid, direction, from_number, to_number, status, status_rank, ended_at,"
                " price_state, price_next_at) VALUES ('u', $1, 'inbound', '+15550001', '+15550002', 'completed', 3,"
                " now(), $2, $3) RETURNING id", "CA" + uuid.uuid4().hex, state, due)
        contact = await conn.fetchval("INSERT INTO contacts (user_id, phone_number) VALUES ('u', '+15550001')"
                                      " RETURNING id")
        message = await conn.fetchval(
            "INSERT INTO messages (user_id, contact_id, sid, direction, from_number, to_number, status, status_rank,"
            " price_next_at) VALUES ('u', $1, 'SM1', 'inbound', '+15550001', '+15550002', 'received', 3, $2)"
            " RETURNING id", contact, due)
        media = await conn.fetchval(
            "INSERT INTO message_media (message_id, user_id, source_url, fetch_state, fetch_attempts, next_fetch_at)"
            " VALUES ($1, 'u', 'https://example.com/m', 'pending', 2, $2) RETURNING id", message, due)
        await conn.execute("INSERT INTO call_quality (call_id, user_id, call_sid, ended_at, next_fetch_at)"
                           " VALUES ($1, 'u', 'CA1', now(), $2)", calls["pending"], due)
        alert = await conn.fetchval("INSERT INTO quality_alerts (call_id, user_id, kind, source) VALUES"
                                    " ($1, 'u', 'low_mos', 'threshold') RETURNING id", calls["pending"])
        await conn.execute("INSERT INTO alert_deliveries (alert_id, url, attempts, next_attempt_at)"
                           " VALUES ($1, 'https://example.com/hook', 1, $2)", alert, due)
        shutil.copy(MIGRATIONS_DIR / jobs_migration.name, tmp_path / jobs_migration.name)
        assert await migrate(conn, tmp_path) == [jobs_migration.name]
        rows = await conn.fetch("SELECT kind, key, run_at, attempts, state FROM jobs ORDER BY kind")
    finally:
        await conn.close()
    assert [(r["kind"], r["key"], r["attempts"], r["state"]) for r in rows] == [
        ("alert-webhook", str(alert), 1, "pending"), ("calls-prices", str(calls["pending"]), 0, "pending"),
        ("media-fetch", str(media), 2, "pending"), ("messages-prices", str(message), 0, "pending"),
        ("voice-insights", str(calls["pending"]), 0, "pending")]
    assert all(r["run_at"] == due for r in rows)
