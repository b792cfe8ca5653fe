"""The configuration: a TOML file turned into validated, frozen settings, once.

`load` finds and reads the file; `parse` does the rest and is pure apart from reading
`fireworks.api_key_file`. Before validation, `${VAR}` in every string value is replaced from the
environment (`$${` is a literal `${`), and environment variables fill in the keys the file leaves
out: a value written in the file wins. Every problem becomes one `ConfigError` line of the form
`<source>: <key.path>: <problem>`, and no message ever quotes a secret (API key, channel URLs) or a
value that came from the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr, ValidationError

from watcher.config.describe import (
    _describe,
    _fail,
    _may_hold_credentials,
    _Origins,
    _quote,
    _render,
    did_you_mean,
)
from watcher.config.schema import (
    _ACCOUNT,
    _MAX_KEY_FILE_BYTES,
    _TOP_LEVEL_KEYS,
    _VAR_NAME,
    _VAR_REF,
    ACCOUNT_ENV,
    API_KEY_CREDENTIAL,
    API_KEY_ENV,
    BASE_URL_ENV,
    CONFIG_ENV,
    CREDENTIALS_DIRECTORY_ENV,
    DEFAULT_CONFIG_NAMES,
    HEALTH_LISTEN_ENV,
    MAX_INFLIGHT_BYTES_ENV,
    STATE_DIRECTORY_ENV,
    STATE_URL_ENV,
    WEB_TOKEN_ENV,
    ChannelSettings,
    FireworksSettings,
    Settings,
    WatcherSettings,
    WatchSettings,
    parse_listen,
)
from watcher.core.errors import ConfigError
from watcher.core.text import one_line

__all__ = [
    "ACCOUNT_ENV",
    "API_KEY_CREDENTIAL",
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "CONFIG_ENV",
    "CREDENTIALS_DIRECTORY_ENV",
    "DEFAULT_CONFIG_NAMES",
    "HEALTH_LISTEN_ENV",
    "STATE_DIRECTORY_ENV",
    "STATE_URL_ENV",
    "WEB_TOKEN_ENV",
    "ChannelSettings",
    "FireworksSettings",
    "Settings",
    "WatchSettings",
    "WatcherSettings",
    "default_config_path",
    "load",
    "load_watcher",
    "parse",
    "parse_listen",
]


# --- parse and load -------------------------------------------------------------------------------


def parse(data: Mapping[str, Any], env: Mapping[str, str], *, source: str = "<config>") -> Settings:
    """Validate a decoded TOML document into Settings.

    Args:
        data: the document, as `tomllib` returns it.
        env: the environment, for `${VAR}` references and defaults (pass `os.environ`).
        source: where the document came from; every error message starts with it.

    Raises:
        ConfigError: one line naming the key path and the problem.
    """
    if not isinstance(data, Mapping):
        raise _fail(source, "(top level)", "the config must be a TOML document (a table of keys)")
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            known = f"{', '.join(_TOP_LEVEL_KEYS[:-1])} or {_TOP_LEVEL_KEYS[-1]}"
            problem = "unknown key" + (did_you_mean(key, _TOP_LEVEL_KEYS) or f" ({known})")
            raise _fail(source, _render((key,)), problem)
    fireworks_table = data.get("fireworks")
    if isinstance(fireworks_table, Mapping) and "api_key" in fireworks_table:
        problem = f"the API key does not belong in a config file; set {API_KEY_ENV} or api_key_file"
        raise _fail(source, "fireworks.api_key", problem)
    _check_depth(data, source)
    origins = _Origins()
    raw = _interpolate(data, (), env, origins, source)
    fireworks = _fireworks_table(raw.get("fireworks", {}), env, origins, source)
    prepared = {
        "fireworks": fireworks,
        "watcher": _watcher_table(raw.get("watcher", {}), env, origins),
        "watches": raw.get("watch", ()),
        "channels": raw.get("channel", ()),
        "people": raw.get("person", ()),
        "source": source,
        "url_secrets": _url_secrets(origins),
    }
    account = fireworks.get("account_id") if isinstance(fireworks, dict) else None
    context = {_ACCOUNT: account if isinstance(account, str) else None}
    try:
        return Settings.model_validate(prepared, context=context)
    except ValidationError as exc:
        # `from None`: the pydantic traceback adds nothing and may show inputs.
        raise ConfigError(_describe(exc, source, origins)) from None


def default_config_path(env: Mapping[str, str]) -> Path | None:
    """`$FIREWORKS_WATCHER_CONFIG` if set, else the first of DEFAULT_CONFIG_NAMES that exists."""
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return next((path for path in DEFAULT_CONFIG_NAMES if path.is_file()), None)


def load(path: Path | None, env: Mapping[str, str]) -> Settings:
    """Read and parse a config file; with `path` None, search the default locations.

    Raises:
        ConfigError: no file, unreadable file, bad TOML (with line and column), or invalid settings.
    """
    document, source = _read(path, env)
    return parse(document, env, source=source)


def load_watcher(path: Path | None, env: Mapping[str, str]) -> WatcherSettings:
    """Only the `[watcher]` table of a config file (where the state lives), for commands that
    read the state: no channel URL is resolved, so their `${VAR}` secrets need not be set,
    and no account or key is needed.

    Raises:
        ConfigError: as `load`, for the file and its `[watcher]` table.
    """
    document, source = _read(path, env)
    _check_depth(document, source)
    origins = _Origins()
    table = document.get("watcher", {})
    raw = _interpolate({"watcher": table}, (), env, origins, source)
    prepared = {
        "fireworks": {"account_id": "unused"},
        "watcher": _watcher_table(raw.get("watcher", {}), env, origins),
    }
    try:
        return Settings.model_validate(prepared).watcher
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, origins)) from None


def channel_names(path: Path | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """The `name` of every `[[channel]]` of a config file, nothing resolved (for `silence`).

    Raises:
        ConfigError: as `load`, for the file.
    """
    channels = _read(path, env)[0].get("channel", [])
    if not isinstance(channels, list):
        return ()
    return tuple(c["name"] for c in channels if isinstance(c, dict) and type(c.get("name")) is str)


def _read(path: Path | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The decoded TOML document of the config file, and its name for messages."""
    if path is None:
        path = default_config_path(env)
        if path is None:
            tried = ", ".join(str(name) for name in DEFAULT_CONFIG_NAMES)
            msg = f"no config file found (tried {tried}); pass -c CONFIG or set {CONFIG_ENV}"
            raise ConfigError(msg)
    try:
        with path.open("rb") as file:
            content = file.read(MAX_CONFIG_BYTES + 1)
        if len(content) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config")
        document = tomllib.loads(content.decode("utf-8"))
    except FileNotFoundError:
        hint = f" (from {CONFIG_ENV})" if env.get(CONFIG_ENV) == str(path) else ""
        raise ConfigError(f"{path}: config file not found{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(one_line(f"{path}: invalid TOML: {exc}")) from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays and inline tables.
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(one_line(f"{path}: invalid TOML: {exc}", 200)) from None
    return document, str(path)


#: A config file is a few KiB; one past this is a mistake (or an attack on `check`).
MAX_CONFIG_BYTES: Final = 1024 * 1024
#: Tables and arrays nest this deep at most; the schema itself needs 3 levels.
MAX_DEPTH: Final = 16


def _check_depth(document: Any, source: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, without recursing (so at any depth)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise _fail(source, _render(path[:MAX_DEPTH]), f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            stack += [(item, (*path, str(key))) for key, item in value.items()]
        elif isinstance(value, list | tuple):
            stack += [(item, (*path, i)) for i, item in enumerate(value)]


def _url_secrets(origins: _Origins) -> tuple[SecretStr, ...]:
    """What `${VAR}` put into channel URLs: secrets, masked wherever a URL is shown."""
    return tuple(
        SecretStr(value)
        for path, pairs in origins.interpolated.items()
        if path.startswith("channel[") and ".urls[" in path
        for _name, value in pairs
    )


def _interpolate(
    value: Any, path: tuple[str | int, ...], env: Mapping[str, str], origins: _Origins, source: str
) -> Any:
    """Replace `${VAR}` in every string value (never in keys) of a nested document."""
    if isinstance(value, str):
        return _substitute(value, path, env, origins, source)
    if isinstance(value, Mapping):
        return {
            key: _interpolate(item, (*path, key), env, origins, source)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            _interpolate(item, (*path, i), env, origins, source) for i, item in enumerate(value)
        ]
    return value


def _substitute(
    text: str, path: tuple[str | int, ...], env: Mapping[str, str], origins: _Origins, source: str
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        name = match["name"]
        if not match["close"]:
            raise _fail(source, _render(path), "unterminated ${ (write $${ for a literal ${)")
        if not _VAR_NAME.fullmatch(name):
            raise _fail(source, _render(path), "${...} must hold a variable name like ${TOKEN}")
        if name not in env:
            raise _fail(source, _render(path), f"environment variable {name} is not set")
        origins.interpolated.setdefault(_render(path), []).append((name, env[name]))
        return env[name]

    return _VAR_REF.sub(replace, text)


def _fireworks_table(table: Any, env: Mapping[str, str], origins: _Origins, source: str) -> Any:
    """Map the TOML `[fireworks]` keys onto FireworksSettings, filling defaults from `env`."""
    if not isinstance(table, Mapping):
        return table  # pydantic says "must be a table"
    out = dict(table)
    for key, var in (("account_id", ACCOUNT_ENV), ("base_url", BASE_URL_ENV)):
        if key not in out and env.get(var):
            out[key] = env[var]
            origins.env_default[f"fireworks.{key}"] = var
    credential = _credential_path(env)
    if "api_key_file" in out:
        out["api_key"] = _read_key_file(out.pop("api_key_file"), origins, source)
    elif credential is not None:
        # systemd's LoadCredential= hands the key over as a file: safer than the environment.
        out["api_key"] = _read_key_file(str(credential), origins, source)
    elif env.get(API_KEY_ENV, "").strip():
        out["api_key"] = env[API_KEY_ENV].strip()
    return out


def _credential_path(env: Mapping[str, str]) -> Path | None:
    """`$CREDENTIALS_DIRECTORY/fireworks_api_key` when systemd provided it."""
    directory = env.get(CREDENTIALS_DIRECTORY_ENV, "")
    if not directory:
        return None
    path = Path(directory) / API_KEY_CREDENTIAL
    return path if path.is_file() else None


def _watcher_table(table: Any, env: Mapping[str, str], origins: _Origins) -> Any:
    """Fill `[watcher]` defaults from the environment where the file leaves them out.

    `state_path` from systemd's `$STATE_DIRECTORY`; `state_url` from
    `$FIREWORKS_WATCHER_STATE_URL`; `health_listen` from
    `$FIREWORKS_WATCHER_HEALTH_LISTEN` (the container image listens on every interface);
    `web_token` from `$FIREWORKS_WATCHER_WEB_TOKEN`; `max_inflight_bytes` from
    `$FIREWORKS_WATCHER_MAX_INFLIGHT_BYTES`.
    """
    if not isinstance(table, Mapping):
        return table
    out = dict(table)
    state_directory = env.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    if "state_path" not in out and state_directory:
        origins.env_default["watcher.state_path"] = STATE_DIRECTORY_ENV
        out["state_path"] = os.path.join(state_directory, "state.db")
    if "state_url" not in out and env.get(STATE_URL_ENV, "").strip():
        origins.env_default["watcher.state_url"] = STATE_URL_ENV
        out["state_url"] = env[STATE_URL_ENV]
    if "health_listen" not in out and HEALTH_LISTEN_ENV in env:
        origins.env_default["watcher.health_listen"] = HEALTH_LISTEN_ENV
        out["health_listen"] = env[HEALTH_LISTEN_ENV]
    if "web_token" not in out and env.get(WEB_TOKEN_ENV, ""):
        origins.env_default["watcher.web_token"] = WEB_TOKEN_ENV
        out["web_token"] = env[WEB_TOKEN_ENV]
    inflight = env.get(MAX_INFLIGHT_BYTES_ENV, "").strip()
    if "max_inflight_bytes" not in out and inflight:
        # Set beside the container's memory limit; a number, else the key's own error.
        origins.env_default["watcher.max_inflight_bytes"] = MAX_INFLIGHT_BYTES_ENV
        out["max_inflight_bytes"] = int(inflight) if inflight.isdigit() else inflight
    return out


def _read_key_file(value: Any, origins: _Origins, source: str) -> str:
    """Read the API key from `fireworks.api_key_file`; errors never show the file's content."""
    where = "fireworks.api_key_file"
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, where, "must be the path of a file holding the API key")
    shown = "" if origins.hidden(where) or _may_hold_credentials(value) else f" {_quote(value)}"
    try:
        with Path(value).expanduser().open("rb") as file:
            content = file.read(_MAX_KEY_FILE_BYTES + 1)
    except (OSError, ValueError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid path"
        raise _fail(source, where, f"cannot read{shown}: {reason}") from None
    if len(content) > _MAX_KEY_FILE_BYTES:
        raise _fail(source, where, f"file{shown} is too large to hold an API key")
    try:
        key = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _fail(source, where, f"file{shown} is not UTF-8 text") from None
    if not key:
        raise _fail(source, where, f"file{shown} is empty")
    return key


# --- error messages ---------------------------------------------------------------------------

# pydantic's wording -> ours, by error type. Anything else keeps pydantic's own message.
