"""Prometheus metrics: scraped over HTTP after known traffic, in one process and over 2 workers."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from asyncapy import Client, Depends, Packet
from asyncapy.client import AsyncClient
from asyncapy.serve.connection import Connection
from asyncapy.ops.metrics import BUCKETS, ProcessMetrics, merge

from ..conftest import make_server, read_frame, running
from ..procs import ROOT, free_port, stop_process, wait_for_port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics: sample name and sorted labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def packets(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["handler"], dict(labels)["outcome"]): value
        for (name, labels), value in samples.items()
        if name == "asyncapy_packets_total"
    }


async def test_one_process_counts_what_was_sent() -> None:
    server = make_server(metrics_port=0, max_connections=2)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        if packet.get("fail"):
            raise RuntimeError("on purpose")
        await client.send(packet)

    async with running(server):
        assert server.metrics_port not in (None, 0)
        one, two = (AsyncClient("127.0.0.1", server.port, protocol=1) for _ in range(2))  # counted in v1 bytes
        async with one, two:
            for i in range(30):
                request = {"n": i, "fail": i % 10 == 0}
                reply = await (one if i % 2 else two).request(request)
                assert ("error" in reply) == (i % 10 == 0)
            # A third connection is refused: max_connections=2.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await reader.read()
            writer.close()
            samples = await asyncio.to_thread(scrape, server.metrics_port)
            assert samples["asyncapy_connections", ()] == 2
        name = echo.__qualname__
        assert packets(samples) == {(name, "OK"): 27, (name, "ERR_INTERNAL"): 3}
        assert samples["asyncapy_packet_duration_seconds_count", (("handler", name),)] == 30
        assert samples["asyncapy_packet_duration_seconds_bucket", (("handler", name), ("le", "+Inf"))] == 30
        assert samples["asyncapy_connections_refused_total", (("reason", "ERR_SERVER_BUSY"),)] == 1
        request_bytes = sum(6 + len(f'{{"n":{i},"fail":{"true" if i % 10 == 0 else "false"}}}') for i in range(30))
        assert samples["asyncapy_bytes_received_total", ()] == request_bytes
        assert samples["asyncapy_bytes_sent_total", ()] > request_bytes  # echoes, 3 errors, the refusal


def test_two_workers_are_summed() -> None:
    """``asyncapy run --workers 2 --metrics-port``: per handler and outcome, what was sent."""
    port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "asyncapy", "run", "tests.servers.observed:server", "--port", str(port)]
    cmd += ["--workers", "2", "--metrics-port", str(metrics_port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        sent, pids = asyncio.run(_traffic(port))
        assert len(pids) == 2, f"all connections went to one worker: {pids}"
        deadline = time.monotonic() + 15
        while True:  # each worker's snapshot is at most SNAPSHOT_EVERY seconds old
            seen = packets(scrape(metrics_port))
            if seen == sent or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == sent
    finally:
        err = stop_process(proc)
    assert proc.returncode == 0, err


async def _traffic(port: int) -> tuple[dict[tuple[str, str], float], set[int]]:
    """Known traffic over 16 connections: replies, misses, failures, two groups."""
    sent: Counter[tuple[str, str]] = Counter()
    pids: set[int] = set()

    async def one_connection(c: int) -> None:
        async with AsyncClient("127.0.0.1", port) as client:
            for i in range(10):
                if i == 3:
                    reply = await client.request({"nobody": i})
                    sent["-", "ERR_NO_HANDLER"] += 1
                elif i == 5:
                    reply = await client.request({"name": "boom"})
                    sent["person", "ERR_INTERNAL"] += 1
                elif i == 7:
                    reply = await client.request({"name": "x", "audit": c})
                    sent["audit,person", "OK"] += 1
                    pids.add(reply["pid"])
                else:
                    reply = await client.request({"name": f"c{c}"})
                    sent["person", "OK"] += 1

    for _ in range(5):  # SO_REUSEPORT spreads connections by hash: keep connecting until both served
        await asyncio.gather(*(one_connection(c) for c in range(16)))
        if len(pids) >= 2:
            break
    return {key: float(n) for key, n in sent.items()}, pids


def test_merge_sums_snapshots() -> None:
    a, b = ProcessMetrics(), ProcessMetrics()
    a.packet("h", "OK", 0.00001)
    a.packet("h", "OK", 0.2)
    b.packet("h", "OK", 99.0)
    b.packet("-", "ERR_NO_HANDLER", 0.001)
    a.open_connections, b.open_connections = (lambda: 3), (lambda: 4)
    b.refuse("ERR_SERVER_BUSY")
    total = merge([a.snapshot(), b.snapshot()])
    assert total["packets"] == {("h", "OK"): 3, ("-", "ERR_NO_HANDLER"): 1}
    row = total["durations"]["h"]
    assert row[0] == 1 and row[BUCKETS.index(0.25)] == 1 and row[len(BUCKETS)] == 1  # the last: +Inf
    assert row[-1] == 0.00001 + 0.2 + 99.0
    assert total["connections"] == 7 and total["refused"] == {"ERR_SERVER_BUSY": 1}


class Counted(BaseModel):
    n: int


def ticket() -> Iterator[int]:
    """A generator dependency: the handler's call writes the reply itself and returns None."""
    yield 1


@pytest.mark.parametrize("dependency", [False, True], ids=["plain", "generator-dependency"])
@pytest.mark.parametrize("access_log", [False, True], ids=["metrics", "metrics+access_log"])
async def test_a_handler_that_returns_its_reply_is_reported_on_every_path(
    tmp_path: Path, access_log: bool, dependency: bool
) -> None:
    """A handler annotated ``-> Model`` runs without a coroutine around it: each of its packets is still
    counted once with its outcome, whether it replies, fails, waits, or (with a generator dependency,
    whose teardown follows the reply) its call returns None."""
    log = tmp_path / "access.log"
    server = make_server(metrics_port=0, **({"access_log": str(log)} if access_log else {}))

    async def count(client: Client, packet: Packet, tick: int = 1) -> Counted:
        if "wait" in packet:
            await asyncio.sleep(0.01)  # finished in the host task
        if "fail" in packet:
            raise RuntimeError("on purpose")
        if "none" in packet:
            return None  # type: ignore[return-value]  # its reply check makes it ERR_INTERNAL
        return Counted(n=tick)

    if dependency:

        async def counted(client: Client, packet: Packet, tick: Annotated[int, Depends(ticket)]) -> Counted:
            return await count(client, packet, tick)

        server.add_handler()(counted)
        name = counted.__qualname__
    else:
        server.add_handler()(count)
        name = count.__qualname__
    kinds = ["ok", "none", "ok", "fail", "ok", "wait", "ok", "wait,none", "ok", "wait,fail", "ok", "ok"]
    expected = {"ok": "OK", "none": "ERR_INTERNAL", "fail": "ERR_INTERNAL", "wait": "OK"}
    outcomes = [expected[kind.split(",")[-1]] for kind in kinds]
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        frames = [frame(json.dumps({k: 1 for k in kind.split(",")}).encode()) for kind in kinds]
        writer.write(b"".join(frames[:8]))  # pipelined: one read, handled eagerly, then in the host task
        for _ in range(8):
            await read_frame(reader)
        for one in frames[8:]:  # one read each: the last packet of a read ends with it
            writer.write(one)
            await read_frame(reader)
        assert server.metrics_port is not None
        samples = await asyncio.to_thread(scrape, server.metrics_port)
        writer.close()
        await writer.wait_closed()
    want = Counter((name, outcome) for outcome in outcomes)
    assert packets(samples) == {key: float(n) for key, n in want.items()}
    assert samples["asyncapy_packet_duration_seconds_count", (("handler", name),)] == len(kinds)
    if access_log:
        lines = log.read_text().splitlines()
        assert [line.split()[-2] for line in lines] == outcomes
        waits = [int(line.split()[-1][:-2]) for line, kind in zip(lines, kinds) if kind.startswith("wait")]
        assert min(waits) >= 10_000, lines


def frame(payload: bytes) -> bytes:
    return (len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload


class OnlyA(BaseModel):
    a: int


class OnlyB(BaseModel):
    b: int


async def test_handlers_of_one_name_are_told_apart(tmp_path: Path) -> None:
    """Two handlers made by one factory share a ``__qualname__``: each packet is still counted under its route."""
    log = tmp_path / "access.log"
    server = make_server(access_log=str(log))

    def make(model: type[BaseModel]) -> Any:
        async def handler(client: Client, packet: Packet) -> dict[str, str]:
            return {"from": model.__name__}

        handler.__annotations__ = {"client": Client, "packet": Packet[model], "return": dict[str, str]}  # type: ignore[valid-type]
        return handler

    first = server.add_handler()(make(OnlyA))
    second = server.add_handler()(make(OnlyB))
    assert first.__qualname__ == second.__qualname__
    routes = [route.name for route in server.compile().routes]
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"a": 1}) == {"from": "OnlyA"}
            assert await client.request({"b": 1}) == {"from": "OnlyB"}
            ctx = server._ctx
            assert ctx is not None and ctx.pipeline.observer is not None
            names = ctx.pipeline.observer.names
            assert names is not None and len(names) == 2  # named by one lookup, not recorded
    assert [line.split()[-3] for line in log.read_text().splitlines()] == routes
