"""The settings' schema: frozen pydantic models whose validators name each problem.

The keys, their types, bounds and defaults; `watcher.config` parses a file into them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.config.alerting import (
    _digest,
    _discord_user,
    _duration,
    _email,
    _group_by,
    _kind_glob,
    _owners,
    _quiet_hours,
    _slack_member,
    _time_zone,
)
from watcher.config.network import IN_CLEAR, in_clear_beyond_loopback
from watcher.config.templates import template
from watcher.core.errors import ConfigError
from watcher.core.hosts import host_name
from watcher.core.kinds import ALL_STATES, DEFAULT_BASE_URL, JobKind, short_state
from watcher.core.model import JobRef
from watcher.core.names import ID_RULE, is_valid_id
from watcher.core.rules import DIRECTORY

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
STATE_URL_ENV: Final = "FIREWORKS_WATCHER_STATE_URL"  # postgresql://... for several replicas
HEALTH_LISTEN_ENV: Final = "FIREWORKS_WATCHER_HEALTH_LISTEN"  # e.g. 0.0.0.0:9464 in the image
WEB_TOKEN_ENV: Final = "FIREWORKS_WATCHER_WEB_TOKEN"  # the status page's token beyond loopback
MAX_INFLIGHT_BYTES_ENV: Final = "FIREWORKS_WATCHER_MAX_INFLIGHT_BYTES"  # beside a memory limit
CREDENTIALS_DIRECTORY_ENV: Final = "CREDENTIALS_DIRECTORY"  # set by systemd's LoadCredential=
#: The credential name the systemd unit loads the API key under.
API_KEY_CREDENTIAL: Final = "fireworks_api_key"

_TOP_LEVEL_KEYS: Final = ("fireworks", "watcher", "watch", "channel", "person")
_SECRET_KEYS: Final = frozenset({"urls", "api_key", "api_key_file", "state_url", "web_token"})
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


def _state_url(value: SecretStr) -> SecretStr:
    text = value.get_secret_value().strip()
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in ("postgresql", "postgres") or len(text) > 4096:
        raise ValueError("must be a postgresql://user@host:port/database URL")
    return SecretStr(text)


def _web_token(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not 16 <= len(text) <= 256 or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("must be 16 to 256 printable characters, without spaces")
    return value


def _allowed_host(value: str) -> str:
    name = host_name(value)
    if name is None:
        msg = 'must be a host name or address, without scheme or port: "watcher.example"'
        raise ValueError(msg)
    return name


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
    if info.data.get("kind") is JobKind.ACCOUNT:
        return _account_job(value, info)
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
    if not is_valid_id(value):  # the rule LIST items are held to (watcher.core.names)
        msg = (
            f"must be a job id (my-dpo-job; {ID_RULE})"
            " or a resource name (accounts/ACCOUNT/dpoJobs/ID)"
        )
        raise ValueError(msg)
    return value


def _account_job(value: str, info: ValidationInfo) -> str:
    """A `kind = "account"` watch's job: the configured account (`acme` or `accounts/acme`)."""
    value = value.removeprefix("accounts/")
    expected = (info.context or {}).get(_ACCOUNT)
    if isinstance(expected, str) and value != expected:
        raise ValueError('a kind = "account" watch names only fireworks.account_id')
    if not is_valid_id(value):
        raise ValueError(f"must be the account id ({ID_RULE})")
    return value


def _state_name(value: str) -> str:
    """`completed` or `JOB_STATE_COMPLETED` -> `COMPLETED`; a typo is an error, not a silent no-match."""
    short = short_state(value) if value.strip() else ""
    if short not in _STATE_NAMES:
        msg = "unknown state; use a name like COMPLETED, FAILED, RUNNING or READY"
        raise ValueError(msg)
    return short


# --- value types -------------------------------------------------------------------------------

# Upper bounds: a value past them is a typo (or 1e12), not a wish, and would overflow the
# schedule's arithmetic at run time; `check` refuses it with one line instead.
_DAY: Final = 86400.0
_MIB: Final = 1024 * 1024
#: THE type of every duration key: seconds as a number, or "90s", "30m", "2h", "1h30m"; each
#: use adds its own bounds.
_Seconds = Annotated[float, BeforeValidator(_duration), Field(strict=True, allow_inf_nan=False)]
_Interval = Annotated[_Seconds, Field(gt=0, le=_DAY)]
_Timeout = Annotated[_Seconds, Field(gt=0, le=600)]
_Count = Annotated[int, Field(strict=True, le=10_000)]
_Text = Annotated[str, Field(strict=True), AfterValidator(_non_blank)]
_Template = Annotated[str, Field(strict=True), AfterValidator(template)]
_JobId = Annotated[str, Field(strict=True), AfterValidator(_job_id)]
_StateName = Annotated[str, Field(strict=True), AfterValidator(_state_name)]
_Url = Annotated[SecretStr, AfterValidator(_secret_non_blank)]
_AllowedHost = Annotated[str, Field(strict=True), AfterValidator(_allowed_host)]
#: Seconds, or "30m", "2h", "1d"; 0 switches the feature off; at most a year.
_Duration = Annotated[_Seconds, Field(ge=0, le=366 * _DAY)]


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

    poll_interval: _Interval = 30.0
    terminal_poll_interval: _Interval = 300.0
    # A sanity bound (the API's own ceiling is 6,000 a minute for the whole account).
    max_requests_per_minute: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 60
    state_path: Annotated[Path, BeforeValidator(_path)] = Path("state.db")
    # PostgreSQL instead of the state file, for several replicas (the password is a secret).
    state_url: Annotated[SecretStr, Field(strict=False), AfterValidator(_state_url)] | None = None
    health_listen: Annotated[str, Field(strict=True), AfterValidator(_listen_address)] = (
        "127.0.0.1:9464"
    )
    # The status page's and JSON API's bearer token; required to see them beyond loopback.
    web_token: Annotated[SecretStr, Field(strict=False), AfterValidator(_web_token)] | None = None
    # Host names the page and API answer to beside loopback ones (the Host header is checked
    # on loopback without a token, against DNS rebinding, and everywhere once this is set).
    web_allowed_hosts: tuple[_AllowedHost, ...] = ()
    request_timeout: _Timeout = 10.0
    retry_max_delay: _Interval = 60.0
    retry_for: Annotated[_Seconds, Field(gt=0, le=30 * _DAY)] = 86400.0
    notify_timeout: _Timeout = 30.0
    api_down_after: Annotated[_Count, Field(ge=1)] = 3
    unreadable_after: Annotated[_Count, Field(ge=0)] = 3
    # The decoded size of one API answer (a LIST page or a job), counted as it streams in:
    # 200 jobs take well under 1 MiB; the container's memory limit is 256 MiB.
    max_answer_bytes: Annotated[int, Field(strict=True, ge=64 * 1024, le=512 * _MIB)] = 32 * _MIB
    # The decoded bytes of every answer in flight together, from the first byte read until
    # parsed: kinds are read side by side. An answer that would pass it waits its turn.
    max_inflight_bytes: Annotated[int, Field(strict=True, ge=64 * 1024, le=2048 * _MIB)] = 64 * _MIB
    # Jobs never seen before that one discovered kind's listing records per cycle (ten times
    # as many for its first listing); the rest are recorded on later cycles.
    max_new_per_cycle: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 1000
    # Events (transitions, conditions, deliveries, silences) are kept this many days.
    history_days: Annotated[int, Field(strict=True, ge=1, le=3660)] = 90
    # `fireworks_watcher_job_state{kind,job,state}`: off for accounts with too many jobs.
    job_state_metrics: Annotated[bool, Field(strict=True)] = True
    # `http://` to a host beyond loopback sends the API key in clear: refused unless this is set.
    allow_insecure_base_url: Annotated[bool, Field(strict=True)] = False
    # The account's own health (`kind = "account"`: suspended for credit, spend limit...):
    # true watches it at terminal_poll_interval without a [[watch]]; false leaves it to one.
    watch_account: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="before")
    @classmethod
    def _default_terminal_interval(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("terminal_poll_interval") is None:
            poll = data.get("poll_interval", 30.0)
            with suppress(ValueError):
                poll = _duration(poll)  # "2m" too
            # An invalid poll_interval is reported by its own field; the default then does not matter.
            if isinstance(poll, int | float) and not isinstance(poll, bool) and 0 < poll <= _DAY:
                data = {**data, "terminal_poll_interval": max(poll, min(10 * poll, 600.0))}
        return data

    @model_validator(mode="after")
    def _terminal_not_faster(self) -> Self:
        if self.terminal_poll_interval < self.poll_interval:
            problem = f"must be >= poll_interval ({self.poll_interval:g})"
            raise _Invalid(("terminal_poll_interval",), problem)
        if self.max_inflight_bytes < self.max_answer_bytes:
            # The oldest answer in flight must have room to be read whole.
            problem = f"must be >= max_answer_bytes ({self.max_answer_bytes})"
            raise _Invalid(("max_inflight_bytes",), problem)
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
    # Conditions: seconds (or "30m") before each opens; 0 disables it.
    stall_after: _Duration = 1800.0
    pending_after: _Duration = 7200.0
    max_runtime: _Duration = 0.0
    # Flapping: more than flap_threshold state changes within flap_window; 0 disables it.
    flap_threshold: Annotated[int, Field(strict=True, ge=0, le=1000)] = 6
    flap_window: _Interval = 1800.0

    @model_validator(mode="after")
    def _something_to_watch(self) -> Self:
        if self.kind is JobKind.ACCOUNT:
            return self  # the configured account: `Settings.account_refs`
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
        kinds: globs on the kind name (`"dpo*"`); empty means every kind.
        owners: globs on the job's owner (`createdBy`, or derived: `core.owners`), any case;
            empty means every job, and a job with no owner matches none; `"directory"` (alone
            or in the array) is anyone in `[[person]]`.
        title: `str.format` template over `messages.MESSAGE_FIELDS`; None for the default.
        body: as `title`.
        notify_initial: also notify the first sight of a job.
        notify_new: also notify jobs that appear in a discovered kind after its first listing.
    """

    name: _Text
    urls: Annotated[tuple[_Url, ...], Field(min_length=1)]
    to_states: Annotated[frozenset[_StateName], Field(min_length=1)] | None = None
    jobs: tuple[_Text, ...] = ()
    kinds: tuple[Annotated[str, Field(strict=True), AfterValidator(_kind_glob)], ...] = ()
    owners: Annotated[tuple[_Text, ...], BeforeValidator(_owners)] = ()
    title: _Template | None = None
    body: _Template | None = None
    notify_initial: Annotated[bool, Field(strict=True)] = False
    notify_new: Annotated[bool, Field(strict=True)] = False
    # Alerting (0 or "" is off): reminders, grouping, rate folding, digests, quiet hours,
    # progress milestones. See `watcher.core.delivery.ChannelPolicy`.
    repeat_interval: _Duration = 0.0
    group_wait: Annotated[_Duration, Field(le=_DAY)] = 0.0
    group_by: Annotated[str, Field(strict=True), AfterValidator(_group_by)] = "job"
    max_per_minute: Annotated[int, Field(strict=True, ge=0, le=10_000)] = 0
    digest: Annotated[str, Field(strict=True), AfterValidator(_digest)] | None = None
    digest_timezone: Annotated[str, Field(strict=True), AfterValidator(_time_zone)] = "UTC"
    digest_empty: Annotated[bool, Field(strict=True)] = False
    quiet_hours: Annotated[tuple[str, str], BeforeValidator(_quiet_hours)] | None = None
    progress_every: Annotated[int, Field(strict=True, ge=0, le=50)] = 0
    # The pace of sends to each URL: every message goes, in order, at most this many a second
    # (0.5: one every 2 s). Unlike max_per_minute, nothing is folded into a summary.
    max_per_second: Annotated[float, Field(strict=True, gt=0, le=100, allow_inf_nan=False)] = 1.0

    @model_validator(mode="after")
    def _reminders_not_too_often(self) -> Self:
        if 0 < self.repeat_interval < 10:
            raise _Invalid(("repeat_interval",), "must be 0 (off) or at least 10 seconds")
        return self


class PersonSettings(_Frozen):
    """One `[[person]]` of the people directory: `email` is matched against owners (any case);
    `slack` (a member id) and `discord` (a user id) let `{owner_mention}` notify them."""

    email: Annotated[str, Field(strict=True), AfterValidator(_email)]
    name: Annotated[str, Field(strict=True, max_length=200)] = ""
    slack: Annotated[str, Field(strict=True), AfterValidator(_slack_member)] = ""
    discord: Annotated[str, Field(strict=True), AfterValidator(_discord_user)] = ""


class Settings(_Frozen):
    """The whole validated configuration; `source` names where it came from, for messages."""

    fireworks: FireworksSettings
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    watches: tuple[WatchSettings, ...] = ()
    channels: tuple[ChannelSettings, ...] = ()
    people: tuple[PersonSettings, ...] = ()
    source: str = "<config>"
    #: What `${VAR}` put into channel URLs (set by `parse`, never by the file): masked wherever
    #: a URL is shown, even where apprise's privacy form would keep it (a query value).
    url_secrets: tuple[SecretStr, ...] = ()

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

    @field_validator("people")
    @classmethod
    def _unique_emails(cls, people: tuple[PersonSettings, ...]) -> tuple[PersonSettings, ...]:
        first: dict[str, int] = {}
        for index, person in enumerate(people):
            email = person.email.casefold()
            if email in first:
                problem = f"same e-mail as person[{first[email]}]; each person once"
                raise _Invalid((index, "email"), problem)
            first[email] = index
        return people

    @model_validator(mode="after")
    def _directory_not_empty(self) -> Self:
        for index, channel in enumerate(self.channels):
            if DIRECTORY in channel.owners and not self.people:
                problem = f'"{DIRECTORY}" but no [[person]] is configured'
                raise _Invalid(("channels", index, "owners"), problem)
        return self

    @model_validator(mode="after")
    def _api_key_not_in_clear(self) -> Self:
        allowed = self.watcher.allow_insecure_base_url
        if not allowed and in_clear_beyond_loopback(self.fireworks.base_url):
            raise _Invalid(("fireworks", "base_url"), IN_CLEAR)
        return self

    def refs(self) -> tuple[JobRef, ...]:
        """Every explicit job of every watch, without duplicates, in config order."""
        return tuple(dict.fromkeys(ref for watch in self.watches for ref in watch.refs()))

    def account_refs(self) -> tuple[JobRef, ...]:
        """The account's own health: watched with `watcher.watch_account`, and whenever a
        `[[watch]] kind = "account"` asks for it."""
        asked = any(watch.kind is JobKind.ACCOUNT for watch in self.watches)
        if not (asked or self.watcher.watch_account):
            return ()
        return (JobRef(JobKind.ACCOUNT, self.fireworks.account_id),)

    def watch_refs(self, watch: WatchSettings) -> tuple[JobRef, ...]:
        """The explicit resources of one watch: its jobs, or for the account watch the account."""
        return self.account_refs() if watch.kind is JobKind.ACCOUNT else watch.refs()

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
