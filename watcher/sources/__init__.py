"""Where snapshots come from: the Fireworks API client (httpx)."""
