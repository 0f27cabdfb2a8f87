"""``APIKeyFactory``: the set of API keys a server accepts, checked in constant time."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable

# 32 random bytes: 256 bits, far beyond guessing; token_urlsafe makes them ~43 chars.
DEFAULT_KEY_BYTES = 32


class APIKeyFactory:
    """Creates, holds and revokes API keys.

    Keys never appear in ``repr``, ``describe()`` or error details. ``contains``
    compares a candidate against every key with ``hmac.compare_digest`` and does
    not stop at the first hit, so timing says nothing about which key matched.

    Example:
        keys = APIKeyFactory()
        key = keys.create()
        server.register_handler(handler, ApiKey(keys))
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys: dict[str, bytes] = {}
        for key in keys:
            self.add(key)

    def create(self, nbytes: int = DEFAULT_KEY_BYTES) -> str:
        """Make a new random key, remember it and return it (show it to its owner once)."""
        key = secrets.token_urlsafe(nbytes)
        self.add(key)
        return key

    def add(self, key: str) -> None:
        """Accept ``key`` from now on."""
        if not isinstance(key, str) or not key:
            raise ValueError("an API key is a non-empty string")
        self._keys[key] = key.encode()

    def revoke(self, key: str) -> bool:
        """Stop accepting ``key``; False if it was not known."""
        return self._keys.pop(key, None) is not None

    def contains(self, candidate: object) -> bool:
        """True if ``candidate`` is one of the keys (constant time per stored key)."""
        if not isinstance(candidate, str):
            return False
        given = candidate.encode()
        found = False
        for stored in tuple(self._keys.values()):
            found |= hmac.compare_digest(given, stored)
        return found

    def __contains__(self, candidate: object) -> bool:
        return self.contains(candidate)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"APIKeyFactory(<{len(self._keys)} keys>)"
