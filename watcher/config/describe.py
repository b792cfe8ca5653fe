"""Config problems as one line each: the key path, the problem, and never a secret or a value
that came from the environment."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from watcher.config.schema import (
    _BARE_KEY,
    _SECRET_KEYS,
    ACCOUNT_ENV,
    FireworksSettings,
    Settings,
    _Invalid,
)
from watcher.core.errors import ConfigError
from watcher.core.text import one_line


class _Origins:
    """Where values came from, so that messages never quote one from the environment."""

    def __init__(self) -> None:
        # rendered key path -> the (variable, value) pairs substituted into it
        self.interpolated: dict[str, list[tuple[str, str]]] = {}
        self.env_default: dict[str, str] = {}  # rendered key path -> the variable that gave it

    def hidden(self, path: str) -> bool:
        """True when the value at `path` came (even partly) from the environment."""
        return path in self.interpolated or path in self.env_default

    def scrub(self, path: str, problem: str) -> str:
        """Put `${VAR}` back where a validator's message repeats a substituted value."""
        for name, value in self.interpolated.get(path, ()):
            if len(value) >= 4:  # shorter ones cannot be secrets, and replacing them garbles words
                problem = problem.replace(value, f"${{{name}}}")
        return problem


_PROBLEMS: Final = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "string_type": "must be a string",
    "path_type": "must be a string",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "frozen_set_type": "must be an array",
    "set_type": "must be an array",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}
_MAX_SHOWN_ERRORS: Final = 3


def _describe(exc: ValidationError, source: str, origins: _Origins) -> str:
    errors = exc.errors()
    # An item's error explains its container's ("urls[0]: must not be empty" makes "urls" empty).
    specific = [
        error for error in errors if not any(_below(other["loc"], error["loc"]) for other in errors)
    ]
    problems = list(dict.fromkeys(_describe_one(error, origins) for error in specific))
    text = "; ".join(problems[:_MAX_SHOWN_ERRORS])
    if len(problems) > _MAX_SHOWN_ERRORS:
        text += f"; and {len(problems) - _MAX_SHOWN_ERRORS} more"
    return one_line(f"{source}: {text}")


def _below(loc: tuple[str | int, ...], parent: tuple[str | int, ...]) -> bool:
    return len(loc) > len(parent) and loc[: len(parent)] == parent


def _describe_one(error: ErrorDetails, origins: _Origins) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    show_input = True
    if isinstance(cause, _Invalid):
        loc += cause.where
        problem = cause.problem
        show_input = not cause.where  # below the reported location, `input` is the parent
    elif isinstance(cause, ValueError):
        problem = str(cause)
    elif kind in ("greater_than", "greater_than_equal"):
        bound = _bound(ctx.get("gt", ctx.get("ge")), loc)
        problem = f"must be {'>' if kind == 'greater_than' else '>='} {bound}"
    elif kind in ("less_than", "less_than_equal"):
        bound = _bound(ctx.get("lt", ctx.get("le")), loc)
        problem = f"must be {'<' if kind == 'less_than' else '<='} {bound}"
    elif kind == "enum":
        problem = f"must be one of {ctx.get('expected')}"
    else:
        problem = _PROBLEMS.get(kind, error["msg"])
    path = _render(loc, fields=True)
    if loc in (("watches",), ("channels",), ("people",)) and kind == "tuple_type":
        problem = f"must be an array of tables: write [[{path}]]"
    if loc == ("fireworks", "account_id") and kind == "missing":
        problem = f"required (or set {ACCOUNT_ENV})"
    if kind == "extra_forbidden" and loc and isinstance(loc[-1], str):
        problem += did_you_mean(loc[-1], _known_keys(loc[:-1]))
    if path in origins.env_default:
        problem += f" (from {origins.env_default[path]})"
    elif show_input and kind not in ("missing", "extra_forbidden"):
        shown = _shown(error.get("input"), loc, path, origins)
        if shown:
            problem += f", got {shown}"
    return f"{path}: {origins.scrub(path, problem)}"


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """` (did you mean poll_interval?)` for a key close to one of `known`, else ""."""
    if len(key) > _MAX_KEY_GUESSED:  # no key is this long: not a typo, and costly to compare
        return ""
    known = sorted(known)
    # A plural first: `[[watches]]` means `[[watch]]` more likely than `[watcher]`.
    close = [k for k in known if key in (f"{k}s", f"{k}es")]
    close = close or difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _known_keys(loc: tuple[str | int, ...]) -> tuple[str, ...]:
    """The keys the TOML table at pydantic location `loc` may hold, from the schema itself."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        model = _model_in(field.annotation) if field else None
    if model is None:
        return ()
    # `fireworks.api_key` is read from `api_key_file`, never written in the file.
    names = {"api_key": "api_key_file"} if model is FireworksSettings else {}
    return tuple(names.get(name, name) for name in model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model a field holds (`tuple[WatchSettings, ...]` -> WatchSettings)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (model := _model_in(arg)) is not None:
            return model
    return None


def _bound(value: Any, loc: tuple[str | int, ...]) -> str:
    """A bound as a message shows it; a size in bytes also in KiB or MiB (`33554432` says
    little)."""
    if loc and isinstance(loc[-1], str) and loc[-1].endswith("_bytes") and type(value) is int:
        unit, name = (1024 * 1024, "MiB") if value >= 1024 * 1024 else (1024, "KiB")
        return f"{value} ({value / unit:g} {name})"
    return f"{value:g}"


def _shown(value: Any, loc: tuple[str | int, ...], path: str, origins: _Origins) -> str:
    """The bad value for a message, or "" when it may be a secret or came from the environment."""
    if _SECRET_KEYS.intersection(part for part in loc if isinstance(part, str)):
        return ""
    if origins.hidden(path):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _quote(value)
    if isinstance(value, str) and not _may_hold_credentials(value):
        return _quote(value)
    return ""


def _may_hold_credentials(text: str) -> bool:
    # A URL may carry credentials even outside `urls` (scheme://user:password@host).
    return "://" in text or "@" in text


def _quote(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(loc: tuple[Any, ...], *, fields: bool = False) -> str:
    """A key path as the TOML file spells it: `watch[0].jobs[2]`, `fireworks.account_id`.

    With `fields`, `loc` is a pydantic location, spelt with the models' field names.
    """
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if fields and index == 0:
            part = {"watches": "watch", "channels": "channel", "people": "person"}.get(part, part)
        elif fields and loc[0] == "fireworks" and part == "api_key":
            part = "api_key_file"
        name = part if isinstance(part, str) and _BARE_KEY.fullmatch(part) else repr(part)
        out += f".{name}" if out else name
    return out or "(top level)"


def _fail(source: str, path: str, problem: str) -> ConfigError:
    # Bounded: a key path may be a hostile key of any length.
    return ConfigError(one_line(f"{source}: {path}: {problem}", _MAX_LINE))


_MAX_LINE: Final = 1000
_MAX_KEY_GUESSED: Final = 100
