"""Background loops: one failing iteration is logged and survived; shutdown ends the loop."""

from __future__ import annotations

import asyncio

from commpro.appkeys import tasks_key
from commpro.background import periodic


async def test_a_failing_iteration_is_survived_and_shutdown_cancels(start_service, logs):
    runs: list[int] = []
    second_run = asyncio.Event()

    async def job(app) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("transient")
        second_run.set()

    service = await start_service(app_hook=lambda app: app.cleanup_ctx.append(periodic("test-job", 0, job)))
    await asyncio.wait_for(second_run.wait(), 10)
    task = service.app[tasks_key]["test-job"]
    assert not task.done()
    failed = [r for r in logs.records() if r["event"] == "background_iteration_failed"]
    assert failed and failed[0]["task"] == "test-job" and "RuntimeError: transient" in failed[0]["exception"]
    resp = await service.client.get("/status", headers=service.auth())
    row = next(t for t in (await resp.json())["backgroundTasks"] if t["name"] == "test-job")
    # It has completed a round since the failed one, so its lag is known.
    assert row["running"] is True and row["lagSec"] >= 0
    await service.client.close()
    assert task.cancelled()
    assert any(r["event"] == "background_stopped" for r in logs.records())
