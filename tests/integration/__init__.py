"""A poller, dispatcher or daemon over loopback against the simulator and real receivers."""
