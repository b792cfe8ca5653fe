"""The import rules of style.md (c): a pure core, one I/O library per adapter, one composition root."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "watcher"
CORE = {"model", "kinds", "transitions", "messages", "errors", "delivery", "schedule", "budget"}
ADAPTERS = {"fireworks", "store", "notify", "health", "sdnotify"}
COMPOSITION = {"app", "cli", "demo", "__main__"}
# Third-party libraries each module may use beside the standard library.
ALLOWED_LIBRARIES: dict[str, set[str]] = {
    "config": {"pydantic", "pydantic_core"},
    "fireworks": {"httpx", "anyio", "orjson", "structlog"},
    "store": set(),
    "sdnotify": set(),
    "notify": {"apprise", "anyio"},
    "health": {"anyio", "prometheus_client", "uvicorn"},
    "loop": {"anyio", "structlog"},
    "logs": {"structlog"},
    "simulator": {"uvicorn"},
}
# watcher modules each module may import.
ALLOWED_INTERNAL: dict[str, set[str]] = {
    **{name: CORE | {"__init__"} for name in CORE},
    "config": CORE | {"__init__"},
    **{name: CORE | {"config", "__init__"} for name in ADAPTERS},
    "loop": CORE | {"config", "__init__"},
    "logs": set(),
    "simulator": set(),
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
