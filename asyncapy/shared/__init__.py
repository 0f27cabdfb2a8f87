"""Layer 3, shared state: what several servers share (sessions, API keys, rate-limit buckets) and its backends."""
