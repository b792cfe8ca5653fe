"""Logging setup: structlog everywhere, JSON lines for machines, console output for people.

Every event passes a redaction step that masks registered secrets (the API key, the secret
parts of apprise URLs), so a secret that slips into an error text is still never written.
Logs go to stderr, keeping stdout for command output (`status --json`, `watch`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from watcher.core.text import cap, for_terminal, scrub

_secrets: set[str] = set()


def add_secrets(secrets: Iterable[str]) -> None:
    """Register strings that must never appear in a log line (short ones are ignored)."""
    _secrets.update(s for s in secrets if len(s) >= 4)


def redact(text: str) -> str:
    """`text` with every registered secret masked."""
    return scrub(text, _secrets)


def _redacted(value: Any) -> Any:
    """`value` with secrets masked, keeping lists and mappings as such (so JSON logs render
    them as JSON, not as Python reprs); any other object becomes its redacted text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(item) for item in value]
    if isinstance(value, Mapping):
        return {redact(str(key)): _redacted(item) for key, item in value.items()}
    return redact(str(value))


def _redact_event(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        event_dict[key] = _redacted(value)
    return event_dict


#: A text value of a log line is cut to this many characters (an API's 100 KB status message
#: is one line, not 100 KB); a traceback to `LOG_TRACEBACK_LIMIT`, keeping its head and tail.
LOG_TEXT_LIMIT = 500
LOG_TRACEBACK_LIMIT = 8000


def _capped(value: Any, limit: int = LOG_TEXT_LIMIT) -> Any:
    """`value` with every text in it cut to `limit`, keeping lists and mappings as such."""
    if isinstance(value, str):
        return cap(value, limit)
    if isinstance(value, list):
        return [_capped(item, limit) for item in value]
    if isinstance(value, dict):
        return {key: _capped(item, limit) for key, item in value.items()}
    return value


def _cap_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # After redaction: a secret cut in two would no longer match its mask.
    for key, value in event_dict.items():
        if key == "exception" and isinstance(value, str) and len(value) > LOG_TRACEBACK_LIMIT:
            half = LOG_TRACEBACK_LIMIT // 2
            event_dict[key] = f"{value[:half]}\n…\n{value[-half:]}"
        elif key != "exception":
            event_dict[key] = _capped(value)
    return event_dict


def _terminal_safe(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Console lines go to a person's terminal: an API text's escape sequences must not act.
    # (JSON lines escape control characters themselves.)
    for key, value in event_dict.items():
        if isinstance(value, str) and key != "exception":
            event_dict[key] = for_terminal(value)
    return event_dict


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the moment (tests and daemons may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(
    *, level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and route the standard library's loggers (apprise, uvicorn) through it.

    Args:
        level: the lowest level written.
        json: JSON lines when True, console output when False; by default JSON unless the stream
            is a terminal. `FIREWORKS_WATCHER_LOG_FORMAT=json|console` overrides the default.
        stream: where to write; stderr by default.
    """
    out: Any = stream if stream is not None else _CurrentStderr()
    if json is None:
        forced = os.environ.get("FIREWORKS_WATCHER_LOG_FORMAT", "").lower()
        json = forced == "json" if forced in ("json", "console") else not out.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_event,  # last before rendering, so tracebacks are redacted too
        _cap_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    if not json:
        shared.append(_terminal_safe)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Chatty libraries: their routine lines add nothing an operator needs.
    for name in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
