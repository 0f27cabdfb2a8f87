"""Typed topics, measured: ``python benchmarks/topics.py``.

1. Fan-out in one process: one publish to N subscriptions (N = 10,000), each read by its
   own task (``async for`` over ``topic.subscribe()``), against the same loop over N
   ``asyncio.Queue`` (``put_nowait`` to each, a task per queue awaiting ``get``), in the
   same run. Each event is published, then the publisher waits until every subscriber
   read it (the worst case: one task wake-up per event per subscriber). Figure: events
   delivered per second, and the ratio to the queues.
2. Across two processes through a local ``redis-server``: a publisher process (this one)
   and a subscriber process. Publishes per second (each publish awaited, back to back),
   then publish-to-delivery latency p50/p99 of paced publishes (one every ``--pace`` s;
   ``time.monotonic`` is one clock for both processes).

Options: ``--subscribers N`` (10,000), ``--events N`` (30), ``--repeat N`` (3, best kept),
``--publishes N`` (20,000), ``--latency N`` (2,000), ``--pace S`` (0.001), ``--no-redis``.
The machine may be shared: both rows of 1 run together; repeat before believing a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pydantic import BaseModel  # noqa: E402

from asyncapy.shared.topics import Topic  # noqa: E402

NAMESPACE = "bench-topics"


class Event(BaseModel):
    seq: int
    sent: float = 0.0
    symbol: str = "ACME"


# -- 1. fan-out in one process ------------------------------------------------------------------


class Countdown:
    """Set when ``n`` readers have each read the current event."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.left = n
        self.done = asyncio.Event()

    def reset(self) -> None:
        self.left = self.n
        self.done.clear()

    def hit(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


async def fanout_topic(subscribers: int, events: int) -> float:
    """Seconds to deliver ``events`` events to ``subscribers`` subscriptions (one at a time)."""
    topic = Topic("bench", Event, max_buffered=events + 1)
    count = Countdown(subscribers)
    entered = Countdown(subscribers)

    async def reader() -> None:
        async with topic.subscribe() as stream:
            entered.hit()
            async for _ in stream:
                count.hit()

    tasks = [asyncio.create_task(reader()) for _ in range(subscribers)]
    await entered.done.wait()
    event = Event(seq=0)
    start = time.perf_counter()
    for _ in range(events):
        count.reset()
        await topic.publish(event)
        await count.done.wait()
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert topic.subscribers == 0
    return elapsed


async def fanout_queues(subscribers: int, events: int) -> float:
    """The same with a raw loop of ``asyncio.Queue``: the baseline."""
    queues: list[asyncio.Queue[Event]] = [asyncio.Queue(events + 1) for _ in range(subscribers)]
    count = Countdown(subscribers)

    async def reader(queue: asyncio.Queue[Event]) -> None:
        while True:
            await queue.get()
            count.hit()

    tasks = [asyncio.create_task(reader(q)) for q in queues]
    await asyncio.sleep(0)
    event = Event(seq=0)
    start = time.perf_counter()
    for _ in range(events):
        count.reset()
        for queue in queues:
            queue.put_nowait(event)
        await count.done.wait()
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


def bench_fanout(subscribers: int, events: int, repeat: int) -> None:
    best = {"topic": float("inf"), "queues": float("inf")}
    for _ in range(repeat):
        best["queues"] = min(best["queues"], asyncio.run(fanout_queues(subscribers, events)))
        best["topic"] = min(best["topic"], asyncio.run(fanout_topic(subscribers, events)))
    delivered = subscribers * events
    raw = delivered / best["queues"]
    print(f"## Fan-out in one process: {subscribers:,} subscribers, {events} events, best of {repeat}\n")
    print("| row | events delivered/s | ratio to raw |")
    print("|---|---:|---:|")
    print(f"| raw asyncio.Queue loop | {raw:,.0f} | baseline |")
    print(f"| topic.publish -> subscribe() | {delivered / best['topic']:,.0f} | {raw and (delivered / best['topic']) / raw:.2f} |")
    print()


# -- 2. across two processes through Redis ---------------------------------------------------------


async def subscriber(url: str, expected: int) -> None:
    """The subscriber process: report when subscribed, then the latency of each phase."""
    from asyncapy.shared.redis import RedisState

    state = RedisState(url, namespace=NAMESPACE, timeout=2.0)
    topic = Topic("bench", Event, max_buffered=1_000_000)
    topic.bind(state)
    async with topic.subscribe() as stream:
        print("ready", flush=True)
        latencies: list[float] = []
        received = 0
        async for event in stream:
            if event.seq < 0:  # the end of a phase
                print(json.dumps({"received": received, "latencies": latencies}), flush=True)
                latencies, received = [], 0
                if event.seq == -2:
                    break
                continue
            received += 1
            if event.sent:
                latencies.append(time.monotonic() - event.sent)
    await state.aclose()
    assert expected >= 0


async def publisher(url: str, proc: subprocess.Popen[str], publishes: int, latency: int, pace: float) -> None:
    from asyncapy.shared.redis import RedisState

    state = RedisState(url, namespace=NAMESPACE, timeout=2.0)
    topic = Topic("bench", Event)
    topic.bind(state)
    event = Event(seq=1)
    start = time.perf_counter()
    for _ in range(publishes):
        await topic.publish(event)
    elapsed = time.perf_counter() - start
    await topic.publish(Event(seq=-1))
    assert proc.stdout is not None
    first = json.loads(await asyncio.to_thread(proc.stdout.readline))
    for seq in range(latency):
        await topic.publish(Event(seq=seq, sent=time.monotonic()))
        await asyncio.sleep(pace)
    await topic.publish(Event(seq=-2))
    second = json.loads(await asyncio.to_thread(proc.stdout.readline))
    await state.aclose()
    lat = sorted(second["latencies"])
    p50 = statistics.median(lat) * 1e6 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6 if lat else float("nan")
    print("## Across two processes through Redis (one publisher, one subscriber process)\n")
    print("| row | figure |")
    print("|---|---:|")
    print(f"| publishes/s (each awaited, back to back) | {publishes / elapsed:,.0f} |")
    print(f"| delivered of those | {first['received']:,} / {publishes:,} |")
    print(f"| publish-to-delivery p50 ({len(lat):,} paced, one every {pace * 1000:g} ms) | {p50:,.0f} µs |")
    print(f"| publish-to-delivery p99 | {p99:,.0f} µs |")
    print()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, deadline: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; exit if ``proc`` died or time ran out."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listened on {port} within {deadline} s")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` of our own on a free port (no persistence); its URL. Ended on leaving."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/local/bin")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server (or pass --no-redis)")
    port = free_port()
    redis = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, 15.0, redis)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        redis.terminate()
        redis.wait(15)


def bench_redis(publishes: int, latency: int, pace: float) -> None:
    with redis_server() as url:
        cmd = [sys.executable, __file__, "--subscriber", url]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("the subscriber process did not start")
            asyncio.run(publisher(url, proc, publishes, latency, pace))
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--latency", type=int, default=2_000)
    parser.add_argument("--pace", type=float, default=0.001)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--subscriber", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscriber(args.subscriber, 0))
        return
    print(f"`python benchmarks/topics.py {' '.join(sys.argv[1:])}`, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    bench_fanout(args.subscribers, args.events, args.repeat)
    if not args.no_redis:
        bench_redis(args.publishes, args.latency, args.pace)


if __name__ == "__main__":
    main()


