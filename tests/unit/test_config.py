"""Tests for watcher.config: TOML -> validated, frozen Settings, and one-line errors."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher import config
from watcher.config import (
    ChannelSettings,
    FireworksSettings,
    Settings,
    WatcherSettings,
    WatchSettings,
    default_config_path,
    describe,
    load,
    parse,
    schema,
)
from watcher.core.errors import ConfigError
from watcher.core.model import JobKind, JobRef

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "watcher.example.toml"
ENV: dict[str, str] = {"FIREWORKS_API_KEY": "fw-test-key"}
SECRET = "hunter2-secret"


def minimal() -> dict[str, Any]:
    """A fresh copy of the smallest useful config."""
    return {
        "fireworks": {"account_id": "acme"},
        "watch": [{"jobs": ["job-1"]}],
        "channel": [{"name": "team", "urls": ["json://127.0.0.1:9/hook"]}],
    }


def with_value(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of `data` with `value` set at `path`, creating tables on the way."""
    out = copy.deepcopy(data)
    node: Any = out
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value
    return out


def config_error(data: Mapping[str, Any], env: Mapping[str, str] = ENV) -> str:
    """Parse `data`, expect a ConfigError, check it is one line and return its message."""
    with pytest.raises(ConfigError) as info:
        parse(data, env, source="w.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("w.toml: ")
    return message


def error_of(data: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The ConfigError message `parse` raises, or "" when `data` is valid; nothing else may escape."""
    try:
        parse(data, env)
    except ConfigError as exc:
        return str(exc)
    return ""


class TestValid:
    """Valid configs and the defaults they get."""

    def test_minimal(self) -> None:
        """The minimal config parses, with every default filled in."""
        settings = parse(minimal(), ENV, source="w.toml")

        assert "acme" == settings.fireworks.account_id
        assert "https://api.fireworks.ai" == settings.fireworks.base_url
        assert "fw-test-key" == settings.require_api_key()
        assert WatcherSettings() == settings.watcher
        assert 30 == settings.watcher.poll_interval
        assert 300 == settings.watcher.terminal_poll_interval
        assert 60 == settings.watcher.max_requests_per_minute
        assert Path("state.db") == settings.watcher.state_path
        assert ("127.0.0.1", 9464) == settings.watcher.health_address
        assert (10, 60, 86400, 30, 3) == (
            settings.watcher.request_timeout,
            settings.watcher.retry_max_delay,
            settings.watcher.retry_for,
            settings.watcher.notify_timeout,
            settings.watcher.api_down_after,
        )
        assert (WatchSettings(kind=JobKind.DPO, jobs=("job-1",)),) == settings.watches
        channel = settings.channels[0]
        assert ("team", None, (), None, None, False) == (
            channel.name,
            channel.to_states,
            channel.jobs,
            channel.title,
            channel.body,
            channel.notify_initial,
        )
        assert ["json://127.0.0.1:9/hook"] == [url.get_secret_value() for url in channel.urls]
        assert "w.toml" == settings.source

    def test_settings_are_frozen(self) -> None:
        """Settings cannot be changed after validation."""
        settings = parse(minimal(), ENV)

        with pytest.raises(ValueError, match="frozen"):
            settings.watcher.poll_interval = 1

    def test_zero_watches_and_channels_parse(self) -> None:
        """`parse` accepts no [[watch]] and no [[channel]]; require_watches refuses the first."""
        settings = parse({"fireworks": {"account_id": "acme"}}, ENV, source="w.toml")

        assert ((), ()) == (settings.watches, settings.channels)
        with pytest.raises(ConfigError, match=re.escape("no [[watch]] in w.toml")):
            settings.require_watches()

    def test_discover_only(self) -> None:
        """A watch may discover jobs instead of naming them; it then has no explicit refs."""
        settings = parse(
            with_value(minimal(), ("watch",), [{"kind": "sft", "discover": True}]), ENV
        )

        assert (JobKind.SFT, True, ()) == (
            settings.watches[0].kind,
            settings.watches[0].discover,
            settings.refs(),
        )

    def test_kind_spelling_is_forgiving(self) -> None:
        """`Batch_Inference` is read as `batch-inference`."""
        data = with_value(minimal(), ("watch", 0, "kind"), "Batch_Inference")

        assert JobKind.BATCH_INFERENCE == parse(data, ENV).watches[0].kind

    def test_listen_ipv6_and_disabled(self) -> None:
        """`[::1]:0` is an address and "" disables the health endpoint."""
        ipv6 = parse(with_value(minimal(), ("watcher", "health_listen"), "[::1]:0"), ENV)
        off = parse(with_value(minimal(), ("watcher", "health_listen"), ""), ENV)

        assert (("::1", 0), None) == (ipv6.watcher.health_address, off.watcher.health_address)

    def test_templates_with_format_specs(self) -> None:
        """Templates may use any message field with a string format spec."""
        data = with_value(minimal(), ("channel", 0, "title"), "{job_id!r:>20} {new_state}")
        data = with_value(data, ("channel", 0, "body"), "{{literal}} {duration:^30.10}")

        channel = parse(data, ENV).channels[0]

        assert ("{job_id!r:>20} {new_state}", "{{literal}} {duration:^30.10}") == (
            channel.title,
            channel.body,
        )

    def test_models_can_be_built_directly(self) -> None:
        """Other modules' tests can build Settings without a TOML document."""
        settings = Settings(
            fireworks=FireworksSettings(account_id="acme"),
            watches=(WatchSettings(jobs=("a",)),),
            channels=(ChannelSettings(name="c", urls=("json://127.0.0.1/x",)),),  # type: ignore[arg-type]
        )

        assert (JobRef(JobKind.DPO, "a"),) == settings.refs()


class TestTerminalPollInterval:
    """`terminal_poll_interval` defaults to 10 x poll_interval, at most 600 s, never below poll."""

    @pytest.mark.parametrize(
        ("watcher", "expected"),
        [
            ({"poll_interval": 0.2}, 2.0),
            ({"poll_interval": 120}, 600.0),
            ({"poll_interval": 900}, 900.0),
            ({"poll_interval": 30, "terminal_poll_interval": 50}, 50.0),
            ({"poll_interval": 30, "terminal_poll_interval": 30}, 30.0),
        ],
        ids=["fraction", "capped", "never-below-poll", "explicit", "equal-to-poll"],
    )
    def test_value(self, watcher: dict[str, Any], expected: float) -> None:
        """The resolved interval is a number in every case."""
        settings = parse(with_value(minimal(), ("watcher",), watcher), ENV)

        assert expected == settings.watcher.terminal_poll_interval


INVALID: list[tuple[tuple[str | int, ...], Any, str]] = [
    # (key path, value, expected message substring)
    (("watcher", "poll_interval"), -1, "watcher.poll_interval: must be > 0, got -1"),
    (("watcher", "poll_interval"), 0, "watcher.poll_interval: must be > 0, got 0"),
    # A string is a duration ("30", "30s", "1m"); one that is not says what is expected.
    (("watcher", "poll_interval"), "30 sec", "watcher.poll_interval: must be a duration like"),
    (("watcher", "poll_interval"), True, "watcher.poll_interval: must be a duration like"),
    (("watcher", "poll_interval"), float("inf"), "watcher.poll_interval: must be a finite"),
    (("watcher", "poll_interval"), float("nan"), "watcher.poll_interval: must be a finite"),
    (("watcher", "terminal_poll_interval"), 5, "watcher.terminal_poll_interval: must be >="),
    (("watcher", "terminal_poll_interval"), -5, "watcher.terminal_poll_interval: must be > 0"),
    (("watcher", "max_requests_per_minute"), 0, "watcher.max_requests_per_minute: must be >= 1"),
    (("watcher", "max_requests_per_minute"), 1.5, "watcher.max_requests_per_minute: must be an"),
    (("watcher", "state_path"), "", "watcher.state_path: must not be empty"),
    (("watcher", "state_path"), 5, "watcher.state_path: must be a string"),
    (("watcher", "health_listen"), "localhost", 'watcher.health_listen: must be "host:port"'),
    (("watcher", "health_listen"), "h:70000", "watcher.health_listen:"),
    (("watcher", "health_listen"), ":9464", "watcher.health_listen:"),
    (("watcher", "health_listen"), 9464, "watcher.health_listen: must be a string"),
    (("watcher", "request_timeout"), 0, "watcher.request_timeout: must be > 0"),
    (("watcher", "retry_max_delay"), -1, "watcher.retry_max_delay: must be > 0"),
    (("watcher", "retry_for"), 0, "watcher.retry_for: must be > 0"),
    (("watcher", "notify_timeout"), 0, "watcher.notify_timeout: must be > 0"),
    (("watcher", "api_down_after"), 0, "watcher.api_down_after"),
    (("watcher", "poll_interval"), 1e12, "watcher.poll_interval: must be <= 86400, got"),
    (("watcher", "terminal_poll_interval"), 1e300, "watcher.terminal_poll_interval: must be <="),
    (("watcher", "request_timeout"), 601, "watcher.request_timeout: must be <= 600"),
    (("watcher", "notify_timeout"), 1e9, "watcher.notify_timeout: must be <= 600"),
    (("watcher", "retry_max_delay"), 1e12, "watcher.retry_max_delay: must be <= 86400"),
    (("watcher", "retry_for"), 1e30, "watcher.retry_for: must be <= 2.592e+06"),
    (("watcher", "max_requests_per_minute"), 10**9, "watcher.max_requests_per_minute: must be <="),
    (("watcher", "max_requests_per_minute"), 10**6 + 1, "must be <= 1e+06"),
    (("watcher", "api_down_after"), 10**6, "watcher.api_down_after: must be <= 10000"),
    (("watcher", "unreadable_after"), 10**6, "watcher.unreadable_after: must be <= 10000"),
    (("watcher",), [], "watcher: must be a table"),
    (("fireworks",), "acme", "fireworks: must be a table"),
    (("fireworks", "account_id"), "", "fireworks.account_id: must be an id"),
    (("fireworks", "account_id"), "a/b", "fireworks.account_id: must be an id"),
    (("fireworks", "account_id"), 5, "fireworks.account_id: must be a string"),
    (("fireworks", "base_url"), "ftp://x", "fireworks.base_url: must be an http"),
    (("fireworks", "base_url"), "api.fireworks.ai", "fireworks.base_url: must be an http"),
    (("fireworks", "api_key_file"), 5, "fireworks.api_key_file: must be the path"),
    (("watch",), {"jobs": ["a"]}, "watch: must be an array of tables: write [[watch]]"),
    (("watch", 0), {}, "watch[0]: give jobs or discover = true"),
    (("watch", 0), {"jobs": []}, "watch[0]: give jobs or discover = true"),
    (("watch", 0, "kind"), "dpoo", "watch[0].kind: must be one of 'dpo', 'sft'"),
    (("watch", 0, "jobs"), "job-1", "watch[0].jobs: must be an array"),
    (("watch", 0, "jobs"), ["ok", ""], "watch[0].jobs[1]: must be a job id"),
    (("watch", 0, "jobs"), ["ok", "bad id"], "watch[0].jobs[1]: must be a job id"),
    (("watch", 0, "jobs"), ["accounts/acme/dpoJobs/"], "watch[0].jobs[0]: must be a job id"),
    (("watch", 0, "discover"), "yes", "watch[0].discover: must be true or false"),
    (("channel",), {"name": "x"}, "channel: must be an array of tables: write [[channel]]"),
    (("channel", 0), {"urls": ["json://h/x"]}, "channel[0].name: required"),
    (("channel", 0, "name"), " ", "channel[0].name: must not be empty"),
    (("channel", 0), {"name": "x"}, "channel[0].urls: required"),
    (("channel", 0, "urls"), [], "channel[0].urls: must not be empty"),
    (("channel", 0, "urls"), ["json://h/x", ""], "channel[0].urls[1]: must not be empty"),
    (("channel", 0, "urls"), ["json://h/x", 5], "channel[0].urls[1]: must be a string"),
    (("channel", 0, "to_states"), [], "channel[0].to_states: must not be empty"),
    (("channel", 0, "to_states"), "COMPLETED", "channel[0].to_states: must be an array"),
    (("channel", 0, "jobs"), ["prod-*", ""], "channel[0].jobs[1]: must not be empty"),
    (("channel", 0, "title"), "{}", "channel[0].title: positional {} is not allowed"),
    (("channel", 0, "title"), "{job_id.upper}", "channel[0].title: unknown field"),
    (("channel", 0, "body"), "{job_id", "channel[0].body: not a valid template"),
    (("channel", 0, "body"), "{job_id:d}", "channel[0].body: not a valid template"),
    (("channel", 0, "body"), "{job_id!x}", "channel[0].body: not a valid template"),
    (("channel", 0, "notify_initial"), "true", "channel[0].notify_initial: must be true or"),
]


class TestInvalid:
    """Every invalid value is a one-line ConfigError naming its key path."""

    @pytest.mark.parametrize(
        ("path", "value", "expected"),
        INVALID,
        ids=[f"{describe._render(path)}={value!r}" for path, value, _ in INVALID],
    )
    def test_invalid_value(self, path: tuple[str | int, ...], value: Any, expected: str) -> None:
        """The message names the key path and the problem."""
        assert expected in config_error(with_value(minimal(), path, value))

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            (("typo",), "w.toml: typo: unknown key (fireworks, watcher, watch, channel or person)"),
            (("fireworks", "acount_id"), "fireworks.acount_id: unknown key"),
            (("watcher", "pol_interval"), "watcher.pol_interval: unknown key"),
            (("watch", 0, "job"), "watch[0].job: unknown key"),
            (("channel", 0, "url"), "channel[0].url: unknown key"),
            (("channel", 0, "odd key\n"), "channel[0].'odd key\\n': unknown key"),
        ],
        ids=["top", "fireworks", "watcher", "watch", "channel", "odd-key"],
    )
    def test_unknown_key(self, path: tuple[str | int, ...], expected: str) -> None:
        """A key the schema does not know is an error at every level, not silently ignored."""
        assert expected in config_error(with_value(minimal(), path, 1))

    @pytest.mark.parametrize("key", ["watches", "channels", "source"])
    def test_field_names_are_not_toml_keys(self, key: str) -> None:
        """Settings' own field names cannot be written at the top level."""
        assert f"{key}: unknown key" in config_error(with_value(minimal(), (key,), []))

    def test_document_not_a_table(self) -> None:
        """A document that is not a mapping is a ConfigError too."""
        assert "must be a TOML document" in config_error([])  # type: ignore[arg-type]

    def test_duplicate_channel_names(self) -> None:
        """Channel names are unique; the error names the second one."""
        data = minimal()
        data["channel"].append(dict(data["channel"][0]))

        assert "channel[1].name: same name as channel[0]" in config_error(data)

    def test_missing_account(self) -> None:
        """Without account_id in the file or the environment the error says where to set it."""
        message = config_error(with_value(minimal(), ("fireworks",), {}))

        assert "fireworks.account_id: required (or set FIREWORKS_ACCOUNT_ID)" in message

    def test_missing_fireworks_table_without_env(self) -> None:
        """No [fireworks] at all and no env account: the account is still the error named."""
        data = minimal()
        del data["fireworks"]

        assert "fireworks.account_id: required" in config_error(data)

    def test_several_errors_on_one_line(self) -> None:
        """Several problems are joined on one line."""
        data = with_value(minimal(), ("watcher",), {"poll_interval": -1, "retry_for": -1})

        message = config_error(data)

        assert "watcher.poll_interval" in message
        assert "; watcher.retry_for" in message


class TestEnvironmentDefaults:
    """Environment variables give defaults; a value written in the file wins."""

    @pytest.mark.parametrize(
        ("env", "path", "file_value", "expected"),
        [
            ({"FIREWORKS_ACCOUNT_ID": "env-acct"}, ("fireworks", "account_id"), None, "env-acct"),
            ({"FIREWORKS_ACCOUNT_ID": "env-acct"}, ("fireworks", "account_id"), "acme", "acme"),
            ({"FIREWORKS_ACCOUNT_ID": ""}, ("fireworks", "account_id"), "acme", "acme"),
            (
                {"FIREWORKS_BASE_URL": "http://127.0.0.1:8080/"},
                ("fireworks", "base_url"),
                None,
                "http://127.0.0.1:8080",
            ),
            (
                {"FIREWORKS_BASE_URL": "http://127.0.0.1:8080"},
                ("fireworks", "base_url"),
                "http://127.0.0.1:9/v//",
                "http://127.0.0.1:9/v",
            ),
            ({}, ("fireworks", "base_url"), None, "https://api.fireworks.ai"),
            ({"STATE_DIRECTORY": "/s1:/s2"}, ("watcher", "state_path"), None, Path("/s1/state.db")),
            ({"STATE_DIRECTORY": "/s1"}, ("watcher", "state_path"), "/x.db", Path("/x.db")),
            ({}, ("watcher", "state_path"), None, Path("state.db")),
        ],
        ids=[
            "account-env",
            "account-file-wins",
            "account-empty-env",
            "base-url-env",
            "base-url-file-wins",
            "base-url-default",
            "state-directory-first-entry",
            "state-path-file-wins",
            "state-path-default",
        ],
    )
    def test_default(
        self,
        env: dict[str, str],
        path: tuple[str, str],
        file_value: str | None,
        expected: object,
    ) -> None:
        """The file value, else the environment, else the built-in default."""
        data = minimal()
        data["fireworks"].pop(path[1], None)
        if file_value is not None:
            data = with_value(data, path, file_value)
        if "account_id" not in data["fireworks"] and "FIREWORKS_ACCOUNT_ID" not in env:
            data["fireworks"]["account_id"] = "acme"

        settings = parse(data, {**ENV, **env})

        assert expected == getattr(getattr(settings, path[0]), path[1])

    def test_bad_env_default_names_the_variable(self) -> None:
        """An invalid value from the environment is blamed on the variable, without its value."""
        env = {**ENV, "FIREWORKS_BASE_URL": "ftp://proxy.internal"}

        message = config_error(minimal(), env)

        assert "fireworks.base_url: must be an http" in message
        assert "(from FIREWORKS_BASE_URL)" in message
        assert "proxy.internal" not in message

    def test_api_key_from_env(self) -> None:
        """FIREWORKS_API_KEY is the API key when no key file is configured (stripped)."""
        settings = parse(minimal(), {"FIREWORKS_API_KEY": " k1 \n"})

        assert "k1" == settings.require_api_key()

    @pytest.mark.parametrize("env", [{}, {"FIREWORKS_API_KEY": ""}, {"FIREWORKS_API_KEY": "  "}])
    def test_missing_api_key(self, env: dict[str, str]) -> None:
        """Without a key, parse succeeds and require_api_key says how to provide one."""
        settings = parse(minimal(), env, source="w.toml")

        with pytest.raises(ConfigError) as info:
            settings.require_api_key()

        assert "missing API key: set FIREWORKS_API_KEY or fireworks.api_key_file" in str(info.value)


class TestApiKeyFile:
    """`fireworks.api_key_file` names a file holding the key; the key itself is never in the file."""

    def test_file_wins_over_env(self, tmp_path: Path) -> None:
        """The key file is read, stripped, and preferred to FIREWORKS_API_KEY."""
        key_file = tmp_path / "key"
        key_file.write_text("  from-file\n")
        data = with_value(minimal(), ("fireworks", "api_key_file"), str(key_file))

        assert "from-file" == parse(data, {"FIREWORKS_API_KEY": "from-env"}).require_api_key()

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (None, "No such file or directory"),
            (b"", "is empty"),
            (b" \n", "is empty"),
            (b"\xff" + SECRET.encode(), "is not UTF-8 text"),
            (SECRET.encode() * 10_000, "too large"),
            ("directory", "cannot read"),
        ],
        ids=["missing", "empty", "blank", "not-utf8", "too-large", "directory"],
    )
    def test_unusable_file(
        self, tmp_path: Path, content: bytes | str | None, expected: str
    ) -> None:
        """An unusable key file is an error naming fireworks.api_key_file, never its content."""
        key_file = tmp_path / "key"
        if content == "directory":
            key_file.mkdir()
        elif isinstance(content, bytes):
            key_file.write_bytes(content)
        data = with_value(minimal(), ("fireworks", "api_key_file"), str(key_file))

        message = config_error(data)

        assert "fireworks.api_key_file:" in message
        assert expected in message
        assert SECRET not in message

    def test_api_key_in_file_is_refused(self) -> None:
        """Writing the key itself in the config is an error pointing at the right places."""
        message = config_error(with_value(minimal(), ("fireworks", "api_key"), SECRET))

        assert "fireworks.api_key:" in message
        assert "FIREWORKS_API_KEY" in message
        assert "api_key_file" in message
        assert SECRET not in message


class TestInterpolation:
    """`${VAR}` in string values is replaced from the environment before validation."""

    @pytest.mark.parametrize(
        ("written", "expected"),
        [
            ("slack://${TOKEN}/#ml", "slack://t0k3n/#ml"),
            ("json://${HOST}:${PORT}/x", "json://127.0.0.1:8080/x"),
            ("json://h/$${TOKEN}", "json://h/${TOKEN}"),
            ("json://h/$TOKEN/$", "json://h/$TOKEN/$"),
            ("json://h/${EMPTY}x", "json://h/x"),
        ],
        ids=["one", "two", "escaped", "bare-dollar", "empty-value"],
    )
    def test_substitution(self, written: str, expected: str) -> None:
        """Variables are replaced, `$${` is a literal `${`, and a bare `$` is left alone."""
        env = {**ENV, "TOKEN": "t0k3n", "HOST": "127.0.0.1", "PORT": "8080", "EMPTY": ""}
        data = with_value(minimal(), ("channel", 0, "urls"), [written])

        assert expected == parse(data, env).channels[0].urls[0].get_secret_value()

    def test_every_string_value(self) -> None:
        """Interpolation reaches nested tables and arrays, not only URLs."""
        env = {**ENV, "ACCT": "acme", "JOB": "job-9", "STATE": "FAILED"}
        data = with_value(minimal(), ("fireworks", "account_id"), "${ACCT}")
        data = with_value(data, ("watch", 0, "jobs"), ["accounts/${ACCT}/dpoJobs/${JOB}"])
        data = with_value(data, ("channel", 0, "to_states"), ["${STATE}"])

        settings = parse(data, env)

        assert ("acme", ("job-9",), frozenset({"FAILED"})) == (
            settings.fireworks.account_id,
            settings.watches[0].jobs,
            settings.channels[0].to_states,
        )

    def test_keys_are_not_interpolated(self) -> None:
        """A `${VAR}` in a key stays as written (and is then an unknown key)."""
        data = with_value(minimal(), ("watcher", "${KEY}"), 1)

        assert "unknown key" in config_error(data, {**ENV, "KEY": "poll_interval"})

    def test_unset_variable(self) -> None:
        """An unset variable names the key path and the variable."""
        data = with_value(
            minimal(), ("channel", 0, "urls"), ["json://h/x", "slack://${SLACK_TOKEN}"]
        )

        message = config_error(data)

        assert "w.toml: channel[0].urls[1]: environment variable SLACK_TOKEN is not set" == message

    @pytest.mark.parametrize(
        ("written", "expected"),
        [("x${TOKEN", "unterminated ${"), ("x${}", "variable name"), ("${A B}", "variable name")],
        ids=["unterminated", "empty", "bad-name"],
    )
    def test_malformed_reference(self, written: str, expected: str) -> None:
        """A malformed reference is an error, not a literal."""
        data = with_value(minimal(), ("channel", 0, "name"), written)

        message = config_error(data, {**ENV, "TOKEN": "x"})

        assert "channel[0].name:" in message
        assert expected in message


class TestJobs:
    """Watch jobs: ids or full resource names, normalised to ids and checked."""

    @pytest.mark.parametrize(
        ("kind", "written", "expected"),
        [
            ("dpo", "my-dpo-job", "my-dpo-job"),
            ("dpo", "accounts/acme/dpoJobs/other", "other"),
            ("sft", "accounts/acme/supervisedFineTuningJobs/s1", "s1"),
            ("batch-inference", "accounts/acme/batchInferenceJobs/b.1_x", "b.1_x"),
        ],
        ids=["id", "dpo-name", "sft-name", "batch-name"],
    )
    def test_normalised(self, kind: str, written: str, expected: str) -> None:
        """A full name becomes the id."""
        data = with_value(minimal(), ("watch", 0), {"kind": kind, "jobs": [written]})

        assert (JobRef(JobKind(kind), expected),) == parse(data, ENV).refs()

    @pytest.mark.parametrize(
        ("kind", "written", "expected"),
        [
            ("dpo", "accounts/other/dpoJobs/x", "names another account than fireworks.account_id"),
            ("dpo", "accounts/acme/supervisedFineTuningJobs/x", "another collection than dpoJobs"),
            ("sft", "accounts/acme/dpoJobs/x", "another collection than supervisedFineTuningJobs"),
            ("dpo", "accounts/acme/dpoJobs/x/y", "must be a job id"),
        ],
        ids=["other-account", "dpo-vs-sft", "sft-vs-dpo", "too-deep"],
    )
    def test_wrong_name(self, kind: str, written: str, expected: str) -> None:
        """A name for another account or another kind is an error naming watch[i].jobs[j]."""
        data = minimal()
        data["watch"].append({"kind": kind, "jobs": ["fine", written]})

        message = config_error(data)

        assert "watch[1].jobs[1]:" in message
        assert expected in message

    def test_refs_deduplicated_in_order(self) -> None:
        """Settings.refs lists every explicit job once, in config order."""
        data = with_value(
            minimal(),
            ("watch",),
            [
                {"jobs": ["b", "a", "accounts/acme/dpoJobs/b"]},
                {"kind": "sft", "jobs": ["a"]},
                {"jobs": ["c", "a"]},
            ],
        )

        expected = (
            JobRef(JobKind.DPO, "b"),
            JobRef(JobKind.DPO, "a"),
            JobRef(JobKind.SFT, "a"),
            JobRef(JobKind.DPO, "c"),
        )
        assert expected == parse(data, ENV).refs()


class TestToStates:
    """Channel `to_states` accept short and long names and catch typos."""

    def test_forms(self) -> None:
        """Short, long and lower-case names all become the short upper-case name."""
        written = ["COMPLETED", "JOB_STATE_FAILED", "job_state_cancelled", "running", "NOT_FOUND"]
        data = with_value(minimal(), ("channel", 0, "to_states"), written)

        expected = frozenset({"COMPLETED", "FAILED", "CANCELLED", "RUNNING", "NOT_FOUND"})
        assert expected == parse(data, ENV).channels[0].to_states

    @pytest.mark.parametrize(
        "written",
        ["COMPLETD", "JOB_STATE_DONE", "", 5],
        ids=["typo", "long-typo", "empty", "number"],
    )
    def test_typo(self, written: object) -> None:
        """An unknown state is an error naming channel[i].to_states[j]."""
        data = with_value(minimal(), ("channel", 0, "to_states"), ["COMPLETED", written])

        assert "channel[0].to_states[1]:" in config_error(data)


class TestTemplates:
    """Title and body templates may use only the message fields."""

    @pytest.mark.parametrize("key", ["title", "body"])
    def test_unknown_field(self, key: str) -> None:
        """A misspelt field is named, with the list of valid ones."""
        data = with_value(minimal(), ("channel", 0, key), "{display_name} {jobid}")

        message = config_error(data)

        assert f"channel[0].{key}: unknown field {{jobid}}" in message
        assert "job_id" in message

    def test_nested_field_in_spec(self) -> None:
        """Fields nested in a format spec are checked too."""
        data = with_value(minimal(), ("channel", 0, "title"), "{job_id:>{width}}")

        assert "unknown field {width}" in config_error(data)


class TestSecrets:
    """No error message and no repr ever shows a secret."""

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("channel", 0, "urls"), [f"json://user:{SECRET}@127.0.0.1/x", 5]),
            (("channel", 0, "urls"), [f"json://user:{SECRET}@127.0.0.1/x", ""]),
            (("channel", 0, "urls"), SECRET),
            (("channel", 0, "urls"), [[SECRET]]),
            (("watch", 0, "kind"), f"json://user:{SECRET}@h/x"),
            (("channel", 0, "name"), 5),
            (("watch", 0, "jobs"), [f"json://u:{SECRET}@h/x"]),
            (("fireworks", "api_key"), SECRET),
            (("fireworks", "api_key"), "${UNSET}"),
            (("fireworks", "base_url"), f"https://user:{SECRET}@host?x"),
            (("fireworks", "account_id"), "${SECRET}/x"),
            (("watch", 0, "kind"), "${SECRET}"),
            (("channel", 0, "to_states"), ["${SECRET}"]),
            (("channel", 0, "title"), "{${SECRET}}"),
            (("channel", 0, "body"), "{job_id:${SECRET}}"),
            (("fireworks", "api_key_file"), "/nonexistent/${SECRET}"),
            (("fireworks", "api_key_file"), f"json://u:{SECRET}@h/x"),
            (("channel", 0, "urls"), ["${SECRET}${UNSET}"]),
        ],
        ids=lambda value: str(value)[:30],
    )
    def test_not_in_error(self, path: tuple[str | int, ...], value: Any) -> None:
        """The secret (a URL password, the API key, an env value) is absent from the message."""
        data = with_value(minimal(), path, value)
        env = {"FIREWORKS_API_KEY": SECRET, "SECRET": SECRET}

        assert SECRET not in config_error(data, env)

    def test_account_from_env_not_in_error(self) -> None:
        """An invalid env default is reported without its value."""
        data = minimal()
        del data["fireworks"]["account_id"]

        message = config_error(data, {"FIREWORKS_ACCOUNT_ID": f"{SECRET}/x"})

        assert "fireworks.account_id:" in message
        assert SECRET not in message

    def test_not_in_repr(self, tmp_path: Path) -> None:
        """repr and str of valid settings mask URLs and the API key."""
        key_file = tmp_path / "key"
        key_file.write_text(f"{SECRET}-key")
        data = with_value(minimal(), ("fireworks", "api_key_file"), str(key_file))
        data = with_value(data, ("channel", 0, "urls"), [f"json://u:{SECRET}@127.0.0.1/x"])

        settings = parse(data, {})

        assert SECRET not in repr(settings)
        assert SECRET not in str(settings)


class TestLoad:
    """`load` finds, reads and decodes the file."""

    def test_valid_file(self, tmp_path: Path) -> None:
        """A valid file loads, and its path is the source."""
        path = tmp_path / "w.toml"
        path.write_text('[fireworks]\naccount_id = "acme"\n[[watch]]\njobs = ["j"]\n')

        settings = load(path, ENV)

        assert (str(path), (JobRef(JobKind.DPO, "j"),)) == (settings.source, settings.refs())

    def test_errors_start_with_the_path(self, tmp_path: Path) -> None:
        """Validation errors from a file name the file first."""
        path = tmp_path / "w.toml"
        path.write_text("[watcher]\npoll_interval = -1\n")

        with pytest.raises(ConfigError) as info:
            load(path, {"FIREWORKS_ACCOUNT_ID": "acme"})

        assert f"{path}: watcher.poll_interval: must be > 0, got -1" == str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file names the path."""
        path = tmp_path / "nope.toml"

        with pytest.raises(ConfigError, match="config file not found") as info:
            load(path, ENV)

        assert str(path) in str(info.value)

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b'[fireworks]\naccount_id = "acme"\npoll_interval 30\n', "line 3"),
            (b"[watcher\n", "line 1"),
            (b'[fireworks]\naccount_id = """x\n\n', "invalid TOML"),
            (b"\xff\xfe", "not UTF-8 text"),
        ],
        ids=["missing-equals", "unclosed-table", "unclosed-string", "not-utf8"],
    )
    def test_undecodable(self, tmp_path: Path, content: bytes, expected: str) -> None:
        """A TOML syntax error is one line with its position."""
        path = tmp_path / "w.toml"
        path.write_bytes(content)

        with pytest.raises(ConfigError) as info:
            load(path, ENV)

        message = str(info.value)
        assert message.startswith(f"{path}: ")
        assert expected in message
        assert "\n" not in message

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is not a config file."""
        with pytest.raises(ConfigError, match="cannot read config file"):
            load(tmp_path, ENV)


class TestDefaultPath:
    """The default path: $FIREWORKS_WATCHER_CONFIG, ./watcher.toml, /etc/fireworks-watcher/."""

    @pytest.fixture
    def candidates(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
        """Run in an empty directory, with the /etc candidate moved under tmp_path."""
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        etc = tmp_path / "etc" / "watcher.toml"
        monkeypatch.setattr(config, "DEFAULT_CONFIG_NAMES", (Path("watcher.toml"), etc))
        return work / "watcher.toml", etc

    def test_real_default_names(self) -> None:
        """The built-in search order is ./watcher.toml, then /etc/fireworks-watcher/watcher.toml."""
        expected = (Path("watcher.toml"), Path("/etc/fireworks-watcher/watcher.toml"))

        assert expected == config.DEFAULT_CONFIG_NAMES

    @pytest.mark.parametrize(
        ("present", "env", "expected"),
        [
            ((True, True), {"FIREWORKS_WATCHER_CONFIG": "/x/custom.toml"}, Path("/x/custom.toml")),
            ((True, True), {}, Path("watcher.toml")),
            ((False, True), {}, "etc"),
            ((True, False), {"FIREWORKS_WATCHER_CONFIG": ""}, Path("watcher.toml")),
            ((False, False), {}, None),
        ],
        ids=["env-first", "cwd-second", "etc-third", "empty-env-ignored", "none"],
    )
    def test_order(
        self,
        candidates: tuple[Path, Path],
        present: tuple[bool, bool],
        env: dict[str, str],
        expected: Path | str | None,
    ) -> None:
        """The first candidate that applies wins."""
        for path, exists in zip(candidates, present, strict=True):
            if exists:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")

        found = default_config_path(env)

        assert (candidates[1] if expected == "etc" else expected) == found

    def test_nothing_found(self, candidates: tuple[Path, Path]) -> None:
        """With no file anywhere, load names every path it tried."""
        with pytest.raises(ConfigError) as info:
            load(None, ENV)

        message = str(info.value)
        assert "watcher.toml" in message
        assert str(candidates[1]) in message
        assert "FIREWORKS_WATCHER_CONFIG" in message

    def test_env_path_missing(self, candidates: tuple[Path, Path], tmp_path: Path) -> None:
        """A missing file named by the variable is reported with the variable."""
        missing = tmp_path / "missing.toml"

        with pytest.raises(ConfigError) as info:
            load(None, {"FIREWORKS_WATCHER_CONFIG": str(missing)})

        assert f"{missing}: config file not found (from FIREWORKS_WATCHER_CONFIG)" == str(
            info.value
        )

    def test_loads_from_cwd(self, candidates: tuple[Path, Path]) -> None:
        """load(None) reads ./watcher.toml when it exists."""
        candidates[0].write_text('[fireworks]\naccount_id = "cwd"\n')

        assert "cwd" == load(None, ENV).fireworks.account_id


class TestExample:
    """config/watcher.example.toml stays valid and complete."""

    def test_parses(self) -> None:
        """The example loads with the variables it references set."""
        settings = load(EXAMPLE, {"FIREWORKS_API_KEY": "k", "SLACK_TOKEN": "T/B/x"})

        assert (JobRef(JobKind.DPO, "my-dpo-job"), JobRef(JobKind.DPO, "other")) == settings.refs()
        assert "slack://T/B/x/#ml-alerts" == settings.channels[0].urls[0].get_secret_value()

    @pytest.mark.parametrize(
        "model",
        [WatcherSettings, WatchSettings, ChannelSettings],
        ids=lambda model: model.__name__,
    )
    def test_mentions_every_key(self, model: type[WatcherSettings]) -> None:
        """Every settings key appears in the example."""
        text = EXAMPLE.read_text()

        missing = [name for name in model.model_fields if f"{name} =" not in text]

        assert [] == missing

    def test_mentions_fireworks_keys(self) -> None:
        """The [fireworks] keys, as TOML spells them, appear in the example."""
        text = EXAMPLE.read_text()

        assert [] == [k for k in ("account_id", "api_key_file", "base_url") if f"{k} =" not in text]

    def test_watcher_defaults_match(self) -> None:
        """The commented values in [watcher] are the real defaults."""
        section = EXAMPLE.read_text().split("[watcher]")[1].split("[[watch]]")[0]
        written = {
            match[1]: tomllib.loads(f"v = {match[2]}")["v"]
            for match in re.finditer(r"^# (\w+) = (\S+)", section, re.MULTILINE)
        }
        defaults = WatcherSettings().model_dump(mode="json")  # as TOML writes them: lists

        examples = ("state_path", "state_url", "web_token")  # examples: their defaults are none
        assert {k: defaults[k] for k in written if k not in examples} == {
            k: v for k, v in written.items() if k not in examples
        }
        assert set(defaults) == set(written)


# --- property: parse never raises anything but ConfigError -------------------------------------

_KEYS = [
    *schema._TOP_LEVEL_KEYS,
    *FireworksSettings.model_fields,
    "api_key_file",
    *WatcherSettings.model_fields,
    *WatchSettings.model_fields,
    *ChannelSettings.model_fields,
    "other",
]
_STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "dpo",
            "COMPLETED",
            "job_state_failed",
            "accounts/acme/dpoJobs/j",
            "127.0.0.1:0",
            "https://api.fireworks.ai",
            "{job_id}",
            "{",
            "${SECRET}",
            "${UNSET}",
            "$${X}",
            f"json://u:{SECRET}@h/x",
            "~",
            "\x00",
        ]
    ),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    _STRINGS,
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(_KEYS), children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=st.dictionaries(st.sampled_from(_KEYS), _DOCUMENTS, max_size=4),
    account_from_env=st.booleans(),
)
def test_parse_raises_only_config_error(document: dict[str, Any], account_from_env: bool) -> None:
    """Any nested document either parses or raises a one-line ConfigError without secrets."""
    env = {"SECRET": SECRET, "FIREWORKS_API_KEY": SECRET}
    if account_from_env:
        env["FIREWORKS_ACCOUNT_ID"] = "acme"
    message = error_of(document, env)

    assert "\n" not in message
    assert SECRET not in message


@settings(max_examples=200, deadline=None)
@given(
    path=st.sampled_from(
        [
            ("watcher",),
            ("watcher", "poll_interval"),
            ("fireworks", "account_id"),
            ("watch", 0),
            ("watch", 0, "jobs"),
            ("channel", 0),
            ("channel", 0, "urls"),
            ("channel", 0, "to_states"),
            ("channel", 0, "title"),
        ]
    ),
    value=_DOCUMENTS,
)
def test_parse_on_near_valid_documents(path: tuple[str | int, ...], value: Any) -> None:
    """Replacing one value of a valid config gives Settings or a one-line ConfigError."""
    message = error_of(with_value(minimal(), path, value), {"SECRET": SECRET, **ENV})

    assert "\n" not in message
    assert SECRET not in message


class TestDeploymentEnvironment:
    def test_health_listen_from_the_environment(self) -> None:
        """`FIREWORKS_WATCHER_HEALTH_LISTEN` is the default; the file's value wins."""
        env = {"FIREWORKS_WATCHER_HEALTH_LISTEN": "0.0.0.0:9464"}

        from_env = parse(minimal(), env)
        from_file = parse(with_value(minimal(), ("watcher",), {"health_listen": ""}), env)

        assert ("0.0.0.0", 9464) == from_env.watcher.health_address
        assert from_file.watcher.health_address is None

    def test_bad_health_listen_from_the_environment_names_the_variable(self) -> None:
        """An invalid value from the environment is blamed on the variable, not on the file."""
        with pytest.raises(ConfigError) as info:
            parse(minimal(), {"FIREWORKS_WATCHER_HEALTH_LISTEN": "nonsense"})

        assert "watcher.health_listen" in str(info.value)
        assert "FIREWORKS_WATCHER_HEALTH_LISTEN" in str(info.value)

    def test_api_key_from_systemd_credentials(self, tmp_path: Path) -> None:
        """`$CREDENTIALS_DIRECTORY/fireworks_api_key` beats the environment variable."""
        (tmp_path / "fireworks_api_key").write_text("from-credential\n")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "FIREWORKS_API_KEY": "from-env"}

        assert "from-credential" == parse(minimal(), env).require_api_key()

    def test_api_key_file_beats_credentials(self, tmp_path: Path) -> None:
        """A key file named in the config wins over systemd's credential."""
        (tmp_path / "fireworks_api_key").write_text("from-credential")
        (tmp_path / "mine").write_text("from-file")
        data = with_value(minimal(), ("fireworks", "api_key_file"), str(tmp_path / "mine"))

        settings = parse(data, {"CREDENTIALS_DIRECTORY": str(tmp_path)})

        assert "from-file" == settings.require_api_key()

    def test_credentials_directory_without_the_key_falls_back(self, tmp_path: Path) -> None:
        """A credentials directory that does not hold our key leaves the environment in charge."""
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "FIREWORKS_API_KEY": "from-env"}

        assert "from-env" == parse(minimal(), env).require_api_key()


class TestStateUrl:
    """`watcher.state_url`: PostgreSQL for several replicas; a secret, from the file or
    `$FIREWORKS_WATCHER_STATE_URL`."""

    BASE: ClassVar[dict[str, Any]] = {
        "fireworks": {"account_id": "acme"},
        "watch": [{"kind": "sft", "jobs": ["a"]}],
    }

    def test_absent_means_the_state_file(self) -> None:
        assert config.parse(self.BASE, {}).watcher.state_url is None

    def test_the_environment_gives_the_default(self) -> None:
        env = {"FIREWORKS_WATCHER_STATE_URL": "postgresql://w:pw@db:5432/watcher"}

        url = config.parse(self.BASE, env).watcher.state_url

        assert url is not None
        assert url.get_secret_value() == "postgresql://w:pw@db:5432/watcher"
        assert "pw" not in repr(url)

    def test_the_file_wins_over_the_environment(self) -> None:
        data = {**self.BASE, "watcher": {"state_url": "postgres://a@b/c"}}
        env = {"FIREWORKS_WATCHER_STATE_URL": "postgresql://x@y/z"}

        url = config.parse(data, env).watcher.state_url

        assert url is not None
        assert url.get_secret_value() == "postgres://a@b/c"

    @pytest.mark.parametrize(
        "value", ["mysql://u:hunter2@h/db", "hunter2", "", "sqlite:///hunter2.db", 5]
    )
    def test_anything_but_postgresql_is_refused_without_echoing_it(self, value: object) -> None:
        data = {**self.BASE, "watcher": {"state_url": value}}

        with pytest.raises(ConfigError) as caught:
            config.parse(data, {})

        message = str(caught.value)
        assert "watcher.state_url" in message
        assert "\n" not in message
        assert "hunter2" not in message


class TestWebToken:
    """`watcher.web_token`: the status page's token; a secret, from the file or
    `$FIREWORKS_WATCHER_WEB_TOKEN`, bounded where it enters."""

    BASE: ClassVar[dict[str, Any]] = {
        "fireworks": {"account_id": "acme"},
        "watch": [{"kind": "sft", "jobs": ["a"]}],
    }
    TOKEN = "page-token-hunter2-0123456789"

    def test_absent_means_none(self) -> None:
        assert config.parse(self.BASE, {}).watcher.web_token is None

    def test_the_environment_gives_the_default_and_the_file_wins(self) -> None:
        env = {"FIREWORKS_WATCHER_WEB_TOKEN": self.TOKEN}
        token = config.parse(self.BASE, env).watcher.web_token
        assert token is not None
        assert (self.TOKEN, False) == (token.get_secret_value(), self.TOKEN in repr(token))
        data = {**self.BASE, "watcher": {"web_token": "x" * 16}}
        token = config.parse(data, env).watcher.web_token
        assert token is not None
        assert "x" * 16 == token.get_secret_value()

    @pytest.mark.parametrize(
        "value",
        ["hunter2", "hunter2 with spaces in it", "hunter2\x00-0123456789abc", "h" * 257, "", 12],
    )
    def test_a_weak_or_odd_token_is_refused_without_echoing_it(self, value: object) -> None:
        data = {**self.BASE, "watcher": {"web_token": value}}

        with pytest.raises(ConfigError) as refused:
            config.parse(data, {})

        message = str(refused.value)
        assert "watcher.web_token" in message
        assert "\n" not in message
        assert "hunter2" not in message
