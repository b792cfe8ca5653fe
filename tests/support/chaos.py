"""Chaos: several replicas on one PostgreSQL database, killed, frozen and cut off at random.

Run it as a script (as root: it restarts the PostgreSQL cluster once)::

    python -m tests.support.chaos --replicas 3 --kills 100 [--seed N] [--poll 1.0] [--json]
        [--backend postgresql|sqlite]

`FIREWORKS_WATCHER_TEST_PG_DSN` names the database (`.ci/postgres` prints one); each run
works in a fresh schema of it, dropped at the end. `--backend sqlite --replicas 1` runs one
daemon on a SQLite file (the same lease code path: it always leads; there is no standby to
kill and no server to cut off).

The simulator and an apprise `json://` receiver run in this process, as in `tests/support/crash.py`,
whose pieces this reuses; the daemons are real subprocesses (`python -m watcher run`). Step
by step, 1-3 jobs change state with a unique token, then one event strikes, at a random
moment of the step:

- `kill-leader`: SIGKILL the lease holder (found in the `leases` table: its pid is in its
  name); it is started again at once, as a new replica.
- `kill-standby`: SIGKILL a replica that does not lead (a dispatcher; the sender of the
  post that just arrived when there is one), started again at once.
- `stop-leader`: SIGSTOP the lease holder for 1.5-2.5 lease times, then SIGCONT: it must
  find itself deposed and write nothing more.
- `cut`: `pg_terminate_backend` of every connection of the daemons (those of the watcher
  role carrying this run's `application_name`: the harness's own and other sessions on
  the same server are spared).
- `pg-restart`: exactly once per run, `pg_ctlcluster VERSION CLUSTER restart`.

Every post is attributed to the replica that sent it: the receiver looks up which daemon
owns the connection's socket (`/proc`), so each repeat is classified per replica with the
daemons' own `notify.sent` lines. A repeat is allowed ("in flight") only when the replica
that sent the earlier copy was killed, stopped or cut off between that copy and the next,
and no replica had logged the row as sent before the next copy arrived; a replica sending
a row twice is allowed only across a cut (its settle failed, its claim expired).

Fail-over is timed from the SIGKILL or SIGSTOP of a leader until another replica holds the
lease and has polled (the earliest `jobs.polled_at` after the event). API requests are
counted as the simulator serves them, against `max_requests_per_minute`.

`tests/system/test_chaos.py` runs about 20 events in CI; the exit code is 0 when nothing was lost,
nothing was truly repeated, nothing unexpected arrived and every fail-over took at most 2
poll intervals.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import anyio.to_thread

from fireworks_sim import Simulator
from tests.support.crash import (
    ACCOUNT,
    DEADLINE,
    KEY,
    TORN_WINDOW,
    Incarnation,
    KillMode,
    RepeatKind,
    Step,
    _count_notices,
    _daemon_env,
    _pending,
    _read_notices,
    _read_outbox,
    _TimedReceiver,
    _write_config,
    add_jobs,
    chosen_seed,
    fail_stuck,
    is_torn,
    make_changes,
    parse_body,
    plan_steps,
    print_findings,
    sqlite_query,
    to_stderr,
    tokens_in,
)
from tests.support.pg_turns import server_restart
from tests.support.servers import AsgiApp, Scope, ServedApp, _ReceiverHandler
from tests.support.waiting import holds_within
from watcher.core.lease import lease_ttl

PG_DSN_ENV = "FIREWORKS_WATCHER_TEST_PG_DSN"
#: A send's timeout in the daemons' config: a claim lasts this plus the dispatcher's 30 s.
NOTIFY_TIMEOUT = 5
#: The final settle waits this long for everything to arrive: a claim of a killed sender
#: expires after NOTIFY_TIMEOUT + 30 s, and only then is its row sent again.
SETTLE_DEADLINE = 75.0
#: The request budget is this many times what one poller needs.
BUDGET_HEADROOM = 1.5
#: How long a stopped leader stays stopped, in lease times.
STOP_FOR = (1.5, 2.5)
#: Fail-over must take at most this many poll intervals.
MAX_FAILOVER_INTERVALS = 2.0


class EventKind(StrEnum):
    """What strikes the replicas in a step."""

    KILL_LEADER = "kill-leader"
    KILL_STANDBY = "kill-standby"
    STOP_LEADER = "stop-leader"
    CUT = "cut"
    PG_RESTART = "pg-restart"


#: The kinds drawn at random (the PostgreSQL restart is placed once, apart).
_WEIGHTS: dict[EventKind, float] = {
    EventKind.KILL_LEADER: 0.3,
    EventKind.KILL_STANDBY: 0.25,
    EventKind.STOP_LEADER: 0.25,
    EventKind.CUT: 0.2,
}


@dataclass(frozen=True, slots=True)
class ChaosStep:
    """A step of job changes (`step.kill` is when the event strikes) and its event.

    `pick` chooses among standbys in [0, 1); `hold` is how long a stop lasts, in lease times.
    """

    step: Step
    kind: EventKind
    pick: float = 0.0
    hold: float = 0.0


@dataclass(frozen=True, slots=True)
class Disruption:
    """An event as it struck: which incarnations, from `start` to `end` (time.monotonic())."""

    kind: EventKind
    incarnations: frozenset[int]
    start: float
    end: float


def event_kinds(backend: str, replicas: int) -> list[EventKind]:
    """The kinds a run can have: standbys need two replicas, cuts and restarts a server."""
    kinds = [EventKind.KILL_LEADER, EventKind.STOP_LEADER]
    if replicas > 1:
        kinds.append(EventKind.KILL_STANDBY)
    if backend == "postgresql":
        kinds += [EventKind.CUT, EventKind.PG_RESTART]
    return kinds


def plan_chaos(
    rng: random.Random, *, events: int, jobs: int, kinds: Sequence[EventKind]
) -> list[ChaosStep]:
    """`events` steps, each with changes and one event; every kind at least once when there
    are enough events, a PostgreSQL restart (if among `kinds`) exactly once."""
    if events < 1:
        raise ValueError("events must be >= 1")
    steps = plan_steps(rng, kills=events, jobs=jobs, steps=events)
    drawn = [k for k in kinds if k is not EventKind.PG_RESTART]
    weights = [_WEIGHTS[k] for k in drawn]
    once = [EventKind.PG_RESTART] if EventKind.PG_RESTART in kinds else []
    chosen = (once + drawn)[:events]
    chosen += rng.choices(drawn, weights, k=events - len(chosen))
    rng.shuffle(chosen)
    return [
        ChaosStep(step, kind, pick=rng.random(), hold=rng.uniform(*STOP_FOR))
        for step, kind in zip(steps, chosen, strict=True)
    ]


def classify_copies(
    copies: Sequence[tuple[int, float]],
    logged: Mapping[int, float],
    disrupted: Callable[[int, float, float, bool], bool],
    *,
    rows: int = 1,
) -> RepeatKind:
    """Whether the copies of one notification are allowed in-flight repeats or a true repeat.

    Args:
        copies: (incarnation, received_at) of each copy, in the order they arrived (two or
            more); the incarnation is -1 when the sender could not be told.
        logged: when each incarnation that logged `notify.sent` for its row logged it.
        disrupted: whether `(incarnation, start, end, same)` was killed, stopped or cut off
            between `start` and `end`; `same` asks only about cuts (a replica sending again
            what it sent itself: its settle failed and its claim expired).
        rows: how many outbox rows announce it; more than one is a repeat by itself.
    """
    if len(copies) < 2:
        raise ValueError("a repeat needs at least two copies")
    if rows != 1 or len(logged) > 1:
        return RepeatKind.TRUE
    for (before, sent), (after, again) in pairwise(copies):
        if any(at < again for at in logged.values()):
            return RepeatKind.TRUE  # it was settled before this copy arrived
        if not disrupted(before, sent, again, before == after and before >= 0):
            return RepeatKind.TRUE
    return RepeatKind.IN_FLIGHT


def holder_pid(holder: str) -> int | None:
    """The pid in a lease holder's name (`{hostname}-{pid}-{4 hex}`), or None."""
    parts = holder.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def socket_owner(local_port: int, remote_port: int, pids: Iterable[int]) -> int | None:
    """Which of `pids` owns the loopback TCP socket from `local_port` to `remote_port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            ports = int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)
            if ports == (local_port, remote_port) and inode != "0":
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    return None


def peak_per_minute(times: Sequence[float]) -> float:
    """The most requests in any 60 s window (a run shorter than that: its rate per minute)."""
    if len(times) < 2:
        return float(len(times))
    ordered = sorted(times)
    span = ordered[-1] - ordered[0]
    if span < 60.0:
        return len(ordered) / max(span, 1.0) * 60.0
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= 60.0:
            start += 1
        best = max(best, end - start + 1)
    return float(best)


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChaosReport:
    """The figures of one run; `ok` when nothing was lost, truly repeated or unexpected and
    every fail-over took at most 2 poll intervals.

    `expected` counts the transitions' notifications and the delivered notice rows
    (conditions, reminders); `lost`, `true_repeats` and `in_flight_repeats` count both.
    """

    seed: int
    backend: str
    replicas: int
    poll: float
    events: dict[str, int]
    transitions: int
    expected: int
    received: int
    lost: int
    true_repeats: int
    in_flight_repeats: int
    failovers: list[float]
    requests_per_minute: float
    budget: int
    wall_time: float
    unexpected: int = 0
    torn_posts: int = 0
    unattributed_posts: int = 0
    stray_requests: int = 0
    daemon_errors: int = 0
    self_exits: int = 0
    pg_recovery: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(self.events.values())

    @property
    def failover_p50(self) -> float | None:
        return statistics.median(self.failovers) if self.failovers else None

    @property
    def failover_max(self) -> float | None:
        return max(self.failovers) if self.failovers else None

    @property
    def ok(self) -> bool:
        worst = self.failover_max
        return (
            not self.problems
            and self.lost == 0
            and self.true_repeats == 0
            and self.unexpected == 0
            and self.self_exits == 0
            and self.stray_requests == 0
            and (worst is None or worst <= MAX_FAILOVER_INTERVALS * self.poll)
        )

    def _seconds(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2f} s ({value / self.poll:.2f} intervals)"

    def table(self) -> str:
        """The figures as an aligned two-column table."""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.events.items()))
        rows = [
            ("kills", f"{self.kills} ({kinds})"),
            ("transitions", str(self.transitions)),
            ("expected", str(self.expected)),
            ("received", str(self.received)),
            ("lost", str(self.lost)),
            ("true repeats", str(self.true_repeats)),
            ("in-flight repeats", str(self.in_flight_repeats)),
            ("fail-over p50", self._seconds(self.failover_p50)),
            ("fail-over max", self._seconds(self.failover_max)),
            ("requests/min vs budget", f"{self.requests_per_minute:.0f} / {self.budget}"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "kills": self.kills,
            "failover_p50": self.failover_p50,
            "failover_max": self.failover_max,
            "ok": self.ok,
        }


# -- the state database, as the harness reads it ---------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseRow:
    holder: str
    epoch: int
    live: bool


def _aware(value: object) -> datetime | None:
    """A stored time (PostgreSQL: datetime; SQLite: ISO text) as an aware datetime."""
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str) and value:
        found = datetime.fromisoformat(value)
    else:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


class StateDb(Protocol):
    """What the harness reads of the daemons' database, and how it cuts them off."""

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def cut(self) -> int: ...

    def close(self) -> None: ...


def read_lease(db: StateDb) -> LeaseRow | None:
    """The poller lease as it stands (`live` while it has not expired)."""
    found = db.query("SELECT holder, epoch, expires_at FROM leases WHERE name = 'poller'")
    if not found:
        return None
    holder, epoch, expires_at = found[0]
    ends = _aware(expires_at)
    return LeaseRow(str(holder), int(epoch), ends is not None and ends > datetime.now(UTC))


def first_poll_after(db: StateDb, moment: datetime) -> datetime | None:
    """The earliest `jobs.polled_at` after `moment` (each cycle stamps the jobs it polled)."""
    stamps = [_aware(row[0]) for row in db.query("SELECT polled_at FROM jobs")]
    after = [s for s in stamps if s is not None and s > moment]
    return min(after) if after else None


class SqliteDb:
    """The SQLite state file (one replica; nothing to cut)."""

    def __init__(self, path: Path) -> None:
        self._query = sqlite_query(path)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._query(sql)

    def cut(self) -> int:
        raise RuntimeError("a SQLite file has no connections to cut")

    def close(self) -> None:
        pass


class PgDb:
    """A fresh schema on the PostgreSQL server; the harness's own connection reconnects
    after a cut or a restart (it is never cut itself: `pg_backend_pid()`)."""

    def __init__(self, dsn: str, schema: str, application: str) -> None:
        import psycopg  # only the PostgreSQL backend needs it

        self._psycopg = psycopg
        self.dsn, self.schema, self.application = dsn, schema, application
        self._conn: Any = None
        with self._connect(search=False) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')

    def daemon_url(self) -> str:
        """The URL the daemons get: the schema and this run's application name added."""
        options = quote(f"-csearch_path={self.schema}", safe="")
        sep = "&" if urlsplit(self.dsn).query else "?"
        return f"{self.dsn}{sep}options={options}&application_name={self.application}"

    def _connect(self, *, search: bool = True) -> Any:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": 5,
            "application_name": f"{self.application}-harness",
        }
        if search:
            kwargs["options"] = f"-c search_path={self.schema}"
        return self._psycopg.connect(self.dsn, **kwargs)

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        end = time.monotonic() + DEADLINE
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                cursor = self._conn.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description else []
            except self._psycopg.OperationalError:
                # Cut off with the daemons (a restart), or the server is coming back.
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._run(sql)

    def cut(self) -> int:
        found = self._run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename ="
            " current_user AND pid <> pg_backend_pid() AND application_name = %s",
            (self.application,),
        )
        return sum(1 for (done,) in found if done)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self._connect(search=False) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def pg_cluster(dsn: str) -> tuple[str, str]:
    """The (version, cluster) of the local cluster serving `dsn`'s port (`pg_lsclusters`)."""
    port = str(urlsplit(dsn).port or 5432)
    found = subprocess.run(
        ["pg_lsclusters", "-h"], check=True, capture_output=True, text=True
    ).stdout
    for line in found.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == port:
            return parts[0], parts[1]
    raise RuntimeError(f"no local PostgreSQL cluster listens on port {port}")


# -- the servers -----------------------------------------------------------------------------

_peer = threading.local()


class _PeerHandler(_ReceiverHandler):
    def do_POST(self) -> None:
        _peer.port = self.client_address[1]
        super().do_POST()


class ChaosReceiver(_TimedReceiver):
    """A timed receiver that also names each post's sender: `sender`, the index of the
    incarnation that owns the posting socket (-1 when none could be found)."""

    def __init__(self, owner: Callable[[int, int], int]) -> None:
        super().__init__()
        self._owner = owner
        self._server.RequestHandlerClass = _PeerHandler

    def _record(self, record: dict[str, Any]) -> int:
        port = getattr(_peer, "port", None)
        sender = self._owner(port, self.port) if port is not None else -1
        return super()._record({**record, "sender": sender})


class CountingApp:
    """The simulator, with the time and sender (`owner(client port)`: an incarnation, -1 if
    none could be told) of every API request it serves (not `/_sim/` ones)."""

    def __init__(self, app: AsgiApp, owner: Callable[[int], int]) -> None:
        self._app = app
        self._owner = owner
        self._lock = threading.Lock()
        self._requests: list[tuple[float, int]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and not str(scope.get("path", "")).startswith("/_sim/"):
            at = time.monotonic()
            client = scope.get("client")
            # /proc is read in a worker thread: the server's event loop must not block.
            port = int(client[1]) if client else -1
            sender = await anyio.to_thread.run_sync(self._owner, port) if port >= 0 else -1
            with self._lock:
                self._requests.append((at, sender))
        await self._app(scope, receive, send)

    @property
    def requests(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._requests)

    @property
    def times(self) -> list[float]:
        return [at for at, _ in self.requests]


#: The log lines that end a term of leadership.
STEP_DOWNS = frozenset({"lease.lost", "lease.expired", "lease.released"})
#: A request received this long after its sender logged the end of its term is still its
#: term's (the term's scope is cancelled first, the line logged at the next lease check).
STRAY_GRACE = 0.5


def terms(incarnation: Incarnation) -> list[tuple[float, float]]:
    """When `incarnation` led, by its log (`lease.acquired` to a step-down, or its kill)."""
    found: list[tuple[float, float]] = []
    start: float | None = None
    for event, at in zip(list(incarnation.events), incarnation.seen_at, strict=False):
        name = event.get("event")
        if name == "lease.acquired" and start is None:
            start = at
        elif name in STEP_DOWNS and start is not None:
            found.append((start, at))
            start = None
    if start is not None:
        found.append((start, incarnation.killed_at or math.inf))
    return found


# -- a run -----------------------------------------------------------------------------------


class _Chaos:
    """The state of one run: servers, database, replicas, and what happened."""

    def __init__(
        self,
        workdir: Path,
        *,
        replicas: int,
        jobs: int,
        poll: float,
        backend: str,
        dsn: str,
        progress: Callable[[str], None],
    ) -> None:
        self.workdir, self.replicas, self.jobs, self.poll = workdir, replicas, jobs, poll
        self.backend, self.dsn, self.progress = backend, dsn, progress
        self.ttl = lease_ttl(poll)
        self.sim = Simulator(api_key=KEY, account_id=ACCOUNT)
        self.incarnations: list[Incarnation] = []
        self.api = CountingApp(self.sim, self._api_owner)
        self.served = ServedApp(self.api)
        self.receiver = ChaosReceiver(self._owner)
        self._clients: dict[int, Incarnation] = {}
        self.slots: list[Incarnation] = []
        self.stopped: set[int] = set()
        self.disruptions: list[Disruption] = []
        self.counts: Counter[str] = Counter()
        self.failovers: list[float] = []
        self.failover_kinds: list[str] = []
        self.recoveries: list[float] = []
        self.pg_recovery: list[float] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.exited: set[int] = set()
        self.expected: dict[str, str] = {}
        self.states = {f"job-{j}": "RUNNING" for j in range(jobs)}
        need = (jobs + 2) * 60.0 / poll
        self.budget = math.ceil(need * BUDGET_HEADROOM)
        self.db: StateDb | None = None
        self.config = Path()
        self.env: dict[str, str] = {}

    # -- setting up and tearing down

    def open(self) -> None:
        self.served.start()
        add_jobs(self.sim, self.states)
        self.config = _write_config(
            self.workdir,
            jobs=self.jobs,
            poll=self.poll,
            receiver=self.receiver,
            budget=self.budget,
            extra=f"notify_timeout = {NOTIFY_TIMEOUT}",
        )
        self.env = _daemon_env(self.served.url)
        if self.backend == "postgresql":
            tag = secrets.token_hex(4)
            pg = PgDb(self.dsn, f"chaos_{tag}", f"fwchaos-{tag}")
            self.db = pg
            self.env["FIREWORKS_WATCHER_STATE_URL"] = pg.daemon_url()
        else:
            self.db = SqliteDb(self.workdir / "state.db")
        self.slots = [self._spawn() for _ in range(self.replicas)]
        self._wait_started()
        baselines = self.jobs + 2
        if not holds_within(lambda: self._logged("job.baseline") >= baselines, DEADLINE):
            raise RuntimeError(f"the replicas did not baseline their jobs:\n{self._tails()}")
        fail_stuck(self.sim, self.expected)

    def close(self) -> None:
        for index in list(self.stopped):
            self._signal(self.incarnations[index], signal.SIGCONT)
        for incarnation in self.incarnations:
            incarnation.close()
        self.receiver.close()
        self.served.stop()
        if self.db is not None:
            self.db.close()

    @property
    def database(self) -> StateDb:
        assert self.db is not None
        return self.db

    def _spawn(self) -> Incarnation:
        incarnation = Incarnation(len(self.incarnations), self.config, self.env)
        self.incarnations.append(incarnation)
        return incarnation

    def _wait_started(self) -> None:
        for incarnation in self.slots:
            if not incarnation.wait_event("watcher.started"):
                raise RuntimeError(
                    f"incarnation {incarnation.index} did not start:\n{self._tails()}"
                )

    def _logged(self, event: str) -> int:
        return sum(1 for i in self.incarnations for e in list(i.events) if e.get("event") == event)

    def _tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"-- incarnation {i.index} (pid {i.proc.pid}):\n" + "".join(i.lines[-lines:])
            for i in self.incarnations
        )

    def _owner(self, port: int, server_port: int) -> int:
        live = [i for i in list(self.incarnations) if i.proc.returncode is None]
        pid = socket_owner(port, server_port, [i.proc.pid for i in live])
        found = [i.index for i in live if i.proc.pid == pid]
        return found[-1] if found else -1

    def _api_owner(self, port: int) -> int:
        # httpx keeps its connections: look each one up once (while its owner lives).
        known = self._clients.get(port)
        if known is not None and known.proc.returncode is None:
            return known.index
        server = urlsplit(self.served.url).port or 0
        owner = self._owner(port, server)
        if owner >= 0:
            self._clients[port] = self.incarnations[owner]
        return owner

    @staticmethod
    def _signal(incarnation: Incarnation, signum: signal.Signals) -> None:
        if incarnation.proc.poll() is None:
            incarnation.proc.send_signal(signum)

    # -- who leads

    def _leader(self) -> tuple[Incarnation, LeaseRow] | None:
        lease = read_lease(self.database)
        if lease is None or not lease.live:
            return None
        pid = holder_pid(lease.holder)
        for incarnation in self.slots:
            alive = incarnation.proc.poll() is None and incarnation.index not in self.stopped
            if incarnation.proc.pid == pid and alive:
                return incarnation, lease
        return None

    def wait_leader(self, index: int) -> tuple[Incarnation, LeaseRow] | None:
        found: list[tuple[Incarnation, LeaseRow]] = []

        def led() -> bool:
            leader = self._leader()
            if leader is not None:
                found.append(leader)
            return leader is not None

        if not holds_within(led, DEADLINE):
            self.problems.append(f"event {index}: no replica held the lease for {DEADLINE:g} s")
            return None
        return found[-1]

    def _failover(
        self,
        old: str,
        wall: datetime,
        began: float,
        *,
        same: bool = False,
        tick: Callable[[], None] = lambda: None,
    ) -> float | None:
        """Seconds from `wall` until a live holder other than `old` (or `old` itself, if
        `same`) holds the lease and a poll after `wall` was recorded; None on timeout."""
        while time.monotonic() < began + DEADLINE:
            tick()
            lease = read_lease(self.database)
            if lease is not None and lease.live and (same or lease.holder != old):
                polled = first_poll_after(self.database, wall)
                if polled is not None:
                    return (polled - wall).total_seconds()
            time.sleep(0.02)
        return None

    # -- steps and events

    def make(self, step: Step) -> set[str]:
        return make_changes(self.sim, step.changes, self.states, self.expected)

    def received_tokens(self) -> set[str]:
        return tokens_in(self.receiver.messages)

    def recorded_tokens(self) -> set[str]:
        return set(_read_outbox(self.database.query))

    def step(self, chaos: ChaosStep, index: int) -> None:
        self._check_exits(index)
        posts = len(self.receiver.messages)
        tokens = self.make(chaos.step)
        step_deadline = 5 * self.poll + 3
        sender = -1
        mode = chaos.step.kill
        if mode is KillMode.ON_RECEIPT:
            try:
                sender = int(self.receiver.wait_for(posts + 1, timeout=step_deadline)[-1]["sender"])
            except AssertionError:
                self.notes.append(f"event {index}: no post arrived to strike on")
        elif mode is KillMode.AFTER_DELIVERY:
            holds_within(lambda: tokens <= self.received_tokens(), timeout=step_deadline)
        if chaos.step.delay:
            time.sleep(chaos.step.delay * self.poll)  # the random moment is the point
        self.strike(chaos, index, sender)
        if not holds_within(lambda: tokens <= self.recorded_tokens(), timeout=DEADLINE):
            self.problems.append(f"event {index}: the step's changes were not recorded")
        self._wait_started()

    def _check_exits(self, index: int) -> None:
        for slot, incarnation in enumerate(self.slots):
            code = incarnation.proc.poll()
            if code is not None and incarnation.killed_at is None:
                self.exited.add(incarnation.index)
                self.problems.append(
                    f"event {index}: incarnation {incarnation.index} exited by itself"
                    f" ({code}):\n" + "".join(incarnation.lines[-20:])
                )
                self.slots[slot] = self._spawn()
        self._wait_started()

    def _replace(self, incarnation: Incarnation) -> None:
        self.slots[self.slots.index(incarnation)] = self._spawn()

    def strike(self, chaos: ChaosStep, index: int, sender: int) -> None:
        kind = chaos.kind
        now = time.monotonic()
        if kind is EventKind.CUT:
            cut = self.database.cut()
            self._disrupted(kind, self._live(), now, now)
            self.notes.append(f"event {index}: cut {cut} connections")
        elif kind is EventKind.PG_RESTART:
            self._restart_pg(index)
        elif kind is EventKind.KILL_STANDBY:
            leader = self.wait_leader(index)
            standbys = [i for i in self.slots if leader is None or i is not leader[0]]
            by_sender = [i for i in standbys if i.index == sender]
            target = by_sender[0] if by_sender else standbys[int(chaos.pick * len(standbys))]
            target.kill()
            self._disrupted(kind, {target.index}, now, now)
            self._replace(target)
        else:
            self._strike_leader(chaos, index)
        self.counts[str(kind)] += 1

    def _strike_leader(self, chaos: ChaosStep, index: int) -> None:
        leader = self.wait_leader(index)
        if leader is None:
            return
        target, lease = leader
        wall, began = datetime.now(UTC), time.monotonic()
        if chaos.kind is EventKind.KILL_LEADER:
            target.kill()
            self._disrupted(chaos.kind, {target.index}, began, began)
            self._replace(target)
            took = self._failover(lease.holder, wall, began)
        else:
            self._signal(target, signal.SIGSTOP)
            self.stopped.add(target.index)
            until = began + chaos.hold * self.ttl
            woken: list[float] = []

            def wake() -> None:
                if not woken and time.monotonic() >= until:
                    self._signal(target, signal.SIGCONT)
                    self.stopped.discard(target.index)
                    woken.append(time.monotonic())

            took = self._failover(lease.holder, wall, began, same=self.replicas == 1, tick=wake)
            if not woken:
                time.sleep(max(0.0, until - time.monotonic()))
                wake()
            self._disrupted(chaos.kind, {target.index}, began, woken[0])
        if self.replicas == 1:  # nobody to take over: the same daemon, restarted or woken
            self.recoveries.append(took if took is not None else math.inf)
            return
        if took is None:
            self.problems.append(
                f"event {index} ({chaos.kind}): no fail-over from {lease.holder}"
                f" within {DEADLINE:g} s"
            )
            took = DEADLINE
        self.failovers.append(took)
        self.failover_kinds.append(str(chaos.kind))
        if took > MAX_FAILOVER_INTERVALS * self.poll:
            self.problems.append(
                f"event {index} ({chaos.kind} of incarnation {target.index},"
                f" epoch {lease.epoch}): fail-over took {took:.2f} s"
            )

    def _restart_pg(self, index: int) -> None:
        version, cluster = pg_cluster(self.dsn)
        wall = datetime.now(UTC)
        with server_restart():  # under pytest, the other worker's tests wait for it
            began = time.monotonic()
            subprocess.run(
                ["pg_ctlcluster", version, cluster, "restart"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            ended = time.monotonic()
        self._disrupted(EventKind.PG_RESTART, self._live(), began, ended)
        took = self._failover("", wall, began, same=True)
        self.notes.append(
            f"event {index}: PostgreSQL {version}/{cluster} restarted in {ended - began:.2f} s;"
            f" polling again after {took if took is not None else math.inf:.2f} s"
        )
        if took is not None:
            self.pg_recovery.append(took)

    def _live(self) -> set[int]:
        return {i.index for i in self.slots if i.proc.poll() is None}

    def _disrupted(self, kind: EventKind, which: Iterable[int], start: float, end: float) -> None:
        self.disruptions.append(Disruption(kind, frozenset(which), start, end))

    def settle(self) -> None:
        """Wait until everything arrived and no row is pending, a few more cycles, then stop
        every replica with SIGTERM."""
        began = time.monotonic()
        if not holds_within(
            lambda: set(self.expected) <= self.received_tokens(), timeout=SETTLE_DEADLINE
        ):
            self.notes.append(f"final settle: not everything arrived in {SETTLE_DEADLINE:g} s")
        self.notes.append(
            f"final settle: everything arrived after {time.monotonic() - began:.1f} s"
        )
        if not holds_within(lambda: _pending(self.database.query) == 0, timeout=SETTLE_DEADLINE):
            self.notes.append("final settle: outbox rows still pending")
        polled = len(self.api.times)
        # Three more polls (a cycle costs at least one request): a late duplicate would show
        # up after them.
        if not holds_within(
            lambda: len(self.api.times) >= polled + 3, timeout=max(DEADLINE, 10 * self.poll)
        ):
            self.problems.append("final settle: nobody polls any more")
        for incarnation in self.slots:  # all at once: each stop waits for its sends
            self._signal(incarnation, signal.SIGTERM)
        for incarnation in self.slots:
            code = incarnation.stop(signalled=True)
            if code != 0:
                self.notes.append(f"final SIGTERM: incarnation {incarnation.index} exit {code}")
        for incarnation in self.incarnations:
            incarnation.close()

    # -- counting

    def disrupted(self, incarnation: int, start: float, end: float, same: bool) -> bool:
        """Whether `incarnation` (-1: any) was struck between `start` (less a margin: the
        copy may be stamped after its sender was killed) and `end`."""
        for d in self.disruptions:
            if same and d.kind not in (EventKind.CUT, EventKind.PG_RESTART):
                continue
            if incarnation >= 0 and incarnation not in d.incarnations:
                continue
            if d.end >= start - TORN_WINDOW and d.start <= end:
                return True
        return False

    def allowance(self, incarnation: int) -> int:
        """How many sends `incarnation` may have had in flight when it was struck."""
        return sum(1 for d in self.disruptions if incarnation in d.incarnations or incarnation < 0)

    def count(self, *, seed: int, transitions: int, began: float) -> ChaosReport:
        query = self.database.query
        outbox = _read_outbox(query)
        sent_at: dict[int, dict[int, float]] = defaultdict(dict)
        for incarnation in self.incarnations:
            for delivery, at in incarnation.sent_at().items():
                sent_at[delivery][incarnation.index] = at
        problems, notes = list(self.problems), list(self.notes)
        copies: dict[str, list[tuple[int, float]]] = defaultdict(list)
        notice_posts: list[tuple[int, str, str]] = []
        unexpected = torn = unattributed = 0
        messages = self.receiver.messages
        for record in messages:
            sender, at = int(record["sender"]), float(record["received_at"])
            if "raw" in record:
                if any(is_torn(at, i.killed_at) for i in self.incarnations):
                    torn += 1
                    notes.append(f"torn post: {record['raw']!r}")
                else:
                    unexpected += 1
                    problems.append(f"unexpected: a post that is not JSON: {record['raw']!r}")
                continue
            if sender < 0:
                unattributed += 1
            body = str(record.get("message", "")).strip()
            parsed = parse_body(body)
            if parsed is None:
                notice_posts.append((sender, str(record.get("title", "")), body))
                continue
            token = parsed[3]
            if token not in self.expected:
                unexpected += 1
                problems.append(f"unexpected: a post announcing no change made: {body!r}")
                continue
            if body != self.expected[token]:
                unexpected += 1
                problems.append(f"wrong text: {body!r}, expected {self.expected[token]!r}")
            copies[token].append((sender, at))

        lost = [token for token in self.expected if token not in copies]
        for token in lost:
            rows = outbox.get(token, [])
            where = ", ".join(f"row {r.id} {r.status} after {r.attempts} attempts" for r in rows)
            problems.append(f"lost: {self.expected[token]} ({where or 'no outbox row'})")
        true = in_flight = 0
        for token, got in copies.items():
            if len(got) < 2:
                continue
            rows = outbox.get(token, [])
            logged: dict[int, float] = {}
            for row in rows:
                logged.update(sent_at.get(row.id, {}))
            failed = self._failed_sends({r.id for r in rows})

            def disrupted(
                sender: int, start: float, end: float, same: bool, failed: Any = failed
            ) -> bool:
                # Struck, or its send failed (a timeout) after the post had gone out.
                late = any(start <= at <= end + 1 for at in failed.get(sender, ()))
                return late or self.disrupted(sender, start, end, same)

            kind = classify_copies(got, logged, disrupted, rows=len(rows))
            text = (
                f"{self.expected[token]} arrived {len(got)}x from incarnations"
                f" {[s for s, _ in got]}; outbox rows {[r.id for r in rows]};"
                f" notify.sent logged by {sorted(logged)}"
            )
            if kind is RepeatKind.TRUE:
                true += 1
                problems.append(f"repeated: {text}\n{self._struck_near(got)}")
            else:
                in_flight += 1
                notes.append(f"in-flight repeat: {text}")
        sent_logged = {row: set(by) for row, by in sent_at.items()}
        notices = _count_notices(
            _read_notices(query),
            notice_posts,
            sent_logged,
            problems,
            notes,
            allowance=self.allowance,
        )
        stray = self._stray_requests(problems, notes)
        errors = [line for i in self.incarnations for line in i.error_lines()]
        notes += [f"daemon error: {line}" for line in errors[:20]]
        if unattributed:
            notes.append(f"{unattributed} posts whose sender could not be told")
        for name in sorted(set(self.failover_kinds)):
            took = [
                t for t, k in zip(self.failovers, self.failover_kinds, strict=True) if k == name
            ]
            notes.append(
                f"fail-over after {name} ({len(took)}x): p50 {statistics.median(took):.2f} s,"
                f" max {max(took):.2f} s"
            )
        if self.recoveries:
            shown = ", ".join(f"{r:.2f}" for r in self.recoveries)
            notes.append(f"one replica: back to polling after a kill or stop in {shown} s")
        costs = {
            e.get("requests_per_cycle")
            for i in self.incarnations
            for e in list(i.events)
            if e.get("event") == "watcher.started"
        }
        notes.append(f"requests per cycle (watcher.started): {sorted(map(str, costs))}")
        return ChaosReport(
            seed=seed,
            backend=self.backend,
            replicas=self.replicas,
            poll=self.poll,
            events=dict(self.counts),
            transitions=transitions,
            expected=len(self.expected) + notices["delivered"],
            received=len(messages),
            lost=len(lost) + notices["lost"],
            true_repeats=true + notices["repeated"],
            in_flight_repeats=in_flight + notices["in_flight"],
            failovers=self.failovers,
            requests_per_minute=peak_per_minute(self.api.times),
            budget=self.budget,
            wall_time=time.monotonic() - began,
            unexpected=unexpected + notices["unexpected"] + len(self.receiver.rejected),
            torn_posts=torn,
            unattributed_posts=unattributed,
            stray_requests=stray,
            daemon_errors=len(errors),
            self_exits=len(self.exited),
            pg_recovery=self.pg_recovery,
            problems=problems,
            notes=notes,
        )

    def _stray_requests(self, problems: list[str], notes: list[str]) -> int:
        """API requests by a replica outside its terms of leadership (only the holder polls)."""
        led = {i.index: terms(i) for i in self.incarnations}
        stray: Counter[int] = Counter()
        unknown = 0
        for at, sender in self.api.requests:
            if sender < 0:
                unknown += 1
            elif not any(s - 0.05 <= at <= e + STRAY_GRACE for s, e in led[sender]):
                stray[sender] += 1
        for sender, n in sorted(stray.items()):
            problems.append(f"stray polls: incarnation {sender} made {n} API requests unled")
        if unknown:
            notes.append(f"{unknown} API requests whose sender could not be told")
        return sum(stray.values())

    def _failed_sends(self, rows: set[int]) -> dict[int, list[float]]:
        """When each incarnation logged `notify.failed` for one of `rows`."""
        found: dict[int, list[float]] = defaultdict(list)
        for incarnation in self.incarnations:
            for event, at in zip(list(incarnation.events), incarnation.seen_at, strict=False):
                if event.get("event") == "notify.failed" and event.get("delivery") in rows:
                    found[incarnation.index].append(at)
        return found

    def _struck_near(self, copies: Sequence[tuple[int, float]]) -> str:
        """The events around a repeat's copies, for its problem line."""
        first, last = copies[0][1] - 5, copies[-1][1] + 1
        near = [d for d in self.disruptions if d.end >= first and d.start <= last]
        return "  events near: " + "; ".join(
            f"{d.kind} of {sorted(d.incarnations)} at {d.start - copies[0][1]:+.2f} s" for d in near
        )


def run(
    events: int,
    *,
    replicas: int = 3,
    jobs: int = 4,
    seed: int = 0,
    poll: float = 1.0,
    backend: str = "postgresql",
    dsn: str = "",
    workdir: Path,
    progress: Callable[[str], None] | None = None,
) -> ChaosReport:
    """Run the chaos scenario with `events` events and count what arrived.

    Args:
        events: how many events strike (kills, stops, cuts, one PostgreSQL restart).
        replicas: how many daemons share the database (1 on SQLite).
        jobs: how many jobs change state (two more never do).
        seed: seeds the plan, for reproducibility.
        poll: the daemons' poll interval in seconds (the lease lasts as long, at least 1 s).
        backend: "postgresql" (with `dsn`) or "sqlite".
        dsn: the PostgreSQL server (a fresh schema is made in it, and dropped).
        workdir: an empty directory for the config (and the SQLite file).
        progress: called with a short line now and then.
    """
    if backend not in ("postgresql", "sqlite"):
        raise ValueError(f"unknown backend {backend!r}")
    if backend == "sqlite" and replicas != 1:
        raise ValueError("SQLite runs one replica per file: give --replicas 1")
    if backend == "postgresql" and not dsn:
        raise ValueError(f"PostgreSQL needs a DSN: set {PG_DSN_ENV}")
    began = time.monotonic()
    rng = random.Random(seed)
    plan = plan_chaos(rng, events=events, jobs=jobs, kinds=event_kinds(backend, replicas))
    chaos = _Chaos(
        workdir,
        replicas=replicas,
        jobs=jobs,
        poll=poll,
        backend=backend,
        dsn=dsn,
        progress=progress or (lambda _: None),
    )
    # Whatever happens, no daemon outlives the run, and the schema is dropped.
    with closing(chaos):
        chaos.open()
        for index, step in enumerate(plan):
            chaos.step(step, index)
            if (index + 1) % 10 == 0:
                chaos.progress(f"event {index + 1}/{len(plan)}: {dict(chaos.counts)}")
        chaos.settle()
        transitions = sum(len(s.step.changes) for s in plan) + 1
        return chaos.count(seed=seed, transitions=transitions, began=began)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run the scenario, print the figures; exit 0 when all went well."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--replicas", type=int, default=3, help="daemons (default 3)")
    parser.add_argument("--kills", type=int, default=100, help="events (default 100)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs that change (default 4)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--poll", type=float, default=1.0, help="poll interval s (default 1)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    seed = chosen_seed(args.seed)
    dsn = os.environ.get(PG_DSN_ENV, "")
    if args.backend == "sqlite" and args.replicas != 1:
        print("SQLite runs one replica per file: give --replicas 1", file=sys.stderr)
        return 2
    if args.backend == "postgresql" and not dsn:
        print(f"no PostgreSQL: as root, export {PG_DSN_ENV}=$(bash .ci/postgres)", file=sys.stderr)
        return 2
    if args.backend == "postgresql" and shutil.which("pg_ctlcluster") is None:
        print("pg_ctlcluster not found: the PostgreSQL restart needs it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="watcher-chaos-") as tmp:
        report = run(
            args.kills,
            replicas=args.replicas,
            jobs=args.jobs,
            seed=seed,
            poll=args.poll,
            backend=args.backend,
            dsn=dsn,
            workdir=Path(tmp),
            progress=to_stderr,
        )
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(
            f"seed {report.seed}: {report.replicas} replicas on {report.backend},"
            f" poll {report.poll:g} s, wall {report.wall_time:.0f} s"
        )
        print_findings(report.table(), report.problems, report.notes)
        print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
