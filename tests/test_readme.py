"""The README's "first five minutes" block, run as written against a live `commpro serve`, with
the event listener it tells to start first: the README cannot drift from the code."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil

import pytest
from aiohttp.test_utils import unused_port

from tests.conftest import PYTHON, REPO, WAIT_S, python_env, serve

MARKER = "<!-- first-five-minutes:"
README_URL = "http://127.0.0.1:8080"


def first_five_minutes() -> tuple[str, str]:
    """The listener command (the sh block just before the marker) and the block after it."""
    text = (REPO / "README.md").read_text()
    before, _, after = text.partition(MARKER)
    assert after, "the README lost its first-five-minutes block"
    listener = re.findall(r"```sh\n(.*?)```", before, re.DOTALL)[-1].strip()
    block = re.search(r"```sh\n(.*?)```", after, re.DOTALL).group(1)
    return listener, block


def test_the_block_has_each_example():
    listener, block = first_five_minutes()
    assert listener == ".venv/bin/commpro events"
    for needle in ("/api/calls/initiate", "/api/messages/send ", "/api/messages/send-mms", "commpro sandbox sms",
                   "commpro token demo"):
        assert needle in block


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("bash") and shutil.which("base64")),
                    reason="the README's commands need bash, curl and base64")
async def test_first_five_minutes_run_as_written(tmp_path, empty_database_url):
    listener, block = first_five_minutes()
    port = unused_port()
    # `.venv/bin/commpro` as `make` writes it, for whichever Python runs the tests.
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "commpro").write_text(f'#!/bin/sh\nexec "{PYTHON}" -m commpro "$@"\n')
    (bin_dir / "commpro").chmod(0o755)
    env = python_env(DATABASE_URL=empty_database_url, COMMPRO_APP_DATA_DIR=str(tmp_path / "data"))
    url = f"http://127.0.0.1:{port}"
    # Only the server is told its port: the commands find it as a user's would, on its data dir.
    async with serve({**env, "PORT": str(port), "HOST": "127.0.0.1"}) as banner:
        assert f"Console: open {url}/ in a browser" in banner
        # Exec'd, not through a shell, so that terminating it ends the listener itself.
        proc = await asyncio.create_subprocess_exec(*shlex.split(listener), cwd=tmp_path, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            said = await asyncio.wait_for(proc.stderr.readline(), WAIT_S * 3)
            assert said.startswith(b"listening to"), said
            script = "set -euo pipefail\n" + block.replace(README_URL, url)
            run = await asyncio.create_subprocess_exec("bash", "-c", script, cwd=tmp_path, env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(run.communicate(), 120)
            assert run.returncode == 0, f"the README's block failed:\n{out.decode()}\n{err.decode()}"
            answers = _json_values(out.decode())
            assert answers[0]["status"] == "initiated"
            assert answers[1]["status"] == "queued" and answers[2]["status"] == "queued"
            assert answers[3]["webhook"]["status"] == 200
            assert answers[4]["calls"][0]["to"] == "+33612345678"
            # The listener sees each of them move, up to the call's end.
            seen: list[dict] = []
            while not _done(seen):
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line, f"the listener stopped after {seen}"
                seen.append(json.loads(line))
        finally:
            proc.terminate()
            await proc.wait()


def _done(events: list[dict]) -> bool:
    kinds = {(e["type"], e["data"].get("status")) for e in events}
    received = any(e["type"] == "message.received" for e in events)
    delivered = sum(1 for e in events if (e["type"], e["data"].get("status")) == ("message.status", "delivered"))
    return received and delivered == 2 and ("call.status", "completed") in kinds


def _json_values(text: str) -> list:
    """Each JSON document printed one after the other (curl's on one line, the CLI's indented)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values
