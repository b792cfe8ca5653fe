"""Crash safety: SIGKILL the daemon at random moments and count lost and repeated notifications.

Run it as a script::

    python -m tests.support.crash --kills 200 [--jobs 4] [--seed N] [--poll 0.2] [--slow S] [--json]

The simulator and an apprise `json://` receiver run in this process; the daemon is a real
subprocess (`python -m watcher run`). Step by step, 1-3 jobs change state and status message
(the message is a token unique to the change, and the channel's body template names it, so
every notification says which change it announces). After some steps the daemon is killed with
SIGKILL at a random moment and started again. At the end every change must have been announced
exactly once. The one allowed exception is a send that was in flight at a kill: its row was not
yet marked delivered, so the next incarnation sends it again. Such a repeat is told apart from a
true one with the daemon's own log: a true repeat follows a `notify.sent` for the same outbox row.

Conditions and reminders are in the mix: the jobs stall after 1 s without a change and wait
too long after 1 s in PENDING (so conditions open and resolve all the time), `stuck-failed`
stays FAILED and `stuck-running` stays RUNNING (reminded every 10 s). Those notices carry no
token, so they are counted against the outbox: every delivered notice row must have arrived,
and an incarnation may have sent a notice more often than it logged `notify.sent` for it
only by the one send in flight when it was killed.

With `--slow S` a slow channel is in the mix: a second receiver answers each post S seconds
after it arrived (past apprise's own 4 s read timeout at S > 4), for a channel that hears
only `slow-job`, a job that moves every 2*S steps (about as often as that lane can send).
Its sends are the ones most often in flight at a kill; it is counted like the first channel,
and the table adds its POSTs per message.

`tests/system/test_crash.py` runs it in CI with 20 kills; the exit code is 0 when nothing was lost,
repeated, or announced that never happened.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any

from fireworks_sim import Simulator
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import holds_within

KEY = "crash-api-key-0123456789"
ACCOUNT = "crash-acct"
STATES: tuple[str, ...] = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED", "PENDING")
#: The channel's body: every notification names its job, both states and its unique token.
BODY = "{job_id}|{old_state}|{new_state}|{status_message}"
#: Seconds to wait for anything the daemon should do promptly (start, deliver, settle).
DEADLINE = 30.0
#: Seconds after a kill within which a post cut short counts as torn by that kill.
TORN_WINDOW = 2.0
#: The longest random delay between a step's changes and the kill.
MAX_KILL_DELAY = 0.8
#: Jobs no step moves: one FAILED (reminded), one RUNNING (stalled, and reminded of that).
STUCK_FAILED, STUCK_RUNNING = "stuck-failed", "stuck-running"
#: Reminders of what stays failed or stalled, this often.
REPEAT_INTERVAL = 10
#: With `--slow`: the job only the slow channel hears (besides the first), and that channel.
SLOW_JOB, SLOW_CHANNEL, CHANNEL = "slow-job", "slow", "crash"


class KillMode(StrEnum):
    """When, within a step, the daemon is killed."""

    AT_ONCE = "at-once"  # right after the jobs changed, before any poll could see it
    RANDOM = "random"  # 0-0.8 s after the change: while polling, recording, sending or idle
    ON_RECEIPT = "on-receipt"  # the moment a post reaches the receiver: a send in flight
    AFTER_DELIVERY = "after-delivery"  # once the step was delivered, after a short delay


_KILL_WEIGHTS: dict[KillMode, float] = {
    KillMode.AT_ONCE: 0.15,
    KillMode.RANDOM: 0.5,
    KillMode.ON_RECEIPT: 0.2,
    KillMode.AFTER_DELIVERY: 0.15,
}


class RepeatKind(StrEnum):
    """Why a notification arrived more than once."""

    IN_FLIGHT = "in-flight"  # its sender was killed before marking it delivered: allowed
    TRUE = "true"  # it was sent again after it had been marked delivered: a bug


@dataclass(frozen=True, slots=True)
class Change:
    """One job moved to `state` with the unique status message `token`."""

    job: str
    state: str
    token: str


@dataclass(frozen=True, slots=True)
class Step:
    """The changes of one step and whether (and how) the daemon is killed during it."""

    index: int
    changes: tuple[Change, ...]
    kill: KillMode | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class CrashReport:
    """The figures of one run; `ok` when nothing was lost, truly repeated or unexpected.

    Attributes:
        transitions: job changes made (each a unique job and token).
        expected: notifications that must arrive (one channel URL: one per transition).
        received: posts the receiver got, repeats and torn posts included.
        repeated: true repeats (a bug); `in_flight_repeats` are allowed ones.
        unexpected: posts that announce no change that was made, or announce it wrongly.
        torn_posts: posts cut short because their sender was killed while writing them; the
            receiver could not parse them, so they count as not received (allowed).
        daemon_errors: error-level log lines of all incarnations (a hint, not a failure).
        problems: one line per lost, repeated or unexpected notification.
        notes: one line per in-flight repeat, and other observations.
    """

    seed: int
    jobs: int
    kills: int
    steps: int
    transitions: int
    expected: int
    received: int
    lost: int
    repeated: int
    in_flight_repeats: int
    unexpected: int
    torn_posts: int
    daemon_errors: int
    wall_time: float
    notices_delivered: int = 0
    notices_received: int = 0
    notices_lost: int = 0
    notices_repeated: int = 0
    notices_in_flight: int = 0
    notice_kinds: dict[str, int] = field(default_factory=dict)
    slow_delay: float = 0.0
    slow_expected: int = 0
    slow_received: int = 0
    slow_in_flight_repeats: int = 0
    slow_resent_copies: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no notification was lost, truly repeated, or unexpected."""
        return (
            self.lost == 0
            and self.repeated == 0
            and self.unexpected == 0
            and self.notices_lost == 0
            and self.notices_repeated == 0
        )

    def _slow_rows(self) -> list[tuple[str, str]]:
        if not self.slow_delay:
            return []
        expected = max(1, self.slow_expected)
        uncut = self.slow_received - self.slow_resent_copies
        return [
            ("slow channel: answer after", f"{self.slow_delay:g} s"),
            ("  notifications expected", str(self.slow_expected)),
            ("  posts received", str(self.slow_received)),
            ("  in-flight repeats", str(self.slow_in_flight_repeats)),
            ("  copies resent after a kill", str(self.slow_resent_copies)),
            ("  POSTs per message", f"{self.slow_received / expected:.2f}"),
            ("  ... not counting those", f"{uncut / expected:.2f}"),
        ]

    def table(self) -> str:
        """The figures as an aligned two-column table (totals over both channels)."""
        rows = [
            ("seed", str(self.seed)),
            ("jobs", str(self.jobs)),
            ("kills (SIGKILL)", str(self.kills)),
            ("steps", str(self.steps)),
            ("transitions made", str(self.transitions)),
            ("notifications expected", str(self.expected)),
            ("posts received", str(self.received)),
            ("lost", str(self.lost)),
            ("repeated (true)", str(self.repeated)),
            ("in-flight repeats", str(self.in_flight_repeats)),
            ("unexpected", str(self.unexpected)),
            ("torn posts (killed mid-send)", str(self.torn_posts)),
            ("daemon error lines", str(self.daemon_errors)),
            *(
                (f"  {kind} rows delivered", str(n))
                for kind, n in sorted(self.notice_kinds.items())
            ),
            ("notices delivered (rows)", str(self.notices_delivered)),
            ("notice posts received", str(self.notices_received)),
            ("notices lost", str(self.notices_lost)),
            ("notices repeated (true)", str(self.notices_repeated)),
            ("notice in-flight repeats", str(self.notices_in_flight)),
            *self._slow_rows(),
            ("wall time", f"{self.wall_time:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows)


# -- pure parts: the plan and the classification ---------------------------------------------


def plan_steps(
    rng: random.Random, *, kills: int, jobs: int, steps: int | None = None
) -> list[Step]:
    """About `kills * 1.5` steps (or `steps`, at least `kills`) of 1-3 job changes each,
    exactly `kills` of them with a kill."""
    if kills < 0 or jobs < 1:
        raise ValueError("kills must be >= 0 and jobs >= 1")
    count = max(1, kills, round(kills * 1.5) if steps is None else steps)
    killed = set(rng.sample(range(count), kills))
    modes, weights = list(_KILL_WEIGHTS), list(_KILL_WEIGHTS.values())
    planned: list[Step] = []
    for index in range(count):
        picked = sorted(rng.sample(range(jobs), rng.randint(1, min(3, jobs))))
        changes = tuple(
            Change(f"job-{j}", rng.choice(STATES), f"step-{index}-job-{j}") for j in picked
        )
        if index not in killed:
            planned.append(Step(index, changes))
            continue
        mode = rng.choices(modes, weights)[0]
        delay = {
            KillMode.AT_ONCE: 0.0,
            KillMode.RANDOM: rng.uniform(0.0, MAX_KILL_DELAY),
            KillMode.ON_RECEIPT: 0.0,
            KillMode.AFTER_DELIVERY: rng.uniform(0.0, 0.3),
        }[mode]
        planned.append(Step(index, changes, mode, delay))
    return planned


def sender_of(received_at: float, started_at: Sequence[float | None]) -> int:
    """The incarnation that sent a post received at `received_at` (-1 if none had started).

    It is the last one that had logged `watcher.started` by then: nothing is sent before
    that line, and a killed incarnation's last post is already in the receiver's socket
    when the next one is spawned, a good second before that one can log anything.
    """
    sender = -1
    for index, started in enumerate(started_at):
        if started is not None and started <= received_at:
            sender = index
    return sender


def classify_repeat(
    senders: Sequence[int], sent_logged_by: Collection[int], *, rows: int = 1
) -> RepeatKind:
    """Whether the copies of one notification are allowed in-flight repeats or a true repeat.

    Args:
        senders: the incarnation that sent each copy, in the order they arrived (two or more).
        sent_logged_by: the incarnations that logged `notify.sent` for its outbox row.
        rows: how many outbox rows announce it; more than one is a repeat by itself.

    Each further copy is allowed only when every incarnation from the previous copy's
    sender up to (not including) its own sender died without logging `notify.sent`, i.e.
    the row was never marked delivered before this copy went out.
    """
    if len(senders) < 2:
        raise ValueError("a repeat needs at least two copies")
    if rows != 1:
        return RepeatKind.TRUE
    for before, after in pairwise(senders):
        if after <= before:  # one incarnation sent it twice: no kill in between
            return RepeatKind.TRUE
        if any(incarnation in sent_logged_by for incarnation in range(before, after)):
            return RepeatKind.TRUE
    return RepeatKind.IN_FLIGHT


def is_torn(received_at: float, killed_at: float | None) -> bool:
    """Whether a post that is not JSON was cut short by the kill of its sender.

    The receiver stops reading a short body when the connection ends, i.e. when the sender
    dies: so a torn post arrives within moments after its sender's SIGKILL.
    """
    return killed_at is not None and killed_at - 0.1 <= received_at <= killed_at + TORN_WINDOW


def parse_body(body: str) -> tuple[str, str, str, str] | None:
    """(job, old state, new state, token) from a notification body made by `BODY`, or None."""
    parts = body.strip().split("|")
    if len(parts) != 4:
        return None
    job, old, new, token = parts
    return job, old, new, token


def tokens_in(messages: Iterable[Mapping[str, Any]]) -> set[str]:
    """The tokens that the posts among `messages` made by `BODY` announce."""
    return {
        parsed[3] for m in messages if (parsed := parse_body(str(m.get("message", "")))) is not None
    }


# -- the scenario's moves, shared with tests/support/chaos.py ------------------------------


def make_changes(
    sim: Simulator, changes: Iterable[Change], states: dict[str, str], expected: dict[str, str]
) -> set[str]:
    """Move each job in the simulator, noting in `expected` the body its notification must
    have (`states`: each job's state so far); the changes' tokens."""
    tokens: set[str] = set()
    for change in changes:
        old = states[change.job]
        states[change.job] = change.state
        expected[change.token] = f"{change.job}|{old}|{change.state}|{change.token}"
        sim.set_state(change.job, change.state, status_message=change.token)
        tokens.add(change.token)
    return tokens


def add_jobs(sim: Simulator, jobs: Iterable[str]) -> None:
    """`jobs` and the stuck ones, RUNNING, each with its own status message."""
    for job in [*jobs, STUCK_FAILED, STUCK_RUNNING]:
        sim.add_job(job, state="RUNNING", status_message=f"start-{job}")


def fail_stuck(sim: Simulator, expected: dict[str, str]) -> None:
    """`stuck-failed` goes FAILED once the daemons saw it RUNNING, so it is reminded of (a
    baseline failure never is)."""
    token = "stuck-failed-token"
    expected[token] = f"{STUCK_FAILED}|RUNNING|FAILED|{token}"
    sim.set_state(STUCK_FAILED, "FAILED", status_message=token)


# -- the command line, shared with tests/support/chaos.py ----------------------------------


def chosen_seed(seed: int | None) -> int:
    """`seed`, or a random one; printed to stderr either way, so a run can be repeated."""
    chosen = seed if seed is not None else random.randrange(2**32)
    print(f"seed {chosen}", file=sys.stderr, flush=True)
    return chosen


def to_stderr(line: str) -> None:
    """A run's progress line, printed as it comes."""
    print(line, file=sys.stderr, flush=True)


def print_findings(table: str, problems: Iterable[str], notes: Iterable[str]) -> None:
    """A report's table, then one line per problem and per note."""
    print(table)
    for line in problems:
        print(f"PROBLEM {line}")
    for line in notes:
        print(f"note    {line}")


# -- the daemon subprocess -------------------------------------------------------------------


class Incarnation:
    """One run of `python -m watcher run`, its JSON log lines collected by a thread.

    Args:
        index: its number in the run, from 0.
        config: the config file.
        env: the environment (key, account, base URL, JSON logs).
    """

    def __init__(self, index: int, config: Path, env: dict[str, str]) -> None:
        self.index = index
        self.spawned_at = time.monotonic()
        self.started_at: float | None = None
        self.killed_at: float | None = None
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        #: When each of `events` was read (time.monotonic()), in step with it.
        self.seen_at: list[float] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, name=f"daemon-{index}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            seen_at = time.monotonic()
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            with self._changed:
                self.lines.append(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    self.seen_at.append(seen_at)
                    if event.get("event") == "watcher.started" and self.started_at is None:
                        self.started_at = seen_at
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_event(self, event: str, count: int = 1, timeout: float = DEADLINE) -> bool:
        """Block until `count` events named `event` were logged; False on timeout or exit."""
        end = time.monotonic() + timeout
        with self._changed:
            while sum(1 for e in self.events if e.get("event") == event) < count:
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._changed.wait(min(left, 0.1))
            return True

    def sent_ids(self) -> set[int]:
        """The outbox row ids this incarnation logged `notify.sent` for."""
        return set(self.sent_at())

    def sent_at(self) -> dict[int, float]:
        """When (time.monotonic()) this incarnation first logged `notify.sent` for each row."""
        found: dict[int, float] = {}
        with self._changed:
            for event, seen_at in zip(self.events, self.seen_at, strict=True):
                delivery = event.get("delivery")
                if event.get("event") == "notify.sent" and isinstance(delivery, int):
                    found.setdefault(delivery, seen_at)
        return found

    def error_lines(self) -> list[str]:
        """Its error-level log lines, and any line that is not JSON (a traceback, say)."""
        with self._changed:
            errors = [json.dumps(e) for e in self.events if e.get("level") in ("error", "critical")]
            return errors + [line.rstrip() for line in self.lines if not line.startswith("{")]

    def kill(self) -> bool:
        """SIGKILL it; False when it had already exited on its own."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.killed_at = time.monotonic()
        self.proc.wait(timeout=10)
        return True

    def stop(self, *, signalled: bool = False) -> int:
        """SIGTERM it (unless `signalled`: a second SIGTERM ends a graceful stop at once)
        and return its exit code (SIGKILL after 15 s without exiting)."""
        if self.proc.poll() is None:
            if not signalled:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.wait()

    def close(self) -> None:
        """Kill it if it still runs, and collect the rest of its log."""
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class _TimedReceiver(JsonReceiver):
    """A JsonReceiver that stamps each post with `received_at` (time.monotonic())."""

    def _record(self, record: dict[str, Any]) -> int:
        return super()._record({**record, "received_at": time.monotonic()})


def _write_config(
    workdir: Path,
    *,
    jobs: int,
    poll: float,
    receiver: JsonReceiver,
    budget: int = 60000,
    extra: str = "",
    slow: JsonReceiver | None = None,
) -> Path:
    """The daemon's config: `jobs` jobs and the stuck ones, one channel to `receiver`;
    `extra` holds more `[watcher]` lines. With `slow`, `slow-job` too (watched with the
    default stall and pending limits: no conditions) and a channel for it alone on `slow`."""
    path = workdir / "watcher.toml"
    job_ids = [f"job-{j}" for j in range(jobs)] + [STUCK_FAILED, STUCK_RUNNING]
    slow_part = (
        f"""
[[watch]]
jobs = [{json.dumps(SLOW_JOB)}]

[[channel]]
name = {json.dumps(SLOW_CHANNEL)}
urls = [{json.dumps(slow.url())}]
jobs = [{json.dumps(SLOW_JOB)}]
body = {json.dumps(BODY)}
"""
        if slow is not None
        else ""
    )
    # json.dumps gives valid TOML basic strings and arrays for these plain values.
    path.write_text(
        f"""
[watcher]
poll_interval = {poll}
terminal_poll_interval = {poll}
max_requests_per_minute = {budget}
state_path = {json.dumps(str(workdir / "state.db"))}
health_listen = ""
{extra}

[[watch]]
jobs = {json.dumps(job_ids)}
stall_after = 1
pending_after = 1
flap_threshold = 0  # every move is counted on: none may be folded

[[channel]]
name = {json.dumps(CHANNEL)}
urls = [{json.dumps(receiver.url())}]
body = {json.dumps(BODY)}
repeat_interval = {REPEAT_INTERVAL}
max_per_second = 100  # the changes come fast: not held to the default pace of one a second
{slow_part}"""
    )
    return path


def _daemon_env(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    return env | {
        "FIREWORKS_API_KEY": KEY,
        "FIREWORKS_ACCOUNT_ID": ACCOUNT,
        "FIREWORKS_BASE_URL": base_url,
        "FIREWORKS_WATCHER_LOG_FORMAT": "json",
    }


#: Runs a SELECT on the state database and returns its rows (SQLite or PostgreSQL).
Query = Callable[[str], list[tuple[Any, ...]]]


def sqlite_query(db: Path) -> Query:
    """A `Query` on the SQLite state file `db` (no rows while the file does not exist)."""

    def query(sql: str) -> list[tuple[Any, ...]]:
        if not db.exists():
            return []
        conn = sqlite3.connect(db, timeout=10)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()

    return query


@dataclass(frozen=True, slots=True)
class _OutboxRow:
    id: int
    status: str
    attempts: int
    last_error: str


def _read_outbox(query: Query, channel: str = CHANNEL) -> dict[str, list[_OutboxRow]]:
    """A channel's outbox rows by the token their body names (rendered from the row's event,
    as the dispatcher renders it, for rows that keep no text of their own)."""
    rows: dict[str, list[_OutboxRow]] = defaultdict(list)
    found = query(
        "SELECT o.id, o.body, CAST(e.fields AS text), o.status, o.attempts, o.last_error"
        " FROM outbox AS o LEFT JOIN events AS e ON e.id = o.event_id"
        f" WHERE NOT coalesce(e.notice, false) AND o.channel = '{channel}' ORDER BY o.id"
    )
    for id_, stored, fields, status, attempts, last_error in found:
        body = stored or (BODY.format_map(json.loads(fields)) if fields else "")
        parsed = parse_body(body)
        if parsed is not None:
            rows[parsed[3]].append(_OutboxRow(id_, status, attempts, last_error))
    return rows


def _pending(query: Query) -> int:
    (count,) = query("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")[0]
    return int(count)


class _Run:
    """The state of one run: servers, the incarnations so far, and the changes made."""

    def __init__(self, workdir: Path, *, jobs: int, poll: float, slow: float = 0.0) -> None:
        self.workdir = workdir
        self.jobs = jobs
        self.poll = poll
        self.sim = Simulator(api_key=KEY, account_id=ACCOUNT)
        self.receiver = _TimedReceiver()
        #: The slow channel's receiver (with `slow`), and the step spacing of its job's moves.
        self.slow_receiver: _TimedReceiver | None = None
        self.slow_every = max(1, round(2 * slow))
        self.slow_changes = 0
        if slow > 0:
            self.slow_receiver = _TimedReceiver()
            self.slow_receiver.delay = slow
        self.served = ServedApp(self.sim)
        self.incarnations: list[Incarnation] = []
        self.kills = 0
        self.notes: list[str] = []
        # token -> the body its notification must have (the slow channel's: some of them)
        self.expected: dict[str, str] = {}
        self.slow_expected: set[str] = set()
        self.states = {f"job-{j}": "RUNNING" for j in range(jobs)}
        if self.slow_receiver is not None:
            self.states[SLOW_JOB] = "RUNNING"
        self.config = Path()
        self.env: dict[str, str] = {}

    @property
    def daemon(self) -> Incarnation:
        return self.incarnations[-1]

    def open(self) -> None:
        self.served.start()
        add_jobs(self.sim, self.states)
        self.config = _write_config(
            self.workdir,
            jobs=self.jobs,
            poll=self.poll,
            receiver=self.receiver,
            slow=self.slow_receiver,
        )
        self.env = _daemon_env(self.served.url)
        first = self.spawn()
        if not first.wait_event("job.baseline", len(self.states) + 2):
            raise RuntimeError(f"the daemon did not baseline its jobs:\n{_tail(first)}")
        fail_stuck(self.sim, self.expected)

    def close(self) -> None:
        for incarnation in self.incarnations:
            incarnation.close()
        self.receiver.close()
        if self.slow_receiver is not None:
            self.slow_receiver.close()
        self.served.stop()

    def spawn(self) -> Incarnation:
        incarnation = Incarnation(len(self.incarnations), self.config, self.env)
        self.incarnations.append(incarnation)
        if not incarnation.wait_event("watcher.started"):
            raise RuntimeError(
                f"incarnation {incarnation.index} did not start:\n{_tail(incarnation)}"
            )
        return incarnation

    def received_tokens(self, receiver: JsonReceiver | None = None) -> set[str]:
        return tokens_in((receiver or self.receiver).messages)

    def make(self, step: Step) -> set[str]:
        changes = list(step.changes)
        if self.slow_receiver is not None and step.index % self.slow_every == 0:
            # The next state in STATES: always a move, and the plan's random draws untouched.
            state = STATES[(STATES.index(self.states[SLOW_JOB]) + 1) % len(STATES)]
            changes.append(Change(SLOW_JOB, state, f"step-{step.index}-{SLOW_JOB}"))
            self.slow_expected.add(changes[-1].token)
            self.slow_changes += 1
        return make_changes(self.sim, changes, self.states, self.expected)

    def step(self, step: Step) -> None:
        posts = len(self.receiver.messages)
        tokens = self.make(step)
        if step.kill is KillMode.ON_RECEIPT:
            try:
                self.receiver.wait_for(posts + 1, timeout=DEADLINE)
            except AssertionError:
                self.notes.append(f"step {step.index}: no post arrived to kill on")
        elif step.kill is KillMode.AFTER_DELIVERY:
            self.wait_delivered(step, tokens)
        if step.kill is not None:
            if step.delay:
                time.sleep(step.delay)  # the random moment of the kill is the point
            self.kill_and_restart(step)
        self.wait_delivered(step, tokens)

    def wait_delivered(self, step: Step, tokens: set[str]) -> None:
        if not holds_within(lambda: tokens <= self.received_tokens(), DEADLINE):
            self.notes.append(f"step {step.index}: not delivered within {DEADLINE:g} s")

    def kill_and_restart(self, step: Step) -> None:
        if self.daemon.kill():
            self.kills += 1
        else:
            code = self.daemon.proc.returncode
            self.notes.append(
                f"step {step.index}: incarnation {self.daemon.index} exited by itself ({code})"
            )
        self.spawn()

    def settle(self) -> None:
        """Wait until everything arrived, the outbox is empty, and a few more cycles passed."""
        if not holds_within(lambda: set(self.expected) <= self.received_tokens(), DEADLINE):
            self.notes.append(f"final settle: not everything arrived within {DEADLINE:g} s")
        query = sqlite_query(self.workdir / "state.db")
        # The slow channel's lane sends one message per `delay` s: its backlog takes that long.
        slow = self.slow_receiver
        backlog = DEADLINE + (slow.delay * (_pending(query) + 1) if slow is not None else 0.0)
        if slow is not None and not holds_within(
            lambda: self.slow_expected <= self.received_tokens(slow), timeout=backlog
        ):
            self.notes.append(
                f"final settle: not everything reached the slow channel in {backlog:g} s"
            )
        if not holds_within(lambda: _pending(query) == 0, timeout=backlog):
            self.notes.append("final settle: outbox rows still pending")
        polled = self.sim.request_count
        # Three more poll cycles: a late duplicate would show up in them.
        if not holds_within(lambda: self.sim.request_count >= polled + 3 * self.jobs, DEADLINE):
            self.notes.append("final settle: the daemon stopped polling")
        code = self.daemon.stop()
        if code != 0:
            self.notes.append(f"final SIGTERM: exit code {code}")


def _tail(incarnation: Incarnation, lines: int = 20) -> str:
    incarnation.close()
    return "".join(incarnation.lines[-lines:])


@dataclass(slots=True)
class _Tally:
    """What one channel's receiver got, against what it should have."""

    received: int = 0
    lost: int = 0
    repeated: int = 0
    in_flight: int = 0
    #: Copies beyond the first of the in-flight repeats (a send cut by a kill, sent again).
    resent: int = 0
    unexpected: int = 0
    torn: int = 0
    notices: dict[str, Any] = field(default_factory=dict)


def _tally(
    run: _Run,
    *,
    channel: str,
    messages: list[dict[str, Any]],
    expected: Collection[str],
    problems: list[str],
    notes: list[str],
) -> _Tally:
    """Compare what one channel's receiver got with the tokens it should have got, and
    classify every repeat; its notices are counted against its outbox rows."""
    query = sqlite_query(run.workdir / "state.db")
    outbox = _read_outbox(query, channel)
    started_at = [i.started_at for i in run.incarnations]
    sent_logged: dict[int, set[int]] = defaultdict(set)
    for incarnation in run.incarnations:
        for delivery in incarnation.sent_ids():
            sent_logged[delivery].add(incarnation.index)

    found = _Tally(received=len(messages))
    copies: dict[str, list[int]] = defaultdict(list)
    notice_posts: list[tuple[int, str, str]] = []
    for record in messages:
        sender = sender_of(float(record["received_at"]), started_at)
        if "raw" in record:  # tests.support.servers files a body that is not JSON under "raw"
            killed_at = run.incarnations[sender].killed_at if sender >= 0 else None
            if is_torn(float(record["received_at"]), killed_at):
                found.torn += 1
                notes.append(f"torn post from incarnation {sender}: {record['raw']!r}")
            else:
                found.unexpected += 1
                problems.append(f"unexpected: a post that is not JSON: {record['raw']!r}")
            continue
        body = str(record.get("message", "")).strip()
        parsed = parse_body(body)
        if parsed is None:  # a condition or a reminder: counted against the outbox below
            notice_posts.append((sender, str(record.get("title", "")), body))
            continue
        token = parsed[3]
        if token not in expected:
            found.unexpected += 1
            problems.append(f"unexpected ({channel}): a post announcing no change made: {body!r}")
            continue
        if body != run.expected[token]:
            found.unexpected += 1
            problems.append(f"wrong text: {body!r}, expected {run.expected[token]!r}")
        copies[token].append(sender)

    lost = [token for token in expected if token not in copies]
    found.lost = len(lost)
    for token in lost:
        rows = outbox.get(token, [])
        where = ", ".join(
            f"row {r.id} {r.status} after {r.attempts} attempts {r.last_error!r}" for r in rows
        )
        problems.append(f"lost ({channel}): {run.expected[token]} ({where or 'no outbox row'})")

    for token, senders in copies.items():
        if len(senders) < 2:
            continue
        rows = outbox.get(token, [])
        logged = set().union(*(sent_logged[r.id] for r in rows))
        kind = classify_repeat(senders, logged, rows=len(rows))
        text = (
            f"{run.expected[token]} arrived {len(senders)}x at {channel} from incarnations"
            f" {senders}; outbox rows {[r.id for r in rows]}; notify.sent logged by"
            f" {sorted(logged)}"
        )
        if kind is RepeatKind.TRUE:
            found.repeated += 1
            problems.append(f"repeated: {text}")
        else:
            found.in_flight += 1
            found.resent += len(senders) - 1
            notes.append(f"in-flight repeat: {text}")

    incarnations = run.incarnations

    def allowance(sender: int) -> int:
        # One lane, one send at a time: a killed incarnation had at most one in flight.
        return 1 if 0 <= sender < len(incarnations) and incarnations[sender].killed_at else 0

    found.notices = _count_notices(
        _read_notices(query, channel),
        notice_posts,
        sent_logged,
        problems,
        notes,
        allowance=allowance,
    )
    found.unexpected += found.notices.pop("unexpected")
    return found


def _count(run: _Run, *, seed: int, steps: int, transitions: int, started: float) -> CrashReport:
    """Compare what arrived with what was expected, channel by channel, and add it up."""
    problems: list[str] = []
    notes = list(run.notes)
    main = _tally(
        run,
        channel=CHANNEL,
        messages=run.receiver.messages,
        expected=run.expected,
        problems=problems,
        notes=notes,
    )
    counts = ("delivered", "received", "lost", "repeated", "in_flight")
    slow = _Tally(notices={**dict.fromkeys(counts, 0), "kinds": {}})
    rejected = len(run.receiver.rejected)
    if run.slow_receiver is not None:
        slow = _tally(
            run,
            channel=SLOW_CHANNEL,
            messages=run.slow_receiver.messages,
            expected=run.slow_expected,
            problems=problems,
            notes=notes,
        )
        rejected += len(run.slow_receiver.rejected)
    kinds = Counter(main.notices.pop("kinds")) + Counter(slow.notices.pop("kinds"))
    errors = [line for i in run.incarnations for line in i.error_lines()]
    notes += [f"daemon error: {line}" for line in errors[:20]]

    def both(name: str) -> int:
        return int(main.notices[name]) + int(slow.notices[name])

    return CrashReport(
        seed=seed,
        jobs=run.jobs,
        kills=run.kills,
        steps=steps,
        transitions=transitions,
        expected=len(run.expected) + len(run.slow_expected),
        received=main.received + slow.received,
        lost=main.lost + slow.lost,
        repeated=main.repeated + slow.repeated,
        in_flight_repeats=main.in_flight + slow.in_flight,
        unexpected=main.unexpected + slow.unexpected + rejected,
        torn_posts=main.torn + slow.torn,
        daemon_errors=len(errors),
        wall_time=time.monotonic() - started,
        notices_delivered=both("delivered"),
        notices_received=both("received"),
        notices_lost=both("lost"),
        notices_repeated=both("repeated"),
        notices_in_flight=both("in_flight"),
        notice_kinds=dict(kinds),
        slow_delay=run.slow_receiver.delay if run.slow_receiver is not None else 0.0,
        slow_expected=len(run.slow_expected),
        slow_received=slow.received,
        slow_in_flight_repeats=slow.in_flight,
        slow_resent_copies=slow.resent,
        problems=problems,
        notes=notes,
    )


@dataclass(frozen=True, slots=True)
class _NoticeRow:
    id: int
    kind: str
    status: str
    content: tuple[str, str]


def _read_notices(query: Query, channel: str = CHANNEL) -> list[_NoticeRow]:
    """A channel's outbox rows of notices (conditions, reminders), with their text."""
    found = query(
        "SELECT o.id, e.kind, o.status, CAST(e.fields AS text) FROM outbox AS o"
        f" JOIN events AS e ON e.id = o.event_id WHERE e.notice AND o.channel = '{channel}'"
        " ORDER BY o.id"
    )
    rows = []
    for id_, kind, status, fields in found:
        decoded = json.loads(fields)
        content = (str(decoded.get("title", "")), str(decoded.get("body", "")).strip())
        rows.append(_NoticeRow(id_, kind, status, content))
    return rows


def _count_notices(
    rows: list[_NoticeRow],
    posts: list[tuple[int, str, str]],
    sent_logged: dict[int, set[int]],
    problems: list[str],
    notes: list[str],
    *,
    allowance: Callable[[int], int],
) -> dict[str, Any]:
    """Notices carry no token: count each text's copies against its outbox `rows`.

    Lost: a text with fewer copies than delivered rows. A true repeat: an incarnation that
    sent a text more often than it logged `notify.sent` for rows of it, beyond the sends it
    may have had in flight when it was disrupted (`allowance(incarnation)`: for a killed
    one, the one send of its lane).
    """
    by_content: dict[tuple[str, str], list[_NoticeRow]] = defaultdict(list)
    for row in rows:
        by_content[row.content].append(row)
    unexpected = 0
    copies: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for sender, title, body in posts:
        if (title, body) not in by_content:
            unexpected += 1
            problems.append(f"unexpected: a post matching no outbox row: {title!r} {body!r}")
            continue
        copies[(title, body)][sender] += 1
    lost = repeated = in_flight = 0
    extras: Counter[int] = Counter()
    for content, of_content in by_content.items():
        delivered = [r for r in of_content if r.status == "delivered"]
        got = sum(copies[content].values())
        if got < len(delivered):
            lost += len(delivered) - got
            problems.append(f"lost: notice {content[0]!r}: {len(delivered)} rows, {got} posts")
        for row in of_content:
            if row.status == "dead":
                problems.append(f"dead notice row {row.id}: {content[0]!r}")
            if len(sent_logged.get(row.id, ())) > 1:
                repeated += 1
                problems.append(
                    f"repeated: notice row {row.id} logged sent by {sent_logged[row.id]}"
                )
        for sender, n in copies[content].items():
            logged = sum(1 for r in of_content if sender in sent_logged.get(r.id, ()))
            extras[sender] += max(0, n - logged)
    for sender, extra in sorted(extras.items()):
        allowed = allowance(sender)
        in_flight += min(extra, allowed)
        if extra > allowed:
            repeated += extra - allowed
            problems.append(f"repeated: incarnation {sender} sent {extra} notice copies unlogged")
        elif extra:
            notes.append(f"in-flight notice repeat from disrupted incarnation {sender}")
    kinds = Counter(r.kind for r in rows if r.status == "delivered")
    return {
        "delivered": sum(kinds.values()),
        "received": len(posts),
        "lost": lost,
        "repeated": repeated,
        "in_flight": in_flight,
        "unexpected": unexpected,
        "kinds": dict(kinds),
    }


def run(
    kills: int,
    *,
    jobs: int = 4,
    seed: int = 0,
    poll: float = 0.2,
    workdir: Path,
    progress: Callable[[str], None] | None = None,
    slow: float = 0.0,
) -> CrashReport:
    """Run the crash scenario with exactly `kills` SIGKILLs and count what arrived.

    Args:
        kills: how many times the daemon is killed with SIGKILL (and restarted).
        jobs: how many jobs the daemon watches.
        seed: seeds the plan (which jobs change, when kills land), for reproducibility.
        poll: the daemon's poll interval in seconds.
        workdir: an empty directory for the config and the state database.
        progress: called with a short line now and then (e.g. to print it).
        slow: with more than 0, a slow channel too: its receiver answers after `slow` s.

    Raises:
        RuntimeError: the daemon would not start, or the state database already exists.
    """
    if (workdir / "state.db").exists():
        raise RuntimeError(f"{workdir / 'state.db'} exists; give an empty directory")
    began = time.monotonic()
    plan = plan_steps(random.Random(seed), kills=kills, jobs=jobs)
    report = progress if progress is not None else (lambda _: None)
    state = _Run(workdir, jobs=jobs, poll=poll, slow=slow)
    # Whatever happens, no daemon outlives the run and the servers are closed.
    with closing(state):
        state.open()
        for step in plan:
            state.step(step)
            if (step.index + 1) % 25 == 0:
                report(f"step {step.index + 1}/{len(plan)}, {state.kills} kills")
        state.settle()
        # Every incarnation has exited: collect the rest of each log before counting.
        for incarnation in state.incarnations:
            incarnation.close()
        # The steps' changes, `slow-job`'s, and `stuck-failed` going FAILED.
        transitions = sum(len(step.changes) for step in plan) + state.slow_changes + 1
        return _count(state, seed=seed, steps=len(plan), transitions=transitions, started=began)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run the scenario, print the figures; exit 0 when nothing went wrong."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.crash", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver (default 20)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs watched (default 4)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--poll", type=float, default=0.2, help="poll interval in s (default 0.2)")
    parser.add_argument(
        "--slow",
        type=float,
        default=0.0,
        metavar="S",
        help="add a slow channel whose receiver answers after S s (default: none)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    seed = chosen_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="watcher-crash-") as tmp:
        report = run(
            args.kills,
            jobs=args.jobs,
            seed=seed,
            poll=args.poll,
            workdir=Path(tmp),
            progress=to_stderr,
            slow=args.slow,
        )
    if args.json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        print_findings(report.table(), report.problems, report.notes)
        kinds = Counter(line.split(":", 1)[0] for line in report.problems)
        print("OK" if report.ok else f"FAILED ({', '.join(f'{n} {k}' for k, n in kinds.items())})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
