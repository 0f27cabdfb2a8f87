"""Graceful shutdown: SIGTERM under pipelined load loses no reply, and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from asyncapy.wire.codecs import get_codec
from asyncapy.wire.protocol import encode_frame

from ..conftest import read_frame

JSON = get_codec("json")
SCRIPT = Path(__file__).with_name("shutdown_server.py")
#: Clients pipelining at once: enough that several are mid-batch when the signal lands.
CLIENTS = 8
#: Packets written before each drain: a deep pipeline, so the server's queues are full.
BATCH = 50
#: Replies received (in all) before SIGTERM: the load is well under way by then.
WARMUP_REPLIES = 2000
#: A client may send at most this many packets: bounds the loop if the server never stops.
MAX_PACKETS = 200_000
#: Packets a client lets be in flight: deeper than max_pending, so queues and socket
#: buffers are full when the signal lands, yet answerable well within shutdown_timeout.
WINDOW = 400


class Pipeliner:
    """Sends numbered packets in batches until told to stop; counts what comes back."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.sent = 0
        self.replies: list[int] = []

    async def run(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        receiving = asyncio.create_task(self._receive(reader))
        try:
            while not self.stop.is_set() and self.sent < MAX_PACKETS:
                if self.sent - len(self.replies) >= WINDOW:
                    await asyncio.sleep(0.001)
                    continue
                for _ in range(BATCH):
                    writer.write(encode_frame(JSON.encode({"i": self.sent}), JSON.id))
                    self.sent += 1
                await writer.drain()
        except ConnectionError:
            pass
        await receiving
        writer.close()

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                _, payload = await read_frame(reader)
                self.replies.append(JSON.decode(payload)["i"])
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # EOF: the server closed after its last reply


async def test_sigterm_under_load_loses_nothing() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
    stop = asyncio.Event()
    clients = [Pipeliner(stop) for _ in range(CLIENTS)]
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_writer.write(encode_frame(JSON.encode({"half": "a frame"}), JSON.id)[:9])  # mid-frame forever
    tasks = [asyncio.create_task(c.run(port)) for c in clients]
    for _ in range(3000):  # bounded: 30 s at most
        if sum(len(c.replies) for c in clients) >= WARMUP_REPLIES:
            break
        await asyncio.sleep(0.01)
    stop.set()  # no packet is written after this line ...
    os.kill(proc.pid, signal.SIGTERM)  # ... and the signal goes in the same step
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
    assert b"exited cleanly" in stderr
    assert b"Traceback" not in stderr, stderr.decode()
    for client in clients:
        assert client.replies == list(range(client.sent))
    assert await idle_reader.read() == b""  # the mid-frame connection was closed
    idle_writer.close()
