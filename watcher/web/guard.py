"""The health server's connections: none may hold a place without sending a request.

uvicorn's h11 protocol waits for a request's headers as long as a client likes, and counts
every open connection against `limit_concurrency`: 40 sockets that send nothing kept
`/healthz` at 503 until they left, and a kubelet restarts a healthy pod for that.
`Guard.protocol()` is h11's protocol with three rules added:

- a connection has `HEADER_TIMEOUT` seconds, from connecting (or from the end of the answer
  before on a kept-alive one), to finish a request's headers, however it trickles them; then
  it is closed;
- beyond `max_open` connections, the oldest one still waiting for its headers is closed to
  make room (when every one is busy with a request, the newcomer is);
- only connections that sent a request count as busy: beyond `max_busy` of them, everything
  but the probes is answered 503 at once (`Guard.app`). The probes (`PROBES`) cost a clock
  read and are always answered.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Final

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from watcher.web.health import AsgiApp, Receive, Scope, Send

#: Seconds a client has to send a request's headers.
HEADER_TIMEOUT: Final = 5.0
#: Open connections at most (a file descriptor each, in the daemon's process).
MAX_OPEN: Final = 512
#: Paths answered whatever the load: they read two timestamps and write a line.
PROBES: Final = frozenset({"/healthz", "/readyz"})
_BUSY: Final = b"busy: too many connections\n"


class _Guarded(H11Protocol):
    """One connection under its server's `Guard` (a subclass per guard sets `guard`)."""

    guard: ClassVar[Guard]
    _deadline: asyncio.TimerHandle | None = None
    # The request cycle when it began waiting: uvicorn starts a new one once headers are in.
    _waited_after: RequestResponseCycle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.guard.opened(self):
            self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waited_after:
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Unless closing, or busy with a pipelined request: the next one, kept alive.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.guard.closed(self)
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._waited_after = self.cycle
        self.guard.waiting[self] = None
        self._cancel_deadline()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT, self._too_slow)

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        self.guard.busy.add(self)
        self._cancel_deadline()

    def _too_slow(self) -> None:
        self._deadline = None
        if self in self.guard.waiting:
            self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class Guard:
    """The connections of one server: those waiting for their headers (oldest first), and
    those that sent a request (busy until they close)."""

    def __init__(self, *, max_open: int = MAX_OPEN, max_busy: int) -> None:
        self.max_open = max_open
        self.max_busy = max_busy
        self.open: set[_Guarded] = set()
        self.waiting: dict[_Guarded, None] = {}  # insertion-ordered: the oldest first
        self.busy: set[_Guarded] = set()

    def protocol(self) -> type[H11Protocol]:
        """The protocol class for uvicorn's `http` setting, bound to this guard."""

        class Guarded(_Guarded):
            guard = self

        return Guarded

    def opened(self, connection: _Guarded) -> bool:
        """Count a new connection; over `max_open`, close the oldest one still waiting for
        its headers, or else this one (then False)."""
        self.open.add(connection)
        if len(self.open) <= self.max_open:
            return True
        victim = next(iter(self.waiting), connection)
        self.waiting.pop(victim, None)  # not picked twice while it closes
        victim.transport.close()
        return victim is not connection

    def closed(self, connection: _Guarded) -> None:
        """Forget a connection that closed."""
        self.open.discard(connection)
        self.waiting.pop(connection, None)
        self.busy.discard(connection)

    def app(self, app: AsgiApp) -> AsgiApp:
        """`app`, answering 503 at once beyond `max_busy` busy connections (probes excepted)."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if (
                scope["type"] == "http"
                and len(self.busy) > self.max_busy
                and scope["path"] not in PROBES
            ):
                headers = [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_BUSY)).encode()),
                    (b"connection", b"close"),  # the place is freed for another client
                ]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": _BUSY})
                return
            await app(scope, receive, send)

        return guarded
