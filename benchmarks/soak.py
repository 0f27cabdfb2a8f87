"""Soak: mixed good and bad traffic against a server in a subprocess, for a set time.

    .venv/bin/python benchmarks/soak.py --duration 30
    .venv/bin/python benchmarks/soak.py --duration 300 --access-log /tmp/soak-access.log --metrics

``--access-log FILE`` has the server write its access log to FILE (the report counts its
lines and their longest, which must be under 8 KiB); ``--metrics``
serves Prometheus ``/metrics`` on a port the OS picks, scraped every second as Prometheus
would (the report gives the series of the last scrape).

Traffic: pipelining echo clients (every reply checked), clients sending each class of
bad input, clients vanishing mid-frame (FIN and RST), slow-but-legal clients and
slowloris clients. Reports, as one JSON line: replies lost for valid packets (must be 0),
server RSS growth after warm-up, server file descriptors before and after, and the
count of every kind of input sent. Exit status 1 when a reply was lost or descriptors
did not return to baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncapy import Client, Packet, Server  # noqa: E402
from asyncapy.wire.codecs import get_codec  # noqa: E402
from asyncapy.wire.protocol import encode_frame  # noqa: E402

JSON = get_codec("json")
ZIPROTO = get_codec("ziproto")
#: The soak server's frame timeout: short, so slowloris clients are cut often.
SERVER_TIMEOUT = 2.0
#: The soak server's packet limit: small, so oversize headers are cheap to send.
SERVER_MAX_PACKET = 64 * 1024
#: Packets an echo client lets be in flight before waiting for replies.
WINDOW = 200
#: An echo client reconnects after this many packets, so connections churn.
PACKETS_PER_CONNECTION = 2000
#: Seconds the run waits for outstanding replies, and for descriptors to settle.
SETTLE = 10.0
#: Clients of each kind.
MIX = {"echo": 4, "invalid": 2, "vanish": 2, "slow": 1, "slowloris": 1}


# -- the server side -----------------------------------------------------------


def serve(access_log: str | None, metrics: bool) -> None:
    """Run the soak server (the subprocess): echo, and a handler that fails on request."""

    class PortServer(Server):
        async def start_serving(self) -> None:
            await super().start_serving()
            print(self.port, self.metrics_port or 0, flush=True)

    server = PortServer(
        "127.0.0.1", 0, timeout=SERVER_TIMEOUT, max_packet_size=SERVER_MAX_PACKET, logging_level=logging.CRITICAL,
        access_log=access_log or False, metrics_port=0 if metrics else None,
    )  # fmt: skip

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        if "fail" in packet:
            raise RuntimeError("asked to fail")
        await client.send(packet)

    server.start()


# -- measuring the server --------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the clients -------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.sent = Counter[str]()
        self.replies = Counter[str]()
        self.valid_sent = 0
        self.valid_answered = 0
        self.mismatches = 0


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    length = int.from_bytes(await reader.readexactly(4), "big")
    rest = await reader.readexactly(length)
    value: dict[str, Any] = (JSON if rest[1] == 0 else ZIPROTO).decode(rest[2:])
    return value


async def echo_client(stats: Stats, stop: asyncio.Event) -> None:
    """Pipelines numbered packets (JSON and ZiProto) and checks every reply, in order."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        await _echo_session(reader, writer, stats, stop)
        writer.close()


async def _echo_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats, stop: asyncio.Event) -> None:
    expected: list[int] = []
    receiving = asyncio.create_task(_echo_replies(reader, expected, stats))
    for n in range(PACKETS_PER_CONNECTION):
        if stop.is_set():
            break
        while len(expected) >= WINDOW:
            await asyncio.sleep(0.001)
        codec = ZIPROTO if n % 3 == 0 else JSON
        writer.write(encode_frame(codec.encode({"n": n, "pad": "p" * (n % 500)}), codec.id))
        expected.append(n)
        stats.valid_sent += 1
        stats.sent["valid"] += 1
        if n % 50 == 0:
            await writer.drain()
    await asyncio.wait_for(receiving_done(expected), SETTLE)
    receiving.cancel()


async def receiving_done(expected: list[int]) -> None:
    while expected:
        await asyncio.sleep(0.005)


async def _echo_replies(reader: asyncio.StreamReader, expected: list[int], stats: Stats) -> None:
    while True:
        reply = await read_frame(reader)
        if reply.get("n") != expected[0]:
            stats.mismatches += 1
        expected.pop(0)
        stats.valid_answered += 1


def _frame(length: int, version: int, encoding: int, payload: bytes) -> bytes:
    return length.to_bytes(4, "big") + bytes((version, encoding)) + payload


#: Each class of bad input, and the reply it must get.
BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "bad_version": (_frame(6, 7, 0, b"{}{}"), "ERR_HEADER_INVALID"),
    "bad_encoding": (_frame(4, 22, 9, b"{}"), "ERR_HEADER_INVALID"),
    "short_length": ((1).to_bytes(4, "big") + b"\x16", "ERR_HEADER_INVALID"),  # body of 1 byte
    "bad_json": (encode_frame(b'{"a": ', 0), "ERR_REQUEST_MALFORMED"),
    "bad_ziproto": (encode_frame(b"\xc1\xc1", 1), "ERR_REQUEST_MALFORMED"),
    "not_a_map": (encode_frame(b"[1, 2, 3]", 0), "ERR_REQUEST_MALFORMED"),
    "failing_handler": (encode_frame(b'{"fail": 1}', 0), "ERR_INTERNAL"),
}


async def invalid_client(stats: Stats, stop: asyncio.Event) -> None:
    """Sends every class of bad input; each must get its error and leave the connection usable."""
    rng = random.Random(1)
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        for _ in range(200):
            if stop.is_set():
                break
            name = rng.choice(list(BAD_INPUTS))
            data, code = BAD_INPUTS[name]
            writer.write(data)
            stats.sent[name] += 1
            reply = await read_frame(reader)
            stats.replies[name] += reply.get("error") == code
        await _oversize(reader, writer, stats)


async def _oversize(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats) -> None:
    """A header over max_packet_size: answered from the header alone, then closed."""
    writer.write(_frame(SERVER_MAX_PACKET + 10, 22, 0, b"x" * 100))
    stats.sent["oversize"] += 1
    reply = await read_frame(reader)
    stats.replies["oversize"] += reply.get("error") == "ERR_PAYLOAD_TOO_LARGE"
    await reader.read()
    writer.close()


async def vanish_client(stats: Stats, stop: asyncio.Event) -> None:
    """Sends half a frame (or random garbage), then closes with a FIN or an RST."""
    rng = random.Random(2)
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        data = encode_frame(JSON.encode({"v": "x" * rng.randrange(1000)}), JSON.id)
        writer.write(data[: rng.randrange(1, len(data))] if rng.random() < 0.7 else rng.randbytes(rng.randrange(64)))
        await writer.drain()
        if rng.random() < 0.5:
            sock = writer.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            stats.sent["vanish_rst"] += 1
        else:
            writer.close()
            stats.sent["vanish_fin"] += 1
        await asyncio.sleep(0.005)


async def slow_client(stats: Stats, stop: asyncio.Event) -> None:
    """A legal but slow client: its packet trickles in within the timeout; it must be answered."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        data = encode_frame(JSON.encode({"n": 0, "slow": True}), JSON.id)
        for i in range(0, len(data), 4):
            writer.write(data[i : i + 4])
            await asyncio.sleep(0.02)
        stats.valid_sent += 1
        stats.sent["slow_valid"] += 1
        reply = await asyncio.wait_for(read_frame(reader), SETTLE)
        stats.valid_answered += reply == {"n": 0, "slow": True}
        writer.close()


async def slowloris_client(stats: Stats, stop: asyncio.Event) -> None:
    """One byte every half second: the server must cut it off at its timeout."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        answer = asyncio.create_task(read_frame(reader))
        stats.sent["slowloris"] += 1
        for byte in encode_frame(JSON.encode({"x": "y" * 40}), JSON.id):
            if answer.done() or stop.is_set():
                break
            writer.write(bytes((byte,)))
            await asyncio.sleep(0.5)
        if not stop.is_set():
            stats.replies["slowloris"] += (await answer).get("error") == "ERR_TIMED_OUT"
        answer.cancel()
        writer.close()


KINDS = {
    "echo": echo_client,
    "invalid": invalid_client,
    "vanish": vanish_client,
    "slow": slow_client,
    "slowloris": slowloris_client,
}
PORT = 0


# -- the run -------------------------------------------------------------------------


async def _start_server(flags: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    """The server subprocess, and the port of its ``/metrics`` (0: none)."""
    global PORT
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "serve", *flags, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    port, metrics_port = (await asyncio.wait_for(proc.stdout.readline(), 30)).split()
    PORT = int(port)
    return proc, int(metrics_port)


async def scrape(port: int) -> str:
    """One ``GET /metrics``, as Prometheus sends it; the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), SETTLE)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/metrics answered {head[:40]!r}")
    return body.decode()


async def scraper(port: int, stop: asyncio.Event, seen: dict[str, Any]) -> None:
    """Scrape every second until ``stop``; keeps the count and the last body's series."""
    while not stop.is_set():
        body = await scrape(port)
        seen["scrapes"] = seen.get("scrapes", 0) + 1
        seen["series"] = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        await asyncio.sleep(1.0)


def access_log_report(path: str) -> dict[str, int]:
    """Lines of the access log, and the longest in bytes."""
    lines = longest = 0
    with open(path, "rb") as file:
        for line in file:
            lines += 1
            longest = max(longest, len(line))
    return {"lines": lines, "longest_line_bytes": longest}


async def _fds_settle(pid: int, baseline: int) -> int:
    deadline = time.monotonic() + SETTLE
    fds = open_fds(pid)
    while fds > baseline and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        fds = open_fds(pid)
    return fds


async def run(duration: float, access_log: str | None = None, metrics: bool = False) -> dict[str, Any]:
    if access_log and os.path.exists(access_log):
        os.remove(access_log)  # the report counts this run's lines only
    flags = (["--access-log", access_log] if access_log else []) + (["--metrics"] if metrics else [])
    proc, metrics_port = await _start_server(flags)
    await asyncio.sleep(0.2)
    fd_baseline, rss_start = open_fds(proc.pid), rss_kib(proc.pid)
    stats, stop = Stats(), asyncio.Event()
    tasks = [asyncio.create_task(KINDS[kind](stats, stop)) for kind, n in MIX.items() for _ in range(n)]
    scraped: dict[str, Any] = {}
    if metrics_port:
        tasks.append(asyncio.create_task(scraper(metrics_port, stop, scraped)))
    warmup = max(2.0, duration * 0.2)
    await asyncio.sleep(warmup)
    rss_warm = rss_kib(proc.pid)
    await asyncio.sleep(duration - warmup)
    rss_end = rss_kib(proc.pid)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    fds_after = await _fds_settle(proc.pid, fd_baseline)
    proc.send_signal(signal.SIGTERM)
    exit_code = await asyncio.wait_for(proc.wait(), 60)
    extra: dict[str, Any] = {}
    if access_log:
        extra["access_log"] = access_log_report(access_log)
    if metrics_port:
        extra["metrics"] = scraped
    return {
        "duration_s": duration,
        "valid_sent": stats.valid_sent,
        "valid_answered": stats.valid_answered,
        "lost": stats.valid_sent - stats.valid_answered,
        "out_of_order": stats.mismatches,
        "inputs_sent": dict(stats.sent),
        "right_error_replies": dict(stats.replies),
        "rss_kib": {"start": rss_start, "after_warmup": rss_warm, "end": rss_end},
        "rss_growth_pct": round(100.0 * (rss_end - rss_warm) / rss_warm, 2),
        "fds": {"baseline": fd_baseline, "after": fds_after},
        "client_errors": errors,
        "server_exit_code": exit_code,
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    parser.add_argument("--access-log", metavar="FILE", help="the server writes its access log to FILE")
    parser.add_argument("--metrics", action="store_true", help="the server serves /metrics, scraped every second")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.access_log, args.metrics)
        return 0
    report = asyncio.run(run(args.duration, args.access_log, args.metrics))
    print(json.dumps(report))
    ok = report["lost"] == 0 and report["fds"]["after"] <= report["fds"]["baseline"] and not report["client_errors"]
    ok = ok and report.get("access_log", {}).get("longest_line_bytes", 0) < 8 * 1024
    ok = ok and (not args.metrics or report["metrics"].get("scrapes", 0) > 0)
    return 0 if ok and report["server_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
