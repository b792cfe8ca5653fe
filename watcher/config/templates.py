"""Channel templates (`title`, `body`): `str.format` strings over the message fields, in
bounded sizes, checked without rendering anything large."""

from __future__ import annotations

import re
import string
from typing import Final

from watcher.core.messages import MESSAGE_FIELDS

# A name that reads as a field, so it is shown as {name} rather than quoted.
_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]+")


class TemplateError(ValueError):
    """What is wrong with a template, as the config error says it."""


#: Bounds of a template: its length, its fields, and a field's width (`{job_id:>40}`). Past
#: them the rendered text would be cut anyway (messages.BODY_LIMIT), and a width of 2e9 would
#: allocate 2 GB on every render; `check` refuses it without rendering anything.
_MAX_TEMPLATE_CHARS: Final = 10_000
_MAX_TEMPLATE_FIELDS: Final = 100
_MAX_FIELD_WIDTH: Final = 1000
# Python's format-spec mini-language, for the parts that size the output.
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>[0-9]*)[_,]?(?:\.(?P<precision>[0-9]+))?[a-zA-Z%]?",
    re.DOTALL,
)


def template(value: str) -> str:
    """Accept a `str.format` template that uses only the message fields, in bounded sizes."""
    if len(value) > _MAX_TEMPLATE_CHARS:
        msg = f"a template may be at most {_MAX_TEMPLATE_CHARS:,} characters long"
        raise ValueError(msg)
    try:
        _check_template_fields(value)
        # Formatting with strings catches what `parse` lets through: bad conversions and specs.
        # Safe: the widths are bounded above.
        value.format_map(dict.fromkeys(MESSAGE_FIELDS, ""))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        if isinstance(exc, TemplateError):
            raise
        msg = f"not a valid template: {exc}"
        raise ValueError(msg) from None
    return value


def _check_template_fields(template: str) -> None:
    count = 0
    for _literal, field, spec, _conversion in string.Formatter().parse(template):
        if field is None:
            continue
        count += 1
        if count > _MAX_TEMPLATE_FIELDS:
            raise TemplateError(f"a template may use at most {_MAX_TEMPLATE_FIELDS} fields")
        if field not in MESSAGE_FIELDS:
            problem = (
                "positional {} is not allowed"
                if field == ""
                else f"unknown field {{{field}}}"
                if _FIELD_NAME.fullmatch(field)
                else f"unknown field {field!r}"
            )
            raise TemplateError(f"{problem}; use one of {', '.join(MESSAGE_FIELDS)}")
        if spec:
            _check_spec(field, spec)


def _check_spec(field: str, spec: str) -> None:
    if "{" in spec or "}" in spec:
        _check_template_fields(spec)  # an unknown nested field is named as such
        # "{job_id:>{epoch}}" would take its width from the API: refused, not checked.
        raise TemplateError(f"{{{field}}}: a format spec may not hold a field")
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:
        raise TemplateError(f"{{{field}}}: not a valid format spec {spec[:40]!r}")
    width = match["width"].lstrip("0")
    if len(width) > len(str(_MAX_FIELD_WIDTH)) or int(width or "0") > _MAX_FIELD_WIDTH:
        raise TemplateError(f"{{{field}}}: a width may be at most {_MAX_FIELD_WIDTH}")
