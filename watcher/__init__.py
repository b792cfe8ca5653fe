"""fireworks-watcher: announce Fireworks AI job state changes through apprise."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fireworks-watcher")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
