"""Typed requests, concurrency, pools, timeouts and reconnects: real sockets and test clients."""

from __future__ import annotations

import asyncio
import random
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from pydantic import BaseModel

import asyncapy
from asyncapy import Client, ClientError, ConnectionClosed, ErrorReply, Packet, Server
from asyncapy.client import AsyncClient, ReplyValidationError
from asyncapy.client import Client as SyncClient
from asyncapy.wire.errors import ClientTimeout
from asyncapy.testing import AsyncTestClient, TestClient

from ..conftest import make_server, running

ROOT = Path(__file__).resolve().parents[2]


class Ask(BaseModel):
    n: int
    sleep: float = 0
    close: bool = False
    twice: bool = False
    silent: bool = False


class Bad(BaseModel):
    kind: Literal["bad"]


class Answer(BaseModel):
    n: int
    session: str


SILENT_CALLS: list[int] = []


def answering_server() -> tuple[Server, set[str]]:
    """Answers ``Ask`` with ``Answer`` (after ``sleep``; then closes on ``close``, answers
    again on ``twice``, closes without answering on ``silent``); ``{"kind": "bad"}`` gets
    a reply that is not an ``Answer``."""
    server = make_server()
    sessions: set[str] = set()

    @server.add_handler()
    async def answer(client: Client, packet: Packet[Ask]) -> None:
        ask = packet.data
        sessions.add(str(client.session.id))
        if ask.silent:
            SILENT_CALLS.append(ask.n)
            await client.close()
            return
        if ask.sleep:
            await asyncio.sleep(ask.sleep)
        reply = Answer(n=ask.n, session=str(client.session.id))
        await client.send(reply)
        if ask.twice:
            await client.send(reply)
        if ask.close:
            await client.close()

    @server.add_handler()
    async def bad(client: Client, packet: Packet[Bad]) -> dict[str, Any]:
        return {"n": "not a number", "kind": packet.data.kind}

    return server, sessions


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, set[str]]]:
    server, sessions = answering_server()
    async with running(server):
        yield server, sessions


# -- typed requests ------------------------------------------------------------------------


async def test_async_request_returns_the_reply_model(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        answer = await client.request(Ask(n=1), reply=Answer)
        assert isinstance(answer, Answer) and answer.n == 1
        assert (await client.request({"n": 2}, "ziproto", reply=Answer)).n == 2
        assert await client.request({"n": 3}) == {"n": 3, "session": answer.session}
        with pytest.raises(ReplyValidationError) as caught:
            await client.request({"kind": "bad"}, reply=Answer)
        assert isinstance(caught.value, ClientError)
        assert caught.value.reply == {"n": "not a number", "kind": "bad"}
        assert caught.value.model is Answer and caught.value.validation_error.error_count() == 2
        assert (await client.request({"n": 4}, reply=Answer)).n == 4  # still in step


async def test_error_reply_beats_validation(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    server_with_errors = make_server()

    @server_with_errors.add_handler()
    async def fail(client: Client, packet: Packet) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_NOPE", "n": 1, "session": "x"}  # also a valid Answer

    async with running(server_with_errors):
        async with AsyncClient("127.0.0.1", server_with_errors.port, timeout=5) as client:
            with pytest.raises(ErrorReply) as caught:
                await client.request({}, reply=Answer)
            assert caught.value.code == "ERR_NOPE"
            with pytest.raises(ErrorReply, match="ERR_NO_HANDLER"):
                await AsyncClient("127.0.0.1", server.port, timeout=5).request({"n": "x"}, reply=dict)


async def test_sync_request_returns_the_reply_model(served: tuple[Server, set[str]]) -> None:
    server, _ = served

    def talk() -> tuple[Answer, ReplyValidationError]:
        with SyncClient("127.0.0.1", server.port, timeout=5) as client:
            answer = client.request({"n": 1}, reply=Answer)
            with pytest.raises(ReplyValidationError) as caught:
                client.request({"kind": "bad"}, reply=Answer)
            return answer, caught.value

    answer, error = await asyncio.to_thread(talk)
    assert answer.n == 1 and error.reply["kind"] == "bad"


def test_test_clients_return_the_reply_model() -> None:
    server, _ = answering_server()
    with TestClient(server) as client:
        assert client.request({"n": 1}, reply=Answer).n == 1
        with pytest.raises(ReplyValidationError):
            client.request({"kind": "bad"}, reply=Answer)
        with pytest.raises(ErrorReply, match="ERR_NO_HANDLER"):
            client.request({"n": "x"}, reply=Answer)

    async def talk() -> Answer:
        async with AsyncTestClient(server) as client:
            return await client.request({"n": 2}, reply=Answer)

    assert asyncio.run(talk()).n == 2


# -- concurrency and pools -----------------------------------------------------------------


async def gather_answers(client: Any, count: int) -> list[Answer]:
    """``count`` concurrent requests, each sleeping a little (so replies would cross)."""
    asks = [Ask(n=i, sleep=(i % 3) * 0.002) for i in range(count)]
    return list(await asyncio.gather(*(client.request(ask, reply=Answer) for ask in asks)))


async def test_concurrent_requests_take_turns(served: tuple[Server, set[str]]) -> None:
    server, sessions = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        answers = await gather_answers(client, 60)
    assert [a.n for a in answers] == list(range(60))
    assert len(sessions) == 1


async def test_a_pool_spreads_requests_over_its_connections(served: tuple[Server, set[str]]) -> None:
    server, sessions = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5, pool_size=4) as client:
        answers = await gather_answers(client, 80)
    assert [a.n for a in answers] == list(range(80))
    assert len(sessions) == 4
    assert len({a.session for a in answers}) == 4


async def test_the_sync_client_is_safe_across_threads(served: tuple[Server, set[str]]) -> None:
    server, sessions = served

    def hammer(client: SyncClient, start: int, results: dict[int, int]) -> None:
        for n in range(start, start + 40):
            results[n] = client.request({"n": n}, reply=Answer).n

    def run(pool_size: int) -> dict[int, int]:
        results: dict[int, int] = {}
        with SyncClient("127.0.0.1", server.port, timeout=5, pool_size=pool_size) as client:
            threads = [threading.Thread(target=hammer, args=(client, i * 100, results)) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        return results

    for pool_size in (1, 3):
        sessions.clear()
        results = await asyncio.to_thread(run, pool_size)
        assert len(results) == 240 and all(k == v for k, v in results.items())
        assert 1 <= len(sessions) <= pool_size


async def test_test_clients_take_turns_too() -> None:
    server, _ = answering_server()
    async with AsyncTestClient(server) as client:
        answers = await gather_answers(client, 30)
    assert [a.n for a in answers] == list(range(30))

    def threads() -> list[int]:
        got: list[int] = []
        with TestClient(server) as sync:
            workers = [threading.Thread(target=lambda i=i: got.append(sync.request({"n": i}, reply=Answer).n)) for i in range(20)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(30)
        return got

    assert sorted(await asyncio.to_thread(threads)) == list(range(20))


def test_pool_size_is_checked() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        AsyncClient("127.0.0.1", 1, pool_size=0)
    with pytest.raises(ValueError, match="pool_size"):
        SyncClient("127.0.0.1", 1, pool_size=0)


# -- a request that does not finish never puts the connection out of step -----------------


async def test_a_late_reply_is_not_the_next_answer_async(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=0.1) as client:
        with pytest.raises(ClientTimeout):
            await client.request({"n": 1, "sleep": 0.3})
        client.timeout = 10  # the rest must not time out on a busy machine
        await asyncio.sleep(0.4)  # the late reply has arrived by now
        assert (await client.request({"n": 2}, reply=Answer)).n == 2
        task = asyncio.create_task(client.request({"n": 3, "sleep": 0.2}))
        await asyncio.sleep(0.05)
        task.cancel()  # cancelled after sending: its reply is still coming
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        assert (await client.request({"n": 4}, reply=Answer)).n == 4
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.request({"n": 5, "sleep": 0.2}), 0.05)
        assert (await client.request({"n": 6}, reply=Answer)).n == 6  # the reply may be in flight now


async def test_a_late_reply_is_not_the_next_answer_sync(served: tuple[Server, set[str]]) -> None:
    server, _ = served

    def talk() -> list[int]:
        with SyncClient("127.0.0.1", server.port, timeout=0.1) as client:
            with pytest.raises(ClientTimeout):
                client.request({"n": 1, "sleep": 0.3})
            client.timeout = 10
            time.sleep(0.4)  # the late reply has arrived by now
            return [client.request({"n": 2}, reply=Answer).n, client.request({"n": 3}, reply=Answer).n]

    assert await asyncio.to_thread(talk) == [2, 3]


async def test_a_late_reply_is_not_the_next_answer_in_the_test_client() -> None:
    server, _ = answering_server()
    async with AsyncTestClient(server, timeout=0.05) as client:
        with pytest.raises(ClientTimeout):
            await client.request({"n": 1, "sleep": 0.2})
        client.timeout = 10
        await asyncio.sleep(0.3)
        assert (await client.request({"n": 2}, reply=Answer)).n == 2


async def test_the_others_in_the_queue_are_answered_after_a_timeout(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=0.5, protocol=1) as client:  # v1: a queue
        slow = client.request({"n": 0, "sleep": 1.2})
        fast = [client.request({"n": n}, reply=Answer) for n in range(1, 6)]
        results = await asyncio.gather(slow, *fast, return_exceptions=True)
    assert isinstance(results[0], ClientTimeout)
    assert [r.n for r in results[1:] if isinstance(r, Answer)] == [1, 2, 3, 4, 5]


async def test_on_v2_a_slow_request_holds_up_no_other(served: tuple[Server, set[str]]) -> None:
    """Once the server answered in v2 (the first request of a connection goes alone), the
    others are answered while the slow one runs, and it times out on its own."""
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        first = await client.request({"n": 0}, reply=Answer)
        slow = asyncio.ensure_future(client.request({"n": 0, "sleep": 3}, timeout=0.5))
        fast = await asyncio.gather(*(client.request({"n": n}, reply=Answer) for n in range(1, 6)))
        assert not slow.done()  # answered before the slow one ended
        with pytest.raises(ClientTimeout):
            await slow
        assert [r.n for r in fast] == [1, 2, 3, 4, 5]
        assert {r.session for r in fast} == {first.session}


async def test_a_packet_no_request_asked_for_drops_the_connection(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5, protocol=1) as client:  # v1 on purpose
        first = await client.request({"n": 1, "twice": True}, reply=Answer)  # a second reply follows
        await asyncio.sleep(0.05)
        second = await client.request({"n": 2}, reply=Answer)
        assert second.n == 2 and second.session != first.session
    async with AsyncClient("127.0.0.1", server.port, timeout=5, reconnect=False, protocol=1) as client:
        await client.request({"n": 1, "twice": True})
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectionClosed, match="no request asked for"):
            await client.request({"n": 2})


async def test_on_v2_a_packet_no_request_asked_for_is_pushed(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5, reconnect=False) as client:
        first = await client.request({"n": 1, "twice": True}, reply=Answer)  # a second packet follows
        pushed = await asyncio.wait_for(client.pushed().__anext__(), 5)
        assert Answer.model_validate(pushed) == first
        second = await client.request({"n": 2}, reply=Answer)
        assert second.n == 2 and second.session == first.session  # the connection is kept

    def talk() -> tuple[Answer, dict[str, Any], Answer]:
        with SyncClient("127.0.0.1", server.port, timeout=5, reconnect=False) as sync:
            first = sync.request({"n": 1, "twice": True}, reply=Answer)
            return first, next(iter(sync.pushed())), sync.request({"n": 2}, reply=Answer)

    first, pushed, second = await asyncio.to_thread(talk)
    assert Answer.model_validate(pushed) == first and second.session == first.session


# -- reconnecting ---------------------------------------------------------------------------


async def test_reconnects_after_the_server_closed(served: tuple[Server, set[str]]) -> None:
    server, sessions = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        for n in range(30):  # no pause: the close may still be on its way
            assert (await client.request({"n": n, "close": True}, reply=Answer)).n == n
    assert len(sessions) == 30

    def talk() -> list[int]:
        with SyncClient("127.0.0.1", server.port, timeout=5) as sync:
            return [sync.request({"n": n, "close": True}, reply=Answer).n for n in range(30)]

    assert await asyncio.to_thread(talk) == list(range(30))


async def test_a_request_the_server_read_is_never_sent_twice(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    SILENT_CALLS.clear()
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        for n in range(10):
            await client.request({"n": n})  # a used connection: a close could be a stale one
            with pytest.raises(ConnectionClosed):
                await client.request({"n": n, "silent": True})

    def talk() -> None:
        with SyncClient("127.0.0.1", server.port, timeout=5) as sync:
            for n in range(10, 20):
                sync.request({"n": n})
                with pytest.raises(ConnectionClosed):
                    sync.request({"n": n, "silent": True})

    await asyncio.to_thread(talk)
    assert SILENT_CALLS == list(range(20))


def test_test_clients_reconnect_after_the_server_closed() -> None:
    server, sessions = answering_server()
    with TestClient(server) as client:
        assert [client.request({"n": n, "close": True}, reply=Answer).n for n in range(5)] == list(range(5))
    assert len(sessions) == 5


async def test_reconnect_false_raises_until_connect(served: tuple[Server, set[str]]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5, reconnect=False) as client:
        await client.request({"n": 1, "close": True})
        await asyncio.sleep(0.05)
        for _ in range(2):
            with pytest.raises(ConnectionClosed, match=f"closed the connection.*127.0.0.1:{server.port}"):
                await client.request({"n": 2})
        await client.connect()
        assert (await client.request({"n": 3}, reply=Answer)).n == 3

    def talk() -> None:
        with SyncClient("127.0.0.1", server.port, timeout=5, reconnect=False) as sync:
            sync.request({"n": 1, "close": True})
            time.sleep(0.05)
            sync.request({"n": 2})

    with pytest.raises(ConnectionClosed):
        await asyncio.to_thread(talk)


async def test_reconnects_after_a_server_restart() -> None:
    server, _ = answering_server()
    async with running(server):
        port = server.port
        client = AsyncClient("127.0.0.1", port, timeout=5)
        sync = SyncClient("127.0.0.1", port, timeout=5)
        before = await client.request({"n": 1}, reply=Answer)
        sync_before = await asyncio.to_thread(sync.request, {"n": 1}, reply=Answer)
    again, _ = answering_server()
    again.port = port
    async with running(again):
        after = await client.request({"n": 2}, reply=Answer)
        sync_after = await asyncio.to_thread(sync.request, {"n": 2}, reply=Answer)
    await client.close()
    sync.close()
    assert after.n == 2 and after.session != before.session
    assert sync_after.n == 2 and sync_after.session != sync_before.session


async def test_connect_errors_name_the_address() -> None:
    server = make_server()
    async with running(server):
        port = server.port
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        await AsyncClient("127.0.0.1", port, timeout=2).request({})
    with pytest.raises(ConnectionRefusedError, match=f"127.0.0.1:{port}"):
        SyncClient("127.0.0.1", port, timeout=2).request({})
    with pytest.raises(OSError, match="no-such-host.invalid:1"):
        SyncClient("no-such-host.invalid", 1, timeout=2).connect()


# -- the peer is not a client ------------------------------------------------------------------


def test_the_peer_called_like_a_connection_points_to_the_client() -> None:
    with pytest.raises(TypeError, match=r"asyncapy\.client\.Client"):
        asyncapy.Client("127.0.0.1", 1500)


# -- one code for both clients ------------------------------------------------------------------


def test_the_blocking_client_is_generated_from_the_async_one() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


async def test_a_request_cancelled_while_waiting_its_turn_leaves_the_connection(served: tuple[Server, set[str]]) -> None:
    server, sessions = served
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        first = asyncio.create_task(client.request({"n": 1, "sleep": 0.1}, reply=Answer))
        await asyncio.sleep(0.02)
        waiting = asyncio.create_task(client.request({"n": 2}, reply=Answer))
        await asyncio.sleep(0.02)
        waiting.cancel()  # never sent: nothing to fall out of step with
        assert (await first).n == 1
        with pytest.raises(asyncio.CancelledError):
            await waiting
        third = await client.request({"n": 3}, reply=Answer)
    assert third.n == 3 and third.session == (await first).session and len(sessions) == 1


async def test_over_tls_too() -> None:
    """Typed concurrent requests, pools and reconnects over TLS, with both clients."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server, sessions = answering_server()
    server.ssl = server_ctx
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, ssl_context=client_ctx, timeout=5, pool_size=3) as client:
            answers = await gather_answers(client, 30)
            assert [a.n for a in answers] == list(range(30))
            for n in range(5):
                assert (await client.request({"n": n, "close": True}, reply=Answer)).n == n

        def talk() -> list[int]:
            # A pause after each close: over TLS the server's end keeps reading until the
            # client's close_notify, so a request racing the close gets no TCP reset to
            # prove it unread (see docs/clients.md); the asyncio client sees the close first.
            with SyncClient("127.0.0.1", server.port, ssl_context=client_ctx, timeout=5) as sync:
                answers = []
                for n in range(8):
                    answers.append(sync.request({"n": n, "close": n % 2 == 0}, reply=Answer).n)
                    time.sleep(0.05 if n % 2 == 0 else 0)
                return answers

        assert await asyncio.to_thread(talk) == list(range(8))

        def stranger() -> None:
            SyncClient("127.0.0.1", server.port, ssl_context=ssl.create_default_context(), timeout=5).connect()

        with pytest.raises(ssl.SSLCertVerificationError, match=f"127.0.0.1:{server.port}"):
            await asyncio.to_thread(stranger)


@pytest.mark.parametrize("pool_size", [1, 3])
async def test_no_answer_ever_goes_to_the_wrong_request(served: tuple[Server, set[str]], pool_size: int) -> None:
    """Concurrent requests, some timing out and some cancelled at random moments: every
    request that returns has its own answer (a bounded random soak, seeded)."""
    server, _ = served
    rng = random.Random(11)
    outcomes = {"answered": 0, "abandoned": 0}

    async def one(client: AsyncClient, n: int) -> None:
        ask = Ask(n=n, sleep=rng.choice([0, 0, 0.005, 0.02]))
        try:
            answer = await asyncio.wait_for(client.request(ask, reply=Answer), rng.choice([0.01, 0.03, 1.0, 1.0]))
        except (asyncio.TimeoutError, ClientTimeout):
            outcomes["abandoned"] += 1
            return
        assert answer.n == n
        outcomes["answered"] += 1

    async with AsyncClient("127.0.0.1", server.port, timeout=rng.choice([0.015, 5]), pool_size=pool_size) as client:
        for start in range(0, 300, 30):
            await asyncio.gather(*(one(client, n) for n in range(start, start + 30)))
    assert outcomes["answered"] >= 10 and outcomes["abandoned"] >= 1, outcomes


async def test_no_answer_ever_goes_to_the_wrong_thread(served: tuple[Server, set[str]]) -> None:
    """The blocking client shared by threads, with requests that time out: the same."""
    server, _ = served
    counts = {"answered": 0, "abandoned": 0}
    wrong: list[tuple[int, int]] = []
    lock = threading.Lock()

    def hammer(client: SyncClient, seed: int) -> None:
        rng = random.Random(seed)
        for n in range(seed * 1000, seed * 1000 + 30):
            try:
                answer = client.request(Ask(n=n, sleep=rng.choice([0, 0, 0.002, 0.04])), reply=Answer)
            except ClientTimeout:
                with lock:
                    counts["abandoned"] += 1
                continue
            with lock:
                counts["answered"] += 1
                if answer.n != n:
                    wrong.append((n, answer.n))

    def run() -> None:
        with SyncClient("127.0.0.1", server.port, timeout=0.02, pool_size=2) as client:
            threads = [threading.Thread(target=hammer, args=(client, seed)) for seed in range(1, 6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)

    await asyncio.to_thread(run)
    assert wrong == []
    assert counts["answered"] + counts["abandoned"] == 150
    assert counts["answered"] >= 10 and counts["abandoned"] >= 1, counts
