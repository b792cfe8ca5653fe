"""A loopback TCP relay that can be cut like a network partition: while cut, bytes are held in
both directions and no connection is closed, so each side sees silence, not an error (what a
lost route or a dropped zone looks like, unlike `pg_terminate_backend`'s clean reset).

    with Relay(("127.0.0.1", 5432)) as relay:
        dsn = ...relay.port...
        relay.cut()    # silence
        relay.heal()   # held bytes flow on
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

CHUNK = 65_536


class Relay:
    """Relays every connection made to `port` to `upstream`, one thread per direction."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        self._open.set()  # wake held pumps so they see the close
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        self._acceptor.join(timeout=5)

    def cut(self) -> None:
        """Hold every byte from now on, in both directions, on every connection."""
        self._open.clear()

    def heal(self) -> None:
        """Let held and new bytes flow again."""
        self._open.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
                self.accepted += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(CHUNK)
                # Held here while cut: the peer's bytes wait unread, nothing is closed.
                self._open.wait()
                if not data or self._closed.is_set():
                    break
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
