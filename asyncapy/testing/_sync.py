"""``TestClient``: the blocking face of ``AsyncTestClient``, on a private event loop.

The loop runs in a background thread so the client works the same from plain
functions and from inside async tests (where a second loop cannot run in-thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from ..client import Sendable
from ..client.clientcore import UNSET, Unset
from ..server import Server
from ._async import AsyncTestClient
from ._recording import Handler

T = TypeVar("T")
R = TypeVar("R")


class _LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="asyncapy-testclient", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.call(_cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _cancel_leftovers() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _next(packets: Any) -> dict[str, Any]:
    value: dict[str, Any] = await packets.__anext__()
    return value


class TestClient:
    """Talk to ``server`` in memory, blocking; see ``AsyncTestClient`` for what runs.

    Example:
        with TestClient(server) as client:
            assert client.request({"test": 1}) == {"test": 1}
            assert len(client.calls["echo"]) == 1
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self, server: Server, *, address: str = "127.0.0.1", encoding: str = "json", timeout: float = 5.0, protocol: int = 2
    ) -> None:
        self._client = AsyncTestClient(server, address=address, encoding=encoding, timeout=timeout, protocol=protocol)
        self._portal: _LoopThread | None = None

    def __enter__(self) -> TestClient:
        if self._portal is not None:
            raise RuntimeError("this test client is already running")
        self._portal = _LoopThread()
        try:
            self._portal.call(self._client.__aenter__())
        except BaseException:
            self._portal.stop()
            self._portal = None
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        portal, self._portal = self._portal, None
        if portal is not None:
            try:
                portal.call(self._client.__aexit__(exc_type, exc, tb))
            finally:
                portal.stop()

    def connect(self) -> None:
        """Open a connection (``send`` and ``request`` do it when needed)."""
        self._call(self._client.connect())

    def send(self, obj: Sendable, encoding: str | None = None) -> None:
        """Send one packet."""
        self._call(self._client.send(obj, encoding))

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are, to test framing errors."""
        self._call(self._client.send_raw(data))

    def receive_all(self) -> bytes:
        """The next whole packet, header included, as raw bytes."""
        return self._call(self._client.receive_all())

    def receive(self) -> dict[str, Any]:
        """The next reply, decoded."""
        return self._call(self._client.receive())

    @overload
    def request(
        self,
        obj: Sendable,
        encoding: str | None = None,
        *,
        reply: type[R],
        raise_errors: bool = False,
        timeout: float | None | Unset = UNSET,
    ) -> R: ...

    @overload
    def request(
        self,
        obj: Sendable,
        encoding: str | None = None,
        *,
        reply: None = None,
        raise_errors: bool = False,
        timeout: float | None | Unset = UNSET,
    ) -> dict[str, Any]: ...

    def request(
        self,
        obj: Sendable,
        encoding: str | None = None,
        *,
        reply: Any = None,
        raise_errors: bool = False,
        timeout: float | None | Unset = UNSET,
    ) -> Any:
        """Send ``obj`` and return its reply: the map, or with ``reply=Model`` a ``Model``
        (see ``asyncapy.client.Client.request``); safe to call from several threads."""
        return self._call(self._client.request(obj, encoding, reply=reply, raise_errors=raise_errors, timeout=timeout))

    def pushed(self) -> Iterator[dict[str, Any]]:
        """On v2, the packets the server pushed, as they come; ends when the client closes."""
        packets = self._client.pushed()
        while True:
            try:
                yield self._call(_next(packets))
            except StopAsyncIteration:
                return

    @overload
    def stream(self, obj: Sendable, encoding: str | None = None, *, item: type[T]) -> Iterator[T]: ...

    @overload
    def stream(self, obj: Sendable, encoding: str | None = None, *, item: None = None) -> Iterator[dict[str, Any]]: ...

    def stream(self, obj: Sendable, encoding: str | None = None, *, item: Any = None) -> Iterator[Any]:
        """Send ``obj`` to a streaming handler and iterate over its items (see ``AsyncTestClient.stream``)."""
        items = self._client.stream(obj, encoding, item=item)

        async def next_item() -> tuple[bool, Any]:
            try:
                return True, await items.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, value = self._call(next_item())
                if not more:
                    return
                yield value
        finally:
            if self._portal is not None:
                self._call(_close(items))

    def close(self) -> None:
        """Close this connection as a client would; the next ``send`` opens a new one."""
        self._call(self._client.close())

    @property
    def calls(self) -> Mapping[str, list[Any]]:
        """Handler name -> what each of its calls received (the packet or the model)."""
        return self._client.calls

    def calls_of(self, handler: Handler) -> list[Any]:
        """What each call of ``handler`` received, oldest first."""
        return self._client.calls_of(handler)

    def reset_calls(self) -> None:
        self._client.reset_calls()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._portal is None:
            coro.close()
            raise RuntimeError("use the test client as `with TestClient(server) as client:`")
        return self._portal.call(coro)


async def _close(items: AsyncIterator[Any]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()
