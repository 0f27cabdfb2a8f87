"""Layer 6, operations: access log, metrics, observation, tracing and reloading.

Above ``serve`` for now: ``observe`` builds on ``Connection`` (to move below it once
observation no longer subclasses the connection)."""
