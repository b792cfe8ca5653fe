"""The architecture, in code: a pure core, ports, a runtime that reaches adapters only through
them, one I/O library per adapter, one composition root, small modules.

```
watcher/core/      pure: model, kinds, transitions, messages, delivery, decide, schedule, ...
watcher/ports.py   the Protocols the runtime needs
watcher/runtime/   the poller and the dispatcher (and systemd's notifications)
watcher/sources/   the Fireworks API client      watcher/stores/  the SQLite store
watcher/notify/    apprise                        watcher/web/     health and metrics
watcher/config.py  settings                       watcher/logs.py  structlog set-up
watcher/app.py, cli.py, demo.py, __main__.py      the composition root
```

The simulator, `fireworks_sim`, is a package of its own: it shares no code with the daemon, and
only the composition root (`demo`, `cli`) starts it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "watcher"
SIMULATOR = ROOT / "fireworks_sim"

ADAPTERS = {"sources", "stores", "notify", "web"}
COMPOSITION = {"app", "backends", "cli", "demo", "views", "__main__"}
#: Standard-library modules that do I/O: the core may not import them.
STDLIB_IO = {
    "sqlite3",
    "socket",
    "http",
    "urllib",
    "subprocess",
    "asyncio",
    "io",
    "os",
    "shutil",
    "threading",
    "select",
    "selectors",
    "ssl",
    "logging",
}
#: Third-party libraries each part may use beside the standard library.
LIBRARIES: dict[str, set[str]] = {
    "core": set(),
    "ports": set(),
    "runtime": {"anyio", "structlog"},
    "sources": {"httpx", "anyio", "orjson", "structlog"},
    "stores": {"anyio", "psycopg", "psycopg_pool"},
    "notify": {"apprise", "anyio", "rich"},
    "web": {"anyio", "jinja2", "prometheus_client", "uvicorn"},
    "config": {"pydantic", "pydantic_core"},
    "logs": {"structlog"},
}
#: Parts of watcher each part may import.
INTERNAL: dict[str, set[str]] = {
    "core": {"core"},
    "ports": {"core"},
    "runtime": {"core", "ports", "runtime"},
    **{adapter: {"core", "ports", adapter} for adapter in ADAPTERS},
    "config": {"core", "config"},
    "logs": {"core"},
}
#: A ceiling, not a target: a module is cut by its job, and one past this is a smell to explain.
MAX_LINES = 600


def imports(path: Path) -> set[str]:
    """Every absolute module name `path` imports (a `from watcher import x` counts x)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def part_of(path: Path) -> str:
    """`core`, `runtime`, an adapter, or the module's own name for top-level modules."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def internal_part(name: str) -> str | None:
    """The part of watcher a module name points into, or None for `watcher` itself."""
    parts = name.split(".")
    if parts[0] != "watcher" or len(parts) < 2:
        return None
    candidate = parts[1]
    if (PACKAGE / candidate).is_dir() or (PACKAGE / f"{candidate}.py").exists():
        return candidate
    return None  # `from watcher import __version__`


MODULES = sorted(PACKAGE.rglob("*.py"))
RULED = [m for m in MODULES if part_of(m) in INTERNAL]


def test_every_module_has_a_rule() -> None:
    """A new module must be placed in the architecture before it can land."""
    ruled = set(INTERNAL) | COMPOSITION | {"__init__"}

    assert [] == [str(m.relative_to(ROOT)) for m in MODULES if part_of(m) not in ruled]


@pytest.mark.parametrize("path", RULED, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_rules(path: Path) -> None:
    """Each part imports only the standard library, its own libraries and allowed parts."""
    part = part_of(path)
    broken = []
    for name in imports(path):
        top = name.split(".")[0]
        if top == "watcher":
            target = internal_part(name)
            if target is not None and target not in INTERNAL[part]:
                broken.append(name)
        elif top in sys.stdlib_module_names:
            if part == "core" and top in STDLIB_IO:
                broken.append(name)
        elif top not in LIBRARIES[part]:
            broken.append(name)

    assert [] == broken


def test_only_the_composition_root_builds_adapters() -> None:
    """The runtime gets its adapters from app.py; nothing else outside them imports one."""
    importers = {
        str(path.relative_to(ROOT))
        for path in MODULES
        for name in imports(path)
        if internal_part(name) in ADAPTERS and part_of(path) not in ADAPTERS | COMPOSITION
    }

    assert set() == importers


def test_nothing_imports_the_cli() -> None:
    """The command line is the top: only `python -m watcher` imports it."""
    importers = [
        str(m.relative_to(ROOT))
        for m in MODULES
        if m.stem != "__main__"
        and part_of(m) != "cli"
        and any(n.startswith("watcher.cli") for n in imports(m))
    ]

    assert [] == importers


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path: Path) -> None:
    """No module grows past 600 lines: a long module with one job is fine, a longer one is a smell."""
    assert len(path.read_text().splitlines()) <= MAX_LINES


SIMULATOR_MODULES = sorted(SIMULATOR.glob("*.py"))
# What the simulator may import beside the standard library and itself (uvicorn, lazily).
SIMULATOR_LIBRARIES = {"uvicorn"}
# The watcher modules that may start the simulator: the composition root.
SIMULATOR_IMPORTERS = {"demo", "cli"}


def test_the_simulator_has_modules() -> None:
    """The rules below walk the package: they must find it."""
    assert {"__init__", "api", "cli", "serve"} <= {p.stem for p in SIMULATOR_MODULES}


@pytest.mark.parametrize("path", SIMULATOR_MODULES, ids=lambda p: p.name)
def test_the_simulator_imports_only_the_stdlib_and_uvicorn(path: Path) -> None:
    """`fireworks_sim` imports nothing from `watcher`, so the two cannot share a wire-format bug."""
    broken = [
        name
        for name in imports(path)
        if name.split(".")[0] != "fireworks_sim"
        and name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in SIMULATOR_LIBRARIES
    ]

    assert [] == broken


def test_only_the_composition_root_imports_the_simulator() -> None:
    """The daemon never depends on the simulator; `demo` and `cli` start it."""
    importers = [
        part_of(m)
        for m in MODULES
        if any(name.split(".")[0] == "fireworks_sim" for name in imports(m))
    ]

    assert [] == [m for m in importers if m not in SIMULATOR_IMPORTERS]


@pytest.mark.parametrize("path", SIMULATOR_MODULES, ids=lambda p: p.name)
def test_simulator_modules_stay_small(path: Path) -> None:
    """No module of the simulator grows past the same ceiling."""
    assert len(path.read_text().splitlines()) <= MAX_LINES
