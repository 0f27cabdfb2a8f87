"""``APIKeyFactory``: the set of API keys a server accepts, one lookup per check.

Keys are kept as their SHA-256 digests, in memory or in a shared store
(``APIKeyFactory(store=RedisState(...))``). A check hashes the candidate once and
looks the digest up once, so it costs the same with 10 keys or 1,000,000 and its
timing says nothing about the stored keys: an attacker would have to steer the
digest of their guess, which SHA-256 does not allow. The keys themselves are never
stored, logged or shown.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..wire.errors import UsageError

if TYPE_CHECKING:
    from .state import SharedState

# 32 random bytes: 256 bits, far beyond guessing; token_urlsafe makes them ~43 chars.
DEFAULT_KEY_BYTES = 32


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a key is stored and looked up as."""
    return hashlib.sha256(key.encode()).digest()


class APIKeyFactory:
    """Creates, holds and revokes API keys.

    In memory (the default) the methods are plain calls. With ``store`` the keys live
    in the shared state, seen at once by every server using it: use the awaitable
    forms ``acreate``, ``aadd``, ``arevoke``, ``acontains`` (they work in memory too).

    Example:
        keys = APIKeyFactory()
        key = keys.create()
        server.register_handler(handler, ApiKey(keys))

        shared = APIKeyFactory(store=RedisState("redis://127.0.0.1:6379/0"))
        key = await shared.acreate()
    """

    __slots__ = ("_digests", "store")

    def __init__(self, keys: Iterable[str] = (), *, store: SharedState | None = None) -> None:
        self._digests: set[bytes] = set()
        self.store = store
        for key in keys:
            if store is not None:
                raise UsageError("APIKeyFactory(keys, store=...): add keys to a store with `await factory.aadd(key)`")
            self.add(key)

    # -- in memory ------------------------------------------------------------------

    def create(self, nbytes: int = DEFAULT_KEY_BYTES) -> str:
        """Make a new random key, remember it and return it (show it to its owner once)."""
        self._memory_only("create")
        key = secrets.token_urlsafe(nbytes)
        self.add(key)
        return key

    def add(self, key: str) -> None:
        """Accept ``key`` from now on."""
        self._memory_only("add")
        self._digests.add(key_digest(_checked(key)))

    def revoke(self, key: str) -> bool:
        """Stop accepting ``key``; False if it was not known."""
        self._memory_only("revoke")
        digest = key_digest(key)
        if digest in self._digests:
            self._digests.discard(digest)
            return True
        return False

    def contains(self, candidate: object) -> bool:
        """True if ``candidate`` is one of the keys: one hash, one lookup."""
        self._memory_only("contains")
        return isinstance(candidate, str) and key_digest(candidate) in self._digests

    # -- in memory or in the store ------------------------------------------------------

    async def acreate(self, nbytes: int = DEFAULT_KEY_BYTES) -> str:
        """``create``, in the store when there is one."""
        key = secrets.token_urlsafe(nbytes)
        await self.aadd(key)
        return key

    async def aadd(self, key: str) -> None:
        """``add``, in the store when there is one."""
        if self.store is None:
            self.add(key)
        else:
            await self.store.add_key(key_digest(_checked(key)))

    async def arevoke(self, key: str) -> bool:
        """``revoke``, in the store when there is one (every server stops accepting it)."""
        if self.store is None:
            return self.revoke(key)
        return await self.store.remove_key(key_digest(key))

    async def acontains(self, candidate: object) -> bool:
        """``contains``, in the store when there is one (one round trip).

        Raises:
            SharedStateUnavailable: the store did not answer.
        """
        if not isinstance(candidate, str):
            return False
        if self.store is None:
            return key_digest(candidate) in self._digests
        return await self.store.has_key(key_digest(candidate))

    async def acount(self) -> int:
        """How many keys are accepted."""
        if self.store is None:
            return len(self._digests)
        return await self.store.count_keys()

    def _memory_only(self, method: str) -> None:
        if self.store is not None:
            raise UsageError(f"this APIKeyFactory keeps its keys in {type(self.store).__name__}: use `await factory.a{method}(...)`")

    def __contains__(self, candidate: object) -> bool:
        return self.contains(candidate)

    def __len__(self) -> int:
        self._memory_only("count")
        return len(self._digests)

    def __repr__(self) -> str:
        if self.store is not None:
            return f"APIKeyFactory(store={self.store!r})"
        return f"APIKeyFactory(<{len(self._digests)} keys>)"


def _checked(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("an API key is a non-empty string")
    return key
