"""A channel's policy is built from its keys by name (`app.channel_policy`): a new policy
field is one key of the same name, and none is left at its default by mistake."""

from __future__ import annotations

from dataclasses import fields

from watcher import app, config
from watcher.core.delivery import ChannelPolicy

SET = {
    "name": "team",
    "urls": ["json://127.0.0.1:9/hook"],
    "repeat_interval": "2h",
    "group_wait": 30,
    "group_by": "account",
    "max_per_minute": 12,
    "max_per_second": 0.5,
    "digest": "09:00",
    "digest_timezone": "Europe/Paris",
    "digest_empty": True,
    "quiet_hours": "22:00-07:00",
    "progress_every": 25,
    "notify_initial": True,
    "notify_new": True,
}


def test_every_policy_field_is_set_from_the_channels_keys() -> None:
    settings = config.parse(
        {"fireworks": {"account_id": "acme"}, "channel": [SET]}, {"FIREWORKS_API_KEY": "k"}
    )
    policy = app.channel_policy(settings.channels[0])
    default = ChannelPolicy()

    assert [
        f.name for f in fields(ChannelPolicy) if getattr(policy, f.name) == getattr(default, f.name)
    ] == []
    assert (7200.0, True, "09:00", ("22:00", "07:00")) == (
        policy.repeat_interval,
        policy.group_by_account,
        policy.digest,
        policy.quiet_hours,
    )


def test_an_unset_digest_is_none() -> None:
    settings = config.parse(
        {"fireworks": {"account_id": "acme"}, "channel": [{"name": "t", "urls": SET["urls"]}]},
        {"FIREWORKS_API_KEY": "k"},
    )
    assert ChannelPolicy() == app.channel_policy(settings.channels[0])
