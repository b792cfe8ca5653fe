"""The runtime: the poller and the dispatcher, two tasks that share only the store and
a wake event, and the systemd notifications. Adapters are reached through `watcher.ports`."""
