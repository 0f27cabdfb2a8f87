"""Layer 5, serving: the connection, the listener, worker processes and the per-connection gates."""
