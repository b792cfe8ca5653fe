"""Serving the app: a listening TCP socket, its URL, and uvicorn (imported lazily)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from fireworks_sim.api import Simulator


def base_url(sock: socket.socket) -> str:
    """`http://host:port` for a bound socket (IPv6 hosts get brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0 picks a free one), ready for uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and without it every keep-alive answer stalls ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `sim` with uvicorn until interrupted (blocking).

    The socket is bound and listening before `ready(base_url)` is called, so whoever is
    told the URL can connect at once; port 0 picks a free port.
    """
    import uvicorn  # lazy: only serving needs it, and tests of the app itself do not

    config = uvicorn.Config(
        sim, interface="asgi3", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    with listen_tcp(host, port) as sock:
        if ready is not None:
            ready(base_url(sock))
        server.run(sockets=[sock])
