"""Log lines: JSON with lists and mappings as JSON, every registered secret masked."""

from __future__ import annotations

import ast
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from watcher import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """JSON logs into a buffer; the default configuration is restored afterwards."""
    buffer = io.StringIO()
    logs.configure(json=True, stream=buffer)
    yield buffer
    logs.configure()


def logged(stream: io.StringIO) -> dict[str, object]:
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert isinstance(record, dict)
    return record


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(["ml-team", "oncall"], ["ml-team", "oncall"], id="list"),
        pytest.param(("a", 1), ["a", 1], id="tuple"),
        pytest.param({"kind": "sft", "n": 2}, {"kind": "sft", "n": 2}, id="mapping"),
        pytest.param([{"x": [1, None, True]}], [{"x": [1, None, True]}], id="nested"),
        pytest.param(3.5, 3.5, id="number"),
        pytest.param(frozenset({"only"}), ["only"], id="set"),
    ],
)
def test_structures_render_as_json(stream: io.StringIO, value: object, expected: object) -> None:
    """Lists and mappings reach the JSON line as JSON, not as Python reprs."""
    structlog.get_logger("test").info("test.event", value=value)

    assert expected == logged(stream)["value"]


def test_secrets_are_masked_at_any_depth(stream: io.StringIO) -> None:
    """A registered secret is masked inside strings, lists, mappings and their keys."""
    logs.add_secrets(["s3cr3t-token-x"])
    structlog.get_logger("test").info(
        "test.event",
        text="key s3cr3t-token-x here",
        items=["ok", "s3cr3t-token-x"],
        mapping={"s3cr3t-token-x": {"deep": ["s3cr3t-token-x"]}},
        other=ValueError("s3cr3t-token-x"),
    )
    record = logged(stream)

    assert "s3cr3t-token-x" not in stream.getvalue()
    assert "key **** here" == record["text"]
    assert ["ok", "****"] == record["items"]
    assert {"****": {"deep": ["****"]}} == record["mapping"]
    assert "****" == record["other"]


ROOT = Path(__file__).resolve().parents[2]


def _names(node: ast.expr) -> set[str]:
    """The string constants an expression can be (`"a"`, or `"a" if c else "b"`)."""
    if isinstance(node, ast.IfExp):
        return _names(node.body) | _names(node.orelse)
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


def events_in_code() -> set[str]:
    """Every event name watcher/ logs: the first argument of `log.<level>(...)`, or of an
    `event = ...` variable passed as one."""
    events: set[str] = set()
    for path in (ROOT / "watcher").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
                and node.args
            ):
                events |= _names(node.args[0])
            elif isinstance(node, ast.Assign) and [
                t.id for t in node.targets if isinstance(t, ast.Name)
            ] == ["event"]:
                events |= _names(node.value)
    return events


def test_readme_lists_every_log_event() -> None:
    """The README's list of log events is the code's, no more and no less."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Logs and secrets")[1].split("These values never appear")[0]
    listed = set(re.findall(r"`([a-z_]+\.[a-z_.]+)`", section))

    assert events_in_code() == listed
