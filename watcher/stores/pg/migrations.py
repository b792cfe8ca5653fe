"""The PostgreSQL schema, versioned: each entry of `MIGRATIONS` brings it from version i to
i + 1, in one transaction (PostgreSQL's DDL is transactional) under an advisory lock, so
replicas that start together migrate once.

Version 1 is the whole of SQLite's schema 5, in PostgreSQL's types: times are `timestamptz`,
JSON cells `jsonb`, flags `boolean`. A claim that is free has `claimed_until` NULL.
"""

from __future__ import annotations

from typing import Final

#: The key of `pg_advisory_xact_lock` that migrations hold ("fwwatch" in ASCII).
MIGRATION_LOCK: Final = 0x66_77_77_61_74_63_68

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE jobs (
        job_key     text PRIMARY KEY,
        snapshot    jsonb NOT NULL,
        updated_at  timestamptz NOT NULL,
        state_since timestamptz,
        moved_at    timestamptz,
        polled_at   timestamptz,
        entered     boolean NOT NULL DEFAULT false
    );
    CREATE TABLE events (
        id          bigserial PRIMARY KEY,
        job_key     text NOT NULL,
        old_state   text NOT NULL,
        new_state   text NOT NULL,
        observed_at timestamptz NOT NULL,
        notice      boolean NOT NULL DEFAULT false,
        fields      jsonb NOT NULL,
        kind        text NOT NULL DEFAULT ''
    );
    CREATE INDEX events_job ON events (job_key, id);
    CREATE INDEX events_time ON events (observed_at);
    CREATE TABLE silences (
        id         bigserial PRIMARY KEY,
        job        text NOT NULL,
        kind       text NOT NULL DEFAULT '',
        state      text NOT NULL DEFAULT '',
        channel    text NOT NULL DEFAULT '',
        comment    text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        ends_at    timestamptz NOT NULL,
        expired_at timestamptz,
        ended      boolean NOT NULL DEFAULT false
    );
    CREATE TABLE outbox (
        id              bigserial PRIMARY KEY,
        job_key         text NOT NULL,
        channel         text NOT NULL,
        url_key         text NOT NULL,
        url_display     text NOT NULL,
        title           text NOT NULL,
        body            text NOT NULL,
        old_state       text NOT NULL,
        new_state       text NOT NULL,
        created_at      timestamptz NOT NULL,
        status          text NOT NULL,
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        last_error      text NOT NULL DEFAULT '',
        delivered_at    timestamptz,
        claim           text NOT NULL DEFAULT '',
        claimed_until   timestamptz,
        event_id        bigint REFERENCES events (id),
        silence_id      bigint
    );
    CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'pending';
    CREATE INDEX outbox_target_job ON outbox (url_key, job_key, status, id);
    CREATE INDEX outbox_event ON outbox (event_id);
    CREATE INDEX outbox_settled ON outbox (status, created_at);
    CREATE TABLE conditions (
        subject   text NOT NULL,
        name      text NOT NULL,
        opened_at timestamptz NOT NULL,
        detail    text NOT NULL,
        PRIMARY KEY (subject, name)
    );
    CREATE TABLE reminders (
        channel text NOT NULL,
        subject text NOT NULL,
        next_at timestamptz NOT NULL,
        PRIMARY KEY (channel, subject)
    );
    CREATE TABLE leases (
        name       text PRIMARY KEY,
        holder     text NOT NULL,
        epoch      bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        renewed_at timestamptz NOT NULL
    );
    CREATE TABLE replicas (
        holder     text PRIMARY KEY,
        role       text NOT NULL,
        started_at timestamptz NOT NULL,
        seen_at    timestamptz NOT NULL
    );
    """,
    # 2: a silence may match the job's owner (a glob on who created it); "" for everyone.
    """
    ALTER TABLE silences ADD COLUMN owner text NOT NULL DEFAULT '';
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
