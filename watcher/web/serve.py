"""The health server: `Health.app()` under uvicorn, in a thread with its own event loop.

Leaving signals to the daemon, so a flood of scrapes never queues the poller's tasks: beyond
`MAX_CONNECTIONS` busy connections it answers 503 at once (the probes excepted), and a
connection that sends no request is closed after `guard.HEADER_TIMEOUT` (`web.guard`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import anyio
import anyio.abc
import anyio.to_thread
import uvicorn

from watcher.core.errors import ListenError
from watcher.core.urls import host_port
from watcher.web.guard import Guard
from watcher.web.health import BACKLOG, MAX_CONNECTIONS, AsgiApp

#: Seconds the server may take to start, and to stop.
STARTUP_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals alone (the daemon owns SIGINT and SIGTERM).

    `ready` is set once it accepts connections, or once it has given up starting.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening, then say so."""
        await super().startup(sockets=sockets)
        self.ready.set()

    def run_here(self, sock: socket.socket) -> None:
        """Serve on `sock` in this thread, with an event loop of its own, until told to exit."""
        try:
            self.run(sockets=[sock])
        finally:
            self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install no handlers (uvicorn's would swallow the daemon's signals and re-raise them)."""
        yield


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and without it keep-alive answers stall on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_health(
    app: AsgiApp,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on `host:port` until cancelled, in a thread with its own event loop.

    Meant for `await task_group.start(serve_health, app, host, port)`, which returns the
    port actually bound (useful with port 0) once the server accepts connections.

    However many clients it serves, the caller's tasks (the poller's deadlines) never queue
    behind them; only the interpreter is shared, and a request's cost is bounded.

    Raises:
        ListenError: the address cannot be bound (in use, not local, ...), or the server did
            not start.
    """
    shown = host_port(host, port)
    try:
        sock = _listen(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(f"watcher.health_listen: cannot listen on {shown}: {reason}") from None
    guard = Guard(max_busy=MAX_CONNECTIONS)
    config = uvicorn.Config(
        guard.app(app),
        # h11 with a header read timeout and connections that wait counted apart.
        http=guard.protocol(),
        interface="asgi3",
        lifespan="off",
        ws="none",
        # Not "warning": uvicorn warns of every refused connection, a flood would fill the log.
        log_level="error",
        access_log=False,
        # None keeps uvicorn from rewriting the process's logging configuration.
        log_config=None,
        server_header=False,
        backlog=BACKLOG,
        timeout_keep_alive=5,
        # A scrape still in flight must not hold up the daemon's shutdown for long.
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run_here, args=(sock,), name="health", daemon=True)
    try:
        thread.start()
        started = await anyio.to_thread.run_sync(server.ready.wait, STARTUP_TIMEOUT)
        if not (started and server.started):
            raise ListenError(f"watcher.health_listen: the server on {shown} did not start")
        task_status.started(sock.getsockname()[1])
        await anyio.sleep_forever()
    finally:
        server.should_exit = True
        if thread.ident is not None:
            with anyio.CancelScope(shield=True):
                # uvicorn looks at `should_exit` every 0.1 s.
                await anyio.to_thread.run_sync(thread.join, STARTUP_TIMEOUT)
        sock.close()
