"""``asyncapy.redis``: the Redis backend of the shared state, at the path the README documents (the code is ``asyncapy.shared.redis``)."""

from .shared.redis import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    RedisState,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "RedisState",
]
