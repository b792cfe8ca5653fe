"""Where messages go: apprise."""
