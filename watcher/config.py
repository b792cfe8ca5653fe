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
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from watcher.core.errors import ConfigError
from watcher.core.kinds import ALL_STATES, DEFAULT_BASE_URL, JobKind, short_state
from watcher.core.messages import MESSAGE_FIELDS
from watcher.core.model import JobRef
from watcher.core.text import one_line

#: Names the config file may have when no path is given, in search order. `$FIREWORKS_WATCHER_CONFIG`,
#: when set, comes before them all.
DEFAULT_CONFIG_NAMES: tuple[Path, ...] = (
    Path("watcher.toml"),
    Path("/etc/fireworks-watcher/watcher.toml"),
)
CONFIG_ENV: Final = "FIREWORKS_WATCHER_CONFIG"
ACCOUNT_ENV: Final = "FIREWORKS_ACCOUNT_ID"
API_KEY_ENV: Final = "FIREWORKS_API_KEY"
BASE_URL_ENV: Final = "FIREWORKS_BASE_URL"
STATE_DIRECTORY_ENV: Final = "STATE_DIRECTORY"  # set by systemd's StateDirectory=
HEALTH_LISTEN_ENV: Final = "FIREWORKS_WATCHER_HEALTH_LISTEN"  # e.g. 0.0.0.0:9464 in the image
CREDENTIALS_DIRECTORY_ENV: Final = "CREDENTIALS_DIRECTORY"  # set by systemd's LoadCredential=
#: The credential name the systemd unit loads the API key under.
API_KEY_CREDENTIAL: Final = "fireworks_api_key"

_TOP_LEVEL_KEYS: Final = ("fireworks", "watcher", "watch", "channel")
_SECRET_KEYS: Final = frozenset({"urls", "api_key", "api_key_file"})
_MAX_KEY_FILE_BYTES: Final = 64 * 1024
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RESOURCE_NAME = re.compile(r"accounts/([^/]+)/([^/]+)/([^/]+)")
_HTTP_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):([0-9]{1,5})")
_VAR_REF = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\}?)")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_STATE_NAMES: Final = ALL_STATES
# The context key under which `parse` passes the account, so full job names can be checked.
_ACCOUNT: Final = "account_id"


class _Invalid(ValueError):
    """A validation problem found below the location pydantic reports (e.g. `name` in a channel)."""

    def __init__(self, where: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.where = where
        self.problem = problem


# --- field validators ----------------------------------------------------------------------------


def _non_blank(value: str) -> str:
    if not value.strip():
        msg = "must not be empty"
        raise ValueError(msg)
    return value


def _identifier(value: str) -> str:
    if not _ID.fullmatch(value):
        msg = "must be an id of letters, digits, '.', '_' and '-'"
        raise ValueError(msg)
    return value


def _http_url(value: str) -> str:
    value = value.rstrip("/")
    if not _HTTP_URL.fullmatch(value):
        msg = "must be an http:// or https:// URL"
        raise ValueError(msg)
    return value


def _secret_non_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        msg = "must not be empty"
        raise ValueError(msg)
    return value


def _listen_address(value: str) -> str:
    if value and parse_listen(value) is None:
        msg = 'must be "host:port" (port 0-65535), e.g. "127.0.0.1:9464", or "" to disable'
        raise ValueError(msg)
    return value


def _path(value: object) -> object:
    # pydantic turns "" into Path("."), which would silently mean "the current directory".
    if isinstance(value, str) and not value.strip():
        msg = "must not be empty"
        raise ValueError(msg)
    if isinstance(value, str):
        try:
            return Path(value).expanduser()
        except RuntimeError:  # no home directory to expand "~" into: keep the path as written
            return Path(value)
    return value


def _job_kind(value: object) -> object:
    # Be forgiving about case and "_" vs "-": `kind = "Batch_Inference"` is not a typo worth failing.
    return value.strip().lower().replace("_", "-") if isinstance(value, str) else value


def _job_id(value: str, info: ValidationInfo) -> str:
    """Normalise one `[[watch]].jobs` entry (an id or a full resource name) to the job id."""
    if match := _RESOURCE_NAME.fullmatch(value):
        account, collection, value = match.groups()
        kind = info.data.get("kind")
        if isinstance(kind, JobKind) and collection != kind.collection:
            msg = f'names another collection than {kind.collection} (kind = "{kind}")'
            raise ValueError(msg)
        expected = (info.context or {}).get(_ACCOUNT)
        if isinstance(expected, str) and account != expected:
            msg = "names another account than fireworks.account_id"
            raise ValueError(msg)
    if not _ID.fullmatch(value):
        msg = "must be a job id (my-dpo-job) or a resource name (accounts/ACCOUNT/dpoJobs/ID)"
        raise ValueError(msg)
    return value


def _state_name(value: str) -> str:
    """`completed` or `JOB_STATE_COMPLETED` -> `COMPLETED`; a typo is an error, not a silent no-match."""
    short = short_state(value) if value.strip() else ""
    if short not in _STATE_NAMES:
        msg = "unknown state; use a name like COMPLETED, FAILED, RUNNING or READY"
        raise ValueError(msg)
    return short


def _template(value: str) -> str:
    """Accept a `str.format` template that uses only the message fields."""
    try:
        _check_template_fields(value)
        # Formatting with strings catches what `parse` lets through: bad conversions and specs.
        value.format_map(dict.fromkeys(MESSAGE_FIELDS, ""))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        if isinstance(exc, _Invalid):
            raise
        msg = f"not a valid template: {exc}"
        raise ValueError(msg) from None
    return value


def _check_template_fields(template: str) -> None:
    for _literal, field, spec, _conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in MESSAGE_FIELDS:
            problem = (
                "positional {} is not allowed"
                if field == ""
                else f"unknown field {{{field}}}"
                if _BARE_KEY.fullmatch(field)
                else f"unknown field {field!r}"
            )
            raise _Invalid((), f"{problem}; use one of {', '.join(MESSAGE_FIELDS)}")
        if spec:  # a spec may hold nested fields: "{job_id:>{width}}"
            _check_template_fields(spec)


# --- value types -------------------------------------------------------------------------------

_Seconds = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
_Text = Annotated[str, Field(strict=True), AfterValidator(_non_blank)]
_Template = Annotated[str, Field(strict=True), AfterValidator(_template)]
_JobId = Annotated[str, Field(strict=True), AfterValidator(_job_id)]
_StateName = Annotated[str, Field(strict=True), AfterValidator(_state_name)]
_Url = Annotated[SecretStr, AfterValidator(_secret_non_blank)]


class _Frozen(BaseModel):
    # hide_input_in_errors keeps secrets out of str(ValidationError) for code that builds these
    # models directly; `parse` writes its own messages.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class FireworksSettings(_Frozen):
    """The `[fireworks]` table: which account to watch and how to reach the API.

    The TOML keys are `account_id`, `api_key_file` and `base_url`; `parse` reads the key file (or
    `$FIREWORKS_API_KEY`) into `api_key`. The key itself never goes in a config file.
    """

    account_id: Annotated[str, Field(strict=True), AfterValidator(_identifier)]
    api_key: SecretStr | None = None
    base_url: Annotated[str, Field(strict=True), AfterValidator(_http_url)] = DEFAULT_BASE_URL


class WatcherSettings(_Frozen):
    """The `[watcher]` table: polling pace, API budget, where state lives, the health endpoint.

    `terminal_poll_interval` is always a number after validation: when not given it is
    `min(10 * poll_interval, 600)`, but never less than `poll_interval`.
    """

    poll_interval: _Seconds = 30.0
    terminal_poll_interval: _Seconds = 300.0
    max_requests_per_minute: Annotated[int, Field(strict=True, ge=1)] = 60
    state_path: Annotated[Path, BeforeValidator(_path)] = Path("state.db")
    health_listen: Annotated[str, Field(strict=True), AfterValidator(_listen_address)] = (
        "127.0.0.1:9464"
    )
    request_timeout: _Seconds = 10.0
    retry_max_delay: _Seconds = 60.0
    retry_for: _Seconds = 86400.0
    notify_timeout: _Seconds = 30.0
    api_down_after: Annotated[int, Field(strict=True, ge=1)] = 3
    unreadable_after: Annotated[int, Field(strict=True, ge=0)] = 3

    @model_validator(mode="before")
    @classmethod
    def _default_terminal_interval(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("terminal_poll_interval") is None:
            poll = data.get("poll_interval", 30.0)
            # An invalid poll_interval is reported by its own field; the default then does not matter.
            if isinstance(poll, int | float) and not isinstance(poll, bool) and 0 < poll < 1e300:
                data = {**data, "terminal_poll_interval": max(poll, min(10 * poll, 600.0))}
        return data

    @model_validator(mode="after")
    def _terminal_not_faster(self) -> Self:
        if self.terminal_poll_interval < self.poll_interval:
            problem = f"must be >= poll_interval ({self.poll_interval:g})"
            raise _Invalid(("terminal_poll_interval",), problem)
        return self

    @property
    def health_address(self) -> tuple[str, int] | None:
        """`health_listen` as `(host, port)` (IPv6 without brackets), or None when disabled."""
        return parse_listen(self.health_listen) if self.health_listen else None


class WatchSettings(_Frozen):
    """One `[[watch]]`: a job kind and either explicit jobs or `discover = true` (or both).

    `jobs` holds job ids: full resource names are normalised to the id after checking that they
    name this watch's kind and the configured account.
    """

    kind: Annotated[JobKind, BeforeValidator(_job_kind)] = JobKind.DPO
    jobs: tuple[_JobId, ...] = ()
    discover: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _something_to_watch(self) -> Self:
        if not self.jobs and not self.discover:
            raise _Invalid((), "give jobs or discover = true")
        return self

    def refs(self) -> tuple[JobRef, ...]:
        """The explicit jobs of this watch (discovered ones are found at run time)."""
        return tuple(JobRef(self.kind, job_id) for job_id in dict.fromkeys(self.jobs))


class ChannelSettings(_Frozen):
    """One `[[channel]]`: where to send notifications and which transitions to send.

    Attributes:
        name: unique across channels; used by `test-notify NAME` and in logs.
        urls: apprise URLs; secrets, since they often embed tokens.
        to_states: short upper-case state names; None means every transition.
        jobs: globs on job id or display name; empty means every job.
        title: `str.format` template over `messages.MESSAGE_FIELDS`; None for the default.
        body: as `title`.
        notify_initial: also notify the first sight of a job.
        notify_new: also notify jobs that appear in a discovered kind after its first listing.
    """

    name: _Text
    urls: Annotated[tuple[_Url, ...], Field(min_length=1)]
    to_states: Annotated[frozenset[_StateName], Field(min_length=1)] | None = None
    jobs: tuple[_Text, ...] = ()
    title: _Template | None = None
    body: _Template | None = None
    notify_initial: Annotated[bool, Field(strict=True)] = False
    notify_new: Annotated[bool, Field(strict=True)] = False


class Settings(_Frozen):
    """The whole validated configuration; `source` names where it came from, for messages."""

    fireworks: FireworksSettings
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    watches: tuple[WatchSettings, ...] = ()
    channels: tuple[ChannelSettings, ...] = ()
    source: str = "<config>"

    @field_validator("channels")
    @classmethod
    def _unique_channel_names(
        cls, channels: tuple[ChannelSettings, ...]
    ) -> tuple[ChannelSettings, ...]:
        first: dict[str, int] = {}
        for index, channel in enumerate(channels):
            if channel.name in first:
                problem = f"same name as channel[{first[channel.name]}]; names must be unique"
                raise _Invalid((index, "name"), problem)
            first[channel.name] = index
        return channels

    def refs(self) -> tuple[JobRef, ...]:
        """Every explicit job of every watch, without duplicates, in config order."""
        return tuple(dict.fromkeys(ref for watch in self.watches for ref in watch.refs()))

    def require_api_key(self) -> str:
        """The API key, or a ConfigError saying how to provide one."""
        if self.fireworks.api_key is None:
            msg = f"{self.source}: missing API key: set {API_KEY_ENV} or fireworks.api_key_file"
            raise ConfigError(msg)
        return self.fireworks.api_key.get_secret_value()

    def require_watches(self) -> None:
        """Raise ConfigError unless at least one `[[watch]]` is configured (`run` and `once` need one)."""
        if not self.watches:
            msg = f"no [[watch]] in {self.source}"
            raise ConfigError(msg)


def parse_listen(value: str) -> tuple[str, int] | None:
    """`"127.0.0.1:9464"` -> `("127.0.0.1", 9464)`, `"[::1]:0"` -> `("::1", 0)`; None if malformed."""
    match = _LISTEN.fullmatch(value)
    if match is None or int(match[2]) > 65535:
        return None
    return match[1].removeprefix("[").removesuffix("]"), int(match[2])


# --- parse and load -------------------------------------------------------------------------------


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
            raise _fail(
                source, _render((key,)), "unknown key (fireworks, watcher, watch or channel)"
            )
    fireworks_table = data.get("fireworks")
    if isinstance(fireworks_table, Mapping) and "api_key" in fireworks_table:
        problem = f"the API key does not belong in a config file; set {API_KEY_ENV} or api_key_file"
        raise _fail(source, "fireworks.api_key", problem)
    origins = _Origins()
    raw = _interpolate(data, (), env, origins, source)
    fireworks = _fireworks_table(raw.get("fireworks", {}), env, origins, source)
    prepared = {
        "fireworks": fireworks,
        "watcher": _watcher_table(raw.get("watcher", {}), env, origins),
        "watches": raw.get("watch", ()),
        "channels": raw.get("channel", ()),
        "source": source,
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


def _read(path: Path | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The decoded TOML document of the config file, and its name for messages."""
    if path is None:
        path = default_config_path(env)
        if path is None:
            tried = ", ".join(str(name) for name in DEFAULT_CONFIG_NAMES)
            msg = f"no config file found (tried {tried}); pass -c CONFIG or set {CONFIG_ENV}"
            raise ConfigError(msg)
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        hint = f" (from {CONFIG_ENV})" if env.get(CONFIG_ENV) == str(path) else ""
        raise ConfigError(f"{path}: config file not found{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(one_line(f"{path}: invalid TOML: {exc}")) from None
    return document, str(path)


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

    `state_path` from systemd's `$STATE_DIRECTORY`; `health_listen` from
    `$FIREWORKS_WATCHER_HEALTH_LISTEN` (the container image listens on every interface).
    """
    if not isinstance(table, Mapping):
        return table
    out = dict(table)
    state_directory = env.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    if "state_path" not in out and state_directory:
        origins.env_default["watcher.state_path"] = STATE_DIRECTORY_ENV
        out["state_path"] = os.path.join(state_directory, "state.db")
    if "health_listen" not in out and HEALTH_LISTEN_ENV in env:
        origins.env_default["watcher.health_listen"] = HEALTH_LISTEN_ENV
        out["health_listen"] = env[HEALTH_LISTEN_ENV]
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
        bound = ctx.get("gt", ctx.get("ge"))
        problem = f"must be {'>' if kind == 'greater_than' else '>='} {bound:g}"
    elif kind == "enum":
        problem = f"must be one of {ctx.get('expected')}"
    else:
        problem = _PROBLEMS.get(kind, error["msg"])
    path = _render(loc, fields=True)
    if loc in (("watches",), ("channels",)) and kind == "tuple_type":
        problem = f"must be an array of tables: write [[{path}]]"
    if loc == ("fireworks", "account_id") and kind == "missing":
        problem = f"required (or set {ACCOUNT_ENV})"
    if path in origins.env_default:
        problem += f" (from {origins.env_default[path]})"
    elif show_input and kind not in ("missing", "extra_forbidden"):
        shown = _shown(error.get("input"), loc, path, origins)
        if shown:
            problem += f", got {shown}"
    return f"{path}: {origins.scrub(path, problem)}"


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
            part = {"watches": "watch", "channels": "channel"}.get(part, part)
        elif fields and loc[0] == "fireworks" and part == "api_key":
            part = "api_key_file"
        name = part if isinstance(part, str) and _BARE_KEY.fullmatch(part) else repr(part)
        out += f".{name}" if out else name
    return out or "(top level)"


def _fail(source: str, path: str, problem: str) -> ConfigError:
    return ConfigError(one_line(f"{source}: {path}: {problem}"))
