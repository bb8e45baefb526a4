"""A real headless Chromium, driven over the Chrome DevTools protocol with aiohttp's WebSocket
client: no extra dependency, and async like the server under test, which runs in the same event
loop (a blocking driver would stall it).

`make test` installs Debian's chromium when it is missing and it can (root with apt-get); where no
Chromium can be had, the browser tests skip and say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1800", "--remote-debugging-port=0")
START_S = 60
WAIT_S = 20


# Resolves with the text of the first element matching `selector` that contains `text`, as soon
# as one does: a MutationObserver sees each change of the page.
WAIT_FOR_JS = """(selector, text) => new Promise((resolve) => {
    const match = () => [...document.querySelectorAll(selector)].find((n) => n.textContent.includes(text));
    const found = match();
    if (found) return resolve(found.textContent);
    const observer = new MutationObserver(() => {
        const node = match();
        if (node) { observer.disconnect(); resolve(node.textContent); }
    });
    observer.observe(document.documentElement, {childList: true, subtree: true, characterData: true});
})"""


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, CANDIDATES)), None)


class BrowserError(Exception):
    """The page threw, or the browser refused a command."""


class Page:
    """One tab: navigate, run JavaScript, and wait for what a person would wait to see."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            future = self.pending.pop(data.get("id"), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(BrowserError("the browser closed the connection"))

    async def send(self, method: str, **params: Any) -> dict:
        command_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        await self.ws.send_str(json.dumps({"id": command_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, WAIT_S + 5)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply["result"]

    async def eval(self, expression: str, timeout: float = WAIT_S) -> Any:
        """The value of `expression` (awaited when it is a promise)."""
        reply = await asyncio.wait_for(
            self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True),
            timeout)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise BrowserError(details.get("exception", {}).get("description") or details.get("text"))
        return reply["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.eval("""new Promise((resolve) => {
            const done = () => document.readyState === "complete" && location.href !== "about:blank";
            if (done()) return resolve(true);
            const timer = setInterval(() => { if (done()) { clearInterval(timer); resolve(true); } }, 20);
        })""")

    async def wait_for(self, selector: str, text: str = "") -> str:
        """Wait, without polling from here, until an element matching `selector` contains
        `text`; return its text. A MutationObserver in the page resolves on the change."""
        js = f"({WAIT_FOR_JS})({json.dumps(selector)}, {json.dumps(text)})"
        try:
            return await self.eval(js)
        except TimeoutError:
            raise AssertionError(f"no {selector!r} containing {text!r} within {WAIT_S}s; page:\n"
                                 f"{await self.eval('document.body.innerText')}") from None

    async def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode((await self.send("Page.captureScreenshot", format="png"))["data"]))


@contextlib.asynccontextmanager
async def open_browser(tmp_path: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium with an empty profile; its first tab."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on this machine and none could be installed (needs root and apt-get: "
                    "`apt-get install chromium`)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = await asyncio.create_subprocess_exec(
        binary, *FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    session = aiohttp.ClientSession()
    page = None
    try:
        endpoint = await asyncio.wait_for(_devtools_endpoint(proc), START_S)
        async with session.get(f"http://{endpoint}/json/list") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t["type"] == "page")
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        yield page
    finally:
        if page is not None:
            await page.ws.close()
            page.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await page.reader
        await session.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _devtools_endpoint(proc: asyncio.subprocess.Process) -> str:
    """host:port from Chromium's "DevTools listening on ws://host:port/..." line."""
    seen = []
    while True:
        line = await proc.stderr.readline()
        if not line:
            raise BrowserError("Chromium exited before listening: " + " | ".join(seen[-5:]))
        text = line.decode(errors="replace").strip()
        seen.append(text)
        match = re.search(r"DevTools listening on ws://([^/]+)/", text)
        if match:
            # Keep reading its stderr so that the pipe never fills and blocks the browser.
            asyncio.get_running_loop().create_task(proc.stderr.read())
            return match.group(1)
