"""The architecture, in code: a pure core, ports, a runtime that reaches adapters only through
them, one I/O library per adapter, one composition root, no import cycles, one name per module,
modules cut by job (their sizes reported).

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
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
#: Modules longer than this are listed by the size report (not a failure).
REPORT_LINES = 400


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


# -- sizes: a report, and a ceiling ---------------------------------------------------------


def test_module_sizes_are_reported_under_a_ceiling() -> None:
    """Prints the modules of `watcher` and `fireworks_sim` over 400 lines, longest first; none
    may pass 600 (a long module with one job is fine, a longer one is a smell to explain)."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in [*MODULES, *SIMULATOR_MODULES]
    }
    long = sorted(((n, name) for name, n in sizes.items() if n > REPORT_LINES), reverse=True)
    print(f"\nmodules over {REPORT_LINES} lines (ceiling {MAX_LINES}): {len(long)}")
    for lines, name in long:
        print(f"  {lines:4d}  {name}")

    assert [] == [name for lines, name in long if lines > MAX_LINES]


# -- import cycles --------------------------------------------------------------------------

#: Import cycles tolerated, each as the set of modules it runs through: none. Add nothing
#: here: break a new cycle instead.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    """`watcher/runtime/lanes.py` -> `watcher.runtime.lanes`; a package's `__init__` is the
    package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run on import: the module's, and those inside its `if` (`TYPE_CHECKING`
    too: such an import shows the same dependency), `try` and `with` blocks; not the bodies
    of functions or classes."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from top_level_statements(node.body)
            yield from top_level_statements(node.orelse)
        elif isinstance(node, ast.With):
            yield from top_level_statements(node.body)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from top_level_statements(block)
            for handler in node.handlers:
                yield from top_level_statements(handler.body)


def module_imports(path: Path, known: set[str]) -> set[str]:
    """The modules among `known` that `path` imports at module level: `from a import b` names
    the module `a.b` when there is one, else `a`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in top_level_statements(tree.body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found & known


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """Module -> the modules of the same set it imports at module level."""
    names = {module_name(path): path for path in paths}
    known = set(names)
    return {name: module_imports(path, known) - {name} for name, path in names.items()}


def tangles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import each other, directly or through others: the strongly
    connected components of more than one module (Tarjan's algorithm; the graphs are small)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group: set[str] = set()
            while not group or node not in group:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
            if len(group) > 1:
                groups.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def shortest_cycle(graph: dict[str, set[str]], group: frozenset[str]) -> list[str]:
    """The shortest cycle from the group's first module back to it, within the group
    (`[a, b, a]`)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for other in sorted(graph[node] & group):
                if other == start:
                    return [*paths[node], start]
                if other not in paths:
                    paths[other] = [*paths[node], other]
                    following.append(other)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(group)}")  # a component always has one


def cycles(graph: dict[str, set[str]]) -> dict[frozenset[str], list[str]]:
    """Each group of modules importing each other, with one cycle through it."""
    return {group: shortest_cycle(graph, group) for group in tangles(graph)}


def test_the_cycle_finder_finds_cycles() -> None:
    """The finder itself: a two-module and a three-module cycle, and a module outside both."""
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "x": {"y"}, "y": {"z"}, "z": {"x", "c"}}

    assert [["a", "b", "a"], ["x", "y", "z", "x"]] == sorted(cycles(graph).values())


@pytest.mark.parametrize("package", [PACKAGE, SIMULATOR], ids=lambda p: p.name)
def test_no_import_cycles(package: Path) -> None:
    """No two modules import each other, directly or through others (imports under
    `if TYPE_CHECKING:` count): the modules stack up in layers, and each can be read, tested
    and replaced from the bottom up. Prints each cycle as `a -> b -> a`."""
    groups = cycles(import_graph(sorted(package.rglob("*.py"))))
    for cycle in groups.values():
        print(" -> ".join(cycle))

    assert [] == [
        " -> ".join(cycle) for group, cycle in groups.items() if group not in KNOWN_CYCLES
    ]


def test_known_cycles_are_still_there() -> None:
    """An entry of `KNOWN_CYCLES` whose cycle is gone is taken out of it."""
    groups = cycles(import_graph([*MODULES, *SIMULATOR_MODULES]))

    assert [] == [sorted(known) for known in KNOWN_CYCLES if known not in groups]


# -- one name per module ----------------------------------------------------------------------


def shared_names() -> dict[str, set[str]]:
    """Base name -> the modules of `watcher` having it, where more than one does
    (`__init__` and `__main__` aside)."""
    by_name: dict[str, set[str]] = {}
    for path in MODULES:
        if path.stem not in ("__init__", "__main__"):
            by_name.setdefault(path.stem, set()).add(str(path.relative_to(PACKAGE)))
    return {name: paths for name, paths in by_name.items() if len(paths) > 1}


def test_no_two_modules_share_a_name() -> None:
    """A module's name says what it holds, so a name is found once: no `silences.py` beside
    another (`clock.py` and `clocks.py` are two names)."""
    shared = shared_names()

    assert {} == {name: sorted(paths) for name, paths in shared.items()}


# -- the tests themselves: layers, one support package ----------------------------------------

TESTS = ROOT / "tests"
LAYERS = ("unit", "contract", "integration", "system")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for each import in the test-tree file `path`, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = node.module or ""
            if node.level:
                module = f"{base}.{module}" if module else base
            # `from tests.x import test_y` names a module too.
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def is_test_file(module: str) -> bool:
    """Whether `module` (dotted) is a test file or a conftest of the `tests` package."""
    last = module.rsplit(".", 1)[-1]
    return module.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def test_no_test_file_imports_from_another() -> None:
    """Helpers shared by tests live in `tests/support/`: no file of the test tree imports from a
    test file or a conftest (which pytest imports on its own, under its own rules)."""
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in imports_of(path)
        if is_test_file(module)
    ]

    assert [] == found


def test_every_test_file_sits_in_a_layer_under_its_own_name() -> None:
    """Test files live in `tests/{unit,contract,integration,system}` (and `tests/perf` holds the
    benchmarks); no two share a base name, so a name finds one file."""
    layers = {path.parent.name for path in TESTS.rglob("test_*.py")}
    names = [path.name for path in TESTS.rglob("test_*.py")]

    assert [] == sorted(path.name for path in TESTS.glob("test_*.py"))
    assert set() == layers - set(LAYERS)
    assert [] == sorted({name for name in names if names.count(name) > 1})
    assert [] == [layer for layer in LAYERS if not (TESTS / layer / "__init__.py").is_file()]
