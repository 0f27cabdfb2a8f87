"""Lifespan: what a server opens before it serves and closes after (DESIGN §4).

    @asynccontextmanager
    async def lifespan(server: Server) -> AsyncIterator[None]:
        server.state.db = await connect_db()   # before the first connection is accepted
        yield
        await server.state.db.close()          # after the last one closed

    server = Server(port=1500, lifespan=lifespan)

It runs wherever the server serves: ``server.start()`` and ``asyncapy run`` (in each
worker process), ``await server.serve()`` / ``start_serving()``, and both TestClients.
A lifespan that raises on the way in is logged and nothing is served:
``start_serving()`` raises ``LifespanError``, ``start()`` (and the CLI) exit with
status 1, a worker that fails stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from ..wire.errors import LifespanError

__all__ = ["Lifespan", "LifespanRun", "State"]

logger = logging.getLogger("asyncapy")

#: The server a lifespan is given (``asyncapy.Server``, a layer above this module).
S = TypeVar("S")

#: ``lifespan(server)`` -> an async context manager (``@asynccontextmanager`` makes one).
Lifespan = Callable[[S], AbstractAsyncContextManager[Any]]


class State:
    """``server.state``: a plain namespace for what the lifespan (or anything else) keeps.

    Any attribute may be set; reading one that was never set is an ``AttributeError``
    naming it.
    """

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"server.state has no {name!r}: set it first (in the lifespan, for instance)")

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def __delattr__(self, name: str) -> None:
        del self.__dict__[name]

    def __repr__(self) -> str:
        return f"State({', '.join(sorted(self.__dict__))})"


class LifespanRun(Generic[S]):
    """One entry into a server's lifespan and, later, the exit from it."""

    def __init__(self, lifespan: Lifespan[S] | None) -> None:
        self._lifespan = lifespan
        self._entered: AbstractAsyncContextManager[Any] | None = None

    async def enter(self, server: S) -> None:
        """Run the lifespan up to its ``yield``; ``LifespanError`` (logged) if it raises."""
        if self._lifespan is None:
            return
        manager = self._lifespan(server)
        try:
            await manager.__aenter__()
        except Exception as exc:
            logger.error("The lifespan failed before serving; nothing is served", exc_info=exc)
            raise LifespanError(f"the lifespan failed before serving: {exc!r}") from exc
        self._entered = manager

    async def exit(self) -> None:
        """Run the rest of the lifespan (after its ``yield``); a failure there is logged."""
        manager, self._entered = self._entered, None
        if manager is None:
            return
        try:
            await manager.__aexit__(None, None, None)
        except Exception:
            logger.exception("The lifespan failed after serving")
