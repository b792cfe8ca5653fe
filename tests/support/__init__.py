"""Helpers shared by the test layers: hostile peers, daemons, waits."""
