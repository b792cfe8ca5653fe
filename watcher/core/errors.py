"""The watcher's errors: one tree, translated from foreign exceptions at each adapter.

```
WatcherError
├── ConfigError          bad config file, value or missing secret; the CLI exits 2
├── ApiError             the Fireworks API did not give a usable answer
│   ├── ApiUnavailable   transient: timeout, connection error, 429, 5xx; retried with backoff
│   ├── ApiRejected      401/403, other 4xx, a redirect loop: retrying soon will not help
│   └── PayloadError     the answer is not the JSON we expect; skipped for this cycle
├── StoreError           the state database cannot be opened or written
│   ├── LeaseLost        a mark came too late: the outbox row is no longer this claim's
│   └── StateLocked      another daemon holds the state file
├── NotifyError          a channel URL cannot be used
└── ListenError          the health server cannot listen where it is told; the CLI exits 2
```

Every message is one line and never contains a secret.
"""

from __future__ import annotations


class WatcherError(Exception):
    """Root of every error the watcher raises on purpose."""


class ConfigError(WatcherError):
    """The configuration is invalid; the message names the key path."""


class ApiError(WatcherError):
    """The Fireworks API did not give a usable answer."""


class ApiUnavailable(ApiError):
    """A transient failure; `retry_after` is the server's hint in seconds, if it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApiRejected(ApiError):
    """The API refused the request (401, 403, other 4xx)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def is_auth(self) -> bool:
        """True for 401 and 403: the key is wrong or lacks permission."""
        return self.status_code in (401, 403)


class PayloadError(ApiError):
    """The answer is not the JSON shape we expect."""


class StoreError(WatcherError):
    """The state database cannot be opened or written."""


class LeaseLost(StoreError):
    """A delivery's mark came too late: its row is settled or claimed by someone else."""


class Fenced(StoreError):
    """A poll's write came under a leadership epoch that has moved on: refused, nothing written
    (another replica holds the poller lease now)."""


class StateLocked(StoreError):
    """Another process holds the state file's lock (one daemon per state file)."""


class NotifyError(WatcherError):
    """A notification channel URL cannot be used."""


class ListenError(WatcherError):
    """The health server cannot listen on its address (in use, not local, ...)."""
