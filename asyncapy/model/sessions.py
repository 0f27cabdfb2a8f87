"""Open sessions per IP address, and the ``session_limit`` that bounds them."""

from __future__ import annotations

from typing import Any

from .peer import Session


class SessionRegistry:
    """Tracks the open sessions of each IP address.

    ``limit`` is the most concurrent sessions one address may hold (0: no limit).
    Opening and closing happen on the event loop thread, so check-and-add is atomic.
    """

    __slots__ = ("limit", "_by_address")

    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError("session_limit must be 0 (no limit) or positive")
        self.limit = limit
        self._by_address: dict[str, dict[Session, Any]] = {}

    def open(self, session: Session, owner: Any = None) -> bool:
        """Register ``session`` (held by ``owner``, its connection); False when its address is at the limit."""
        sessions = self._by_address.get(session.address)
        if sessions is None:
            self._by_address[session.address] = {session: owner}
            return True
        if self.limit and len(sessions) >= self.limit:
            return False
        sessions[session] = owner
        return True

    def close(self, session: Session) -> None:
        """Forget ``session`` (closing an unknown session is harmless)."""
        sessions = self._by_address.get(session.address)
        if sessions is None:
            return
        sessions.pop(session, None)
        if not sessions:
            del self._by_address[session.address]

    def owners_of(self, address: str) -> list[Any]:
        """The owners given to ``open`` for the open sessions of ``address``, oldest first."""
        return list(self._by_address.get(address, {}).values())

    def sessions_of(self, address: str) -> list[Session]:
        """The open sessions of ``address``, oldest first."""
        return list(self._by_address.get(address, ()))

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_address.values())
