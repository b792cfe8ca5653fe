"""Real loopback servers for tests: an ASGI app under uvicorn, and an apprise `json://` receiver.

Plain helpers with no pytest import, so any test module (or a script) can use them.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast

import anyio.to_thread
import uvicorn

from fireworks_sim import listen_tcp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class FakeClock:
    """A settable stand-in for `time.monotonic`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_tcp_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (prefer binding port 0 yourself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServedApp:
    """An ASGI app served by uvicorn in a daemon thread on a free loopback port.

    The socket is bound before uvicorn starts, so there is no race for the port. `app` may
    be swapped while serving, which lets one server (started once per module) serve a fresh
    app to every test.

    Args:
        app: The ASGI 3 app.
        host: The loopback address to bind.
        startup_timeout: Seconds to wait for uvicorn to report it started.
    """

    def __init__(
        self, app: AsgiApp, host: str = "127.0.0.1", *, startup_timeout: float = 10.0
    ) -> None:
        self.app = app
        self._host = host
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    async def _dispatch(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        await self.app(scope, receive, send)

    def start(self) -> str:
        """Start serving and return the base URL, e.g. `http://127.0.0.1:PORT`."""
        sock = listen_tcp(self._host, 0)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._dispatch,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            # None keeps uvicorn from rewriting the process's logging configuration.
            log_config=None,
            # A delayed answer still in flight must not hold up the end of a test for long.
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive():
                sock.close()
                raise RuntimeError("uvicorn stopped before it started serving")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start within {self._startup_timeout} s")
            time.sleep(0.01)
        self.url = f"http://{self._host}:{port}"
        return self.url

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def serve_asgi(app: AsgiApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free loopback port for the duration of the block; yields the base URL."""
    with ServedApp(app, host) as served:
        yield served.url


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: JsonReceiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A slow answer to a sender that is gone (killed, or done waiting) is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {"body": body}
        record = {**body, "path": self.path, "auth": self.headers.get("Authorization", "")}
        receiver = cast(_ReceiverServer, self.server).receiver
        # Recorded before answering: once the sender's call returns, the record is visible.
        status = receiver._record(record)
        # A slow endpoint: the message has arrived, but the answer comes late.
        time.sleep(receiver.delay)
        self.send_response(status)
        if receiver.retry_after is not None and not 200 <= status < 300:
            self.send_header("Retry-After", receiver.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines."""


class JsonReceiver:
    """Records apprise `json://` notifications posted to a loopback HTTP server.

    Each record is the posted JSON (`title`, `message`, `type`, ...) plus `path` and `auth`
    (the Authorization header, "" if none). While `status` is not 2xx the server answers
    with it and files the post under `rejected` instead of `messages` (with a `Retry-After`
    header when `retry_after` is set). `delivered_at` are the monotonic times of the
    delivered posts, `posted_at` of every post.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._rejected: list[dict[str, Any]] = []
        self._status = 200
        #: Seconds to wait before answering each post (after recording it).
        self.delay = 0.0
        #: The `Retry-After` header of a non-2xx answer (None: no header).
        self.retry_after: str | None = None
        self._delivered_at: list[float] = []
        self._posted_at: list[float] = []
        self._server = _ReceiverServer(("127.0.0.1", 0), _ReceiverHandler)
        self._server.receiver = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="json-receiver",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    def url(self, path: str = "/hook", *, user: str = "", password: str = "") -> str:
        """The apprise URL, e.g. `json://127.0.0.1:PORT/hook` (`user`/`password` add basic auth)."""
        credentials = f"{user}:{password}@" if user else ""
        return f"json://{credentials}127.0.0.1:{self.port}{path}"

    @property
    def status(self) -> int:
        """The HTTP status the receiver answers with (200 by default)."""
        with self._condition:
            return self._status

    @status.setter
    def status(self, value: int) -> None:
        with self._condition:
            self._status = value

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A copy of the delivered (2xx-answered) posts, oldest first."""
        with self._condition:
            return list(self._messages)

    @property
    def rejected(self) -> list[dict[str, Any]]:
        """A copy of the posts answered with a non-2xx status."""
        with self._condition:
            return list(self._rejected)

    @property
    def delivered_at(self) -> list[float]:
        """The `time.monotonic()` of each delivered post, oldest first."""
        with self._condition:
            return list(self._delivered_at)

    @property
    def posted_at(self) -> list[float]:
        """The `time.monotonic()` of each post, delivered or rejected, oldest first."""
        with self._condition:
            return list(self._posted_at)

    def clear(self) -> None:
        """Forget every recorded post."""
        with self._condition:
            self._messages.clear()
            self._rejected.clear()
            self._delivered_at.clear()
            self._posted_at.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least `count` posts were delivered; raise AssertionError on timeout."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._messages) >= count, timeout):
                raise AssertionError(
                    f"expected {count} notification(s) within {timeout} s,"
                    f" got {len(self._messages)}: {self._messages!r}"
                )
            return list(self._messages)

    async def wait_for_async(
        self,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109 (the same signature as `wait_for`)
    ) -> list[dict[str, Any]]:
        """`wait_for` for async code: the wait runs in a worker thread, so the event loop (and
        the code under test on it) keeps running; a cancelled caller does not wait for it."""
        return await anyio.to_thread.run_sync(self.wait_for, count, timeout, abandon_on_cancel=True)

    def _record(self, record: dict[str, Any]) -> int:
        with self._condition:
            status = self._status
            delivered = 200 <= status < 300
            (self._messages if delivered else self._rejected).append(record)
            self._posted_at.append(time.monotonic())
            if delivered:
                self._delivered_at.append(self._posted_at[-1])
            self._condition.notify_all()
            return status

    def close(self) -> None:
        """Stop the server and wait for its thread."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    async def aclose(self) -> None:
        """`close` for async code: the server's shutdown waits for its thread, so wait in a
        worker thread instead of on the event loop."""
        await anyio.to_thread.run_sync(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
