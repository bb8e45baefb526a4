"""The Railway deploy, reproduced on this machine as Railpack and Railway run it.

Railpack (Python provider, a requirements.txt present) makes a virtualenv and runs
`pip install -r requirements.txt`, then railway.json's buildCommand with that virtualenv first on
the PATH. Railway then runs the preDeployCommand and the startCommand, exactly as railway.json
writes them. Here they run from an empty directory, with no PYTHONPATH: nothing of the
repository is in reach, only what was installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp.test_utils import unused_port
from twilio.request_validator import RequestValidator

from commpro.auth import mint_token
from commpro.config import load_config
from tests.conftest import REPO, WAIT_S, serve
from tests.test_packaging import DEV_ONLY

DOMAIN = "commpro-production.up.railway.app"
TOKEN = "2" * 32
INSTALL_TIMEOUT_S = 600


def sh(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A command line of railway.json, split as a shell would, found on the PATH of `env`."""
    return subprocess.run(shlex.split(command), check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT_S)


def tracked_files(target: Path) -> None:
    """The repository as Railway receives it: the committed files (here, those git knows)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


async def test_railway_deploy_reproduced(empty_database_url, tmp_path):
    railway = json.loads((REPO / "railway.json").read_text())
    assert railway["build"]["builder"] == "RAILPACK"
    version = (REPO / ".python-version").read_text().strip()
    assert version in ("3.11", "3.12", "3.13", "3.14"), "Railpack reads .python-version: a supported Python"

    app_dir, venv, run_dir = tmp_path / "app", tmp_path / "app-venv", tmp_path / "empty"
    app_dir.mkdir()
    run_dir.mkdir()
    tracked_files(app_dir)
    # Railpack's install step, then the build command, with the virtualenv first on the PATH.
    await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "venv", str(venv)], check=True,
                            timeout=INSTALL_TIMEOUT_S)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMMPRO_", "TWILIO_", "JWT_", "PYTHON", "VIRTUAL_ENV", "DATABASE_URL", "PORT"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    for step in ("pip install -r requirements.txt", railway["build"]["buildCommand"]):
        done = await asyncio.to_thread(sh, step, app_dir, env)
        assert done.returncode == 0, f"{step}:\n{done.stderr}"
    installed = (await asyncio.to_thread(sh, "pip list --format=freeze", run_dir, env)).stdout.lower()
    assert "\ncommpro==" in "\n" + installed
    assert not [name for name in DEV_ONLY if f"\n{name}==" in "\n" + installed], installed

    port = unused_port()
    env.update(
        PORT=str(port), DATABASE_URL=empty_database_url, RAILWAY_PUBLIC_DOMAIN=DOMAIN, COMMPRO_ENV="production",
        JWT_SECRET="j" * 48, COMMPRO_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
        TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN=TOKEN,
    )
    deploy = railway["deploy"]
    for step in deploy["preDeployCommand"]:
        done = await asyncio.to_thread(sh, step, run_dir, env)
        assert done.returncode == 0, f"{step}:\n{done.stderr}"
        applied = len(list((REPO / "sql").glob("*.sql")))
        assert done.stdout.startswith(f"applied {applied} migration(s)"), done.stdout

    async with serve(env, command=shlex.split(deploy["startCommand"]), cwd=run_dir):
        base = f"http://127.0.0.1:{port}"
        config = load_config(env=env)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
            async with session.get(base + deploy["healthcheckPath"]) as resp:
                assert resp.status == 200
            async with session.get(f"{base}/status", headers={"Authorization": f"Bearer {mint_token(config, 'ops')}"}) as r:
                status = await r.json()
                assert status["twilio"]["mode"] == "live"
                assert not [e for e in status["endpoints"] if e["path"].startswith("/_sandbox")]
            # Behind Railway's proxy Twilio signs the public https URL: that is what is checked.
            params = {"MessageSid": "SM" + "5" * 32, "From": "+447911123456", "To": "+447911000000", "Body": "x"}
            public = RequestValidator(TOKEN).compute_signature(f"https://{DOMAIN}/webhook/sms", params)
            async with session.post(f"{base}/webhook/sms", data=params, headers={"X-Twilio-Signature": public}) as r:
                assert r.status == 200
            local = RequestValidator(TOKEN).compute_signature(f"{base}/webhook/sms", params)
            async with session.post(f"{base}/webhook/sms", data=params, headers={"X-Twilio-Signature": local}) as r:
                assert r.status == 403
