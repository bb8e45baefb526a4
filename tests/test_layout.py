"""The shape of the code: no import cycle in commpro/, and the sandbox apart from the product.

Read from the source with ast, so that every import counts: at module level, inside a function
(imported late to dodge a cycle is still a cycle) and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, REPO, python_env

PACKAGE = REPO / "commpro"
SANDBOX = "commpro.sandbox"


def in_sandbox(name: str) -> bool:
    return name == SANDBOX or name.startswith(SANDBOX + ".")
# The one module of the product that may import the sandbox: the development server puts it
# beside the service. Only the `serve` command imports it, and only in sandbox mode.
DEV_SERVER = "commpro.devserver"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path], this: str | None = None) -> dict[str, int]:
    """The commpro modules `path` imports, each with the first line that does, anywhere in it."""
    found: dict[str, int] = {}
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]

    def add(name: str, line: int) -> None:
        # Importing a.b.c runs a/__init__, a/b/__init__ first: those are imports too.
        parts = name.split(".")
        for i in range(2, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in known and target != this and not this.startswith(target + "."):
                found.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            add(base, node.lineno)
            for alias in node.names:
                add(f"{base}.{alias.name}", node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_the_import_reader_sees_late_and_type_checking_imports(tmp_path):
    known = {"commpro.x": Path(), "commpro.y": Path(), "commpro.z": Path(), "commpro.w": Path()}
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from commpro.x import A\n"
                      "def f():\n    import commpro.y\n    from . import z\n    from .w import B\n")
    assert set(imports_of(source, known, "commpro.probe")) == {"commpro.x", "commpro.y", "commpro.z", "commpro.w"}


def test_commpro_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    details = [" <-> ".join(c) + ": " + "; ".join(f"{a} imports {b} (line {graph[a][b]})"
                                                    for a in c for b in graph[a] if b in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(details)


def test_appkeys_imports_no_module_of_ours():
    """It types only third-party objects and Protocols, so no feature and no cycle goes through it."""
    assert imports_of(PACKAGE / "appkeys.py", modules()) == {}


def test_the_sandbox_imports_nothing_of_the_product():
    graph = import_graph()
    reaches = {(name, target) for name, targets in graph.items() if in_sandbox(name)
               for target in targets if not in_sandbox(target)}
    assert reaches == set()


def test_the_product_imports_nothing_of_the_sandbox_but_the_dev_server():
    graph = import_graph()
    users = {name for name, targets in graph.items() if not in_sandbox(name)
             and any(in_sandbox(t) for t in targets)}
    assert users == {DEV_SERVER}
    dev_server_users = {name for name, targets in graph.items() if DEV_SERVER in targets}
    assert dev_server_users == {"commpro.cli"}


def test_production_runs_without_loading_the_sandbox():
    """The app, the CLI and the serve path in production mode load no module of the sandbox."""
    probe = (
        "import sys\n"
        "from commpro import cli\n"
        "from commpro.app import create_app\n"
        "from commpro.config import load_config\n"
        "config = load_config()\n"
        "assert config.production and not config.twilio.sandbox\n"
        "create_app(config)\n"
        "loaded = sorted(m for m in sys.modules if m in ('commpro.sandbox', 'commpro.devserver')\n"
        "                or m.startswith('commpro.sandbox.'))\n"
        "assert not loaded, loaded\n"
    )
    env = python_env(
        COMMPRO_ENV="production", JWT_SECRET="j" * 48, COMMPRO_MASTER_KEY="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN="2" * 32, PUBLIC_BASE_URL="https://commpro.example.com",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    result = subprocess.run([PYTHON, "-c", probe], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
