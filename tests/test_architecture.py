"""The import rules of style.md (c): a pure core, one I/O library per adapter, one composition root.

The simulator, `fireworks_sim`, is a package of its own: it shares no code with the daemon, and
only the composition root (`demo`, `cli`) starts it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "watcher"
SIMULATOR = PACKAGE.parent / "fireworks_sim"
CORE = {
    "model",
    "kinds",
    "transitions",
    "messages",
    "errors",
    "delivery",
    "schedule",
    "budget",
    "text",
    "decide",
}
ADAPTERS = {"fireworks", "store", "notify", "health", "sdnotify"}
COMPOSITION = {"app", "cli", "demo", "__main__"}
# Third-party libraries each module may use beside the standard library.
ALLOWED_LIBRARIES: dict[str, set[str]] = {
    "config": {"pydantic", "pydantic_core"},
    "fireworks": {"httpx", "anyio", "orjson", "structlog"},
    "store": {"anyio"},
    "sdnotify": set(),
    "notify": {"apprise", "anyio"},
    "health": {"anyio", "prometheus_client", "uvicorn"},
    "loop": {"anyio", "structlog"},
    "dispatcher": {"anyio", "structlog"},
    "logs": {"structlog"},
}
# watcher modules each module may import.
ALLOWED_INTERNAL: dict[str, set[str]] = {
    **{name: CORE | {"__init__"} for name in CORE},
    "config": CORE | {"__init__"},
    "ports": CORE | {"__init__"},
    **{name: CORE | {"ports", "config", "__init__"} for name in ADAPTERS},
    "loop": CORE | {"ports", "dispatcher", "config", "__init__"},
    "dispatcher": CORE | {"ports", "__init__"},
    "logs": {"text"},
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "watcher":
                # `from watcher import config` is a module; `from watcher import __version__` is not.
                found.update(
                    f"watcher.{a.name}" if (PACKAGE / f"{a.name}.py").exists() else "watcher"
                    for a in node.names
                )
            else:
                found.add(node.module)
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_rule() -> None:
    """A new module must be placed in the architecture before it can land."""
    ruled = set(ALLOWED_INTERNAL) | COMPOSITION | {"__init__"}

    assert [] == [m for m in MODULES if m not in ruled]


@pytest.mark.parametrize("module", [m for m in MODULES if m in ALLOWED_INTERNAL])
def test_imports_follow_the_rules(module: str) -> None:
    """Each module imports only the standard library, its own I/O library and allowed siblings."""
    broken = []
    for name in imports(PACKAGE / f"{module}.py"):
        top = name.split(".")[0]
        if top == "watcher":
            sibling = name.split(".")[1] if "." in name else "__init__"
            if sibling not in ALLOWED_INTERNAL[module]:
                broken.append(name)
        elif top not in sys.stdlib_module_names and top not in ALLOWED_LIBRARIES.get(module, set()):
            broken.append(name)

    assert [] == broken


def test_nothing_imports_the_cli() -> None:
    """The command line is the top: only `python -m watcher` imports it."""
    importers = [
        m for m in MODULES if m != "__main__" and "watcher.cli" in imports(PACKAGE / f"{m}.py")
    ]

    assert [] == importers


SIMULATOR_MODULES = sorted(p.stem for p in SIMULATOR.glob("*.py"))
# What the simulator may import beside the standard library and itself (uvicorn, lazily).
SIMULATOR_LIBRARIES = {"uvicorn"}
# The watcher modules that may start the simulator: the composition root.
SIMULATOR_IMPORTERS = {"demo", "cli"}


def test_the_simulator_has_modules() -> None:
    """The rules below walk the package: they must find it."""
    assert {"__init__", "api", "cli", "serve"} <= set(SIMULATOR_MODULES)


@pytest.mark.parametrize("module", SIMULATOR_MODULES)
def test_the_simulator_imports_only_the_stdlib_and_uvicorn(module: str) -> None:
    """`fireworks_sim` imports nothing from `watcher`, so the two cannot share a wire-format bug."""
    broken = [
        name
        for name in imports(SIMULATOR / f"{module}.py")
        if name.split(".")[0] != "fireworks_sim"
        and name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in SIMULATOR_LIBRARIES
    ]

    assert [] == broken


def test_only_the_composition_root_imports_the_simulator() -> None:
    """The daemon never depends on the simulator; `demo` and `cli` start it."""
    importers = [
        m
        for m in MODULES
        if any(name.split(".")[0] == "fireworks_sim" for name in imports(PACKAGE / f"{m}.py"))
    ]

    assert [] == [m for m in importers if m not in SIMULATOR_IMPORTERS]


@pytest.mark.parametrize("module", SIMULATOR_MODULES)
def test_simulator_modules_stay_small(module: str) -> None:
    """No module of the simulator grows past 450 lines: split it by role instead."""
    lines = len((SIMULATOR / f"{module}.py").read_text().splitlines())

    assert lines <= 450
