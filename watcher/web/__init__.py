"""What the daemon serves over HTTP: health, readiness and metrics."""
