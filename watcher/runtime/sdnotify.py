"""systemd's notify protocol: READY, WATCHDOG, RELOADING and STOPPING datagrams.

A dozen lines of stdlib instead of a dependency: `sd_notify(3)` is one datagram to the
socket named by `$NOTIFY_SOCKET`. Outside systemd (no socket) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from contextlib import suppress


class SystemdNotifier:
    """Tells systemd how the service is doing; a no-op when not started by systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace, spelled with a leading NUL on the wire.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval: float | None = (
            int(watchdog_usec) / 1e6 if watchdog_usec.isdigit() and for_us else None
        )

    def notify(self, *lines: str) -> None:
        """Send `KEY=value` lines as one datagram; errors are ignored (systemd may be gone)."""
        if not self._address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, suppress(OSError):
            sock.sendto("\n".join(lines).encode(), self._address)

    def ready(self) -> None:
        """Start-up is complete (the first poll cycle is done)."""
        self.notify("READY=1", "STATUS=watching")

    def watchdog(self) -> None:
        """The loop is alive."""
        self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        """A reload began; `ready()` ends it."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        """Shutdown began."""
        self.notify("STOPPING=1")
