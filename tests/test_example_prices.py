"""examples/prices.py: in memory through the test clients, and as two real instances
sharing a real redis-server, each served by ``asyncapy run`` in its own process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from asyncapy.client import Client
from asyncapy.testing import AsyncTestClient, TestClient
from asyncapy.wire.errors import ErrorReply
from examples.prices import Quote, Tick, Watch, prices, server

from .procs import free_port, server_process
from .services import RedisProcess, redis_server  # noqa: F401  (fixture)

#: Bounds every wait of these tests (seconds).
PATIENCE = 15.0
#: Quotes sent while waiting for a watcher on another instance to be subscribed (one every ``EVERY`` s).
RETRIES = 300
EVERY = 0.05


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds."""
    for _ in range(int(PATIENCE / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def quote(symbol: str, price: float) -> Quote:
    return Quote(kind="quote", symbol=symbol, price=price)


async def test_a_watcher_gets_the_quotes_of_its_symbols_only() -> None:
    async with AsyncTestClient(server) as watcher, AsyncTestClient(server) as seller:
        got: list[Tick] = []

        async def watch() -> None:
            async for tick in watcher.stream(Watch(symbols=["ACME", "INIT"]), item=Tick):
                got.append(tick)
                if len(got) == 3:
                    return

        task = asyncio.create_task(watch())
        await until(lambda: prices.subscribers == 1)  # the handler subscribed
        for symbol, price in [("ACME", 1.5), ("OTHER", 2), ("INIT", 3), ("ACME", 4)]:
            assert await seller.request(quote(symbol, price)) == {"kind": "published", "symbol": symbol}
        await asyncio.wait_for(task, PATIENCE)
        assert got == [Tick(symbol="ACME", price=1.5), Tick(symbol="INIT", price=3), Tick(symbol="ACME", price=4)]
        await until(lambda: prices.subscribers == 0)  # leaving the loop closed the stream and its subscription


def test_the_blocking_test_client_streams_and_bad_requests_are_refused() -> None:
    with TestClient(server) as watcher, TestClient(server) as seller:
        got: list[Tick] = []

        def watch() -> None:
            for tick in watcher.stream(Watch(symbols=["ACME"]), item=Tick):
                got.append(tick)
                if tick.price == 2:
                    return

        reader = threading.Thread(target=watch)
        reader.start()
        for _ in range(int(PATIENCE / 0.01)):  # bounded: until the handler subscribed
            if prices.subscribers:
                break
            threading.Event().wait(0.01)
        seller.request(quote("ACME", 1))
        seller.request(quote("INIT", 9))
        seller.request(quote("ACME", 2))
        reader.join(PATIENCE)
        assert not reader.is_alive() and [t.price for t in got] == [1, 2]
        bad = seller.request({"kind": "quote", "symbol": "ACME", "price": -1})
        assert bad["error"] == "ERR_NO_HANDLER" and bad["errors"][0]["loc"] == ["price"]
        with pytest.raises(ErrorReply) as refused:
            list(watcher.stream({"kind": "watch", "symbols": []}, item=Tick))
        assert refused.value.code == "ERR_NO_HANDLER"


def test_two_instances_share_the_topic_through_redis(redis_server: RedisProcess) -> None:  # noqa: F811
    """A client streaming from instance A receives what a client publishes through instance B."""
    a, b = free_port(), free_port()
    env = {"ASYNCAPY_REDIS_URL": redis_server.url}
    run = ["-m", "asyncapy", "run", "examples.prices:server", "--port"]
    with server_process([*run, str(a)], a, env) as proc_a, server_process([*run, str(b)], b, env) as proc_b:
        got, symbols = publish_on_b_watch_on_a(a, b)
        assert got[-1] == Tick(symbol="ACME", price=1000)  # the last quote, after those sent while A subscribed
        assert symbols == {"ACME"}  # OTHER was filtered out by the watch on A
        assert [t.price for t in got] == sorted(t.price for t in got)  # in the order B published them
    assert proc_a.returncode == 0 and proc_b.returncode == 0, (proc_a.communicate(), proc_b.communicate())


def publish_on_b_watch_on_a(a: int, b: int) -> tuple[list[Tick], set[str]]:
    got: list[Tick] = []
    first = threading.Event()
    with Client("127.0.0.1", a, timeout=PATIENCE) as watcher, Client("127.0.0.1", b, timeout=PATIENCE) as seller:

        def watch() -> None:
            for tick in watcher.stream(Watch(symbols=["ACME"]), item=Tick):
                got.append(tick)
                first.set()
                if tick.price == 1000:
                    break  # CANCEL: A's handler and its subscription end

        reader = threading.Thread(target=watch)
        reader.start()
        for n in range(RETRIES):  # until A's watcher is subscribed (Redis keeps nothing for later)
            seller.request(quote("ACME", n + 1))
            if first.wait(EVERY):
                break
        assert first.is_set(), "no quote sent through B reached the watcher on A"
        seller.request(quote("OTHER", 5))
        seller.request(quote("ACME", 1000))
        reader.join(PATIENCE)
        assert not reader.is_alive()
        assert watcher.request(quote("ACME", 7)) == {"kind": "published", "symbol": "ACME"}  # A's connection is still good
    return got, {t.symbol for t in got}
