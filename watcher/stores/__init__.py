"""Where state lives: the SQLite store (the ports `StateRepo` and `Outbox`)."""
