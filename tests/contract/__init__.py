"""Contracts: the store on both backends, the simulator's API shapes against the SDK."""
