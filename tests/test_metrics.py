"""Prometheus metrics: scraped over HTTP after known traffic, in one process and over 2 workers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from asyncapy import Client, Packet
from asyncapy.client import AsyncClient
from asyncapy.metrics import BUCKETS, ProcessMetrics, merge

from .conftest import make_server, running
from .procs import ROOT, free_port, wait_for_port


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
        async with AsyncClient("127.0.0.1", server.port) as one, AsyncClient("127.0.0.1", server.port) as two:
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
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
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
