"""Metrics labels come from a bounded set, whatever clients send (issue 20's one way out, issue 21).

Before, observation parsed the bytes sent: an echo handler fed
``{"status": "failure", "error": "E<random>"}`` made one ``asyncapy_packets_total``
series per random code. Now the outcome is what the application answered.
"""

from __future__ import annotations

import asyncio
import json

from asyncapy import ApiError, Client, Packet
from asyncapy.filters import RateLimit

from ..conftest import make_server, read_frame, running
from .test_metrics import packets, scrape

FORGED = 2_000


def frame(obj: dict[str, object]) -> bytes:
    payload = json.dumps(obj).encode()
    return (len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload


async def test_forged_error_replies_mint_no_series() -> None:
    server = make_server(metrics_port=0)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for start in range(0, FORGED, 200):  # bounded: 2,000 packets in batches of 200
            writer.write(b"".join(frame({"status": "failure", "error": f"E{n}"}) for n in range(start, start + 200)))
            for _ in range(200):
                await asyncio.wait_for(read_frame(reader), 10)
        writer.close()
        assert server.metrics_port is not None
        seen = packets(await asyncio.to_thread(scrape, server.metrics_port))
    assert seen == {(echo.__qualname__, "OK"): FORGED}


async def test_undeclared_application_codes_share_one_label_and_refusals_name_no_handler() -> None:
    server = make_server(metrics_port=0, rate_limit=RateLimit("3/minute"))

    @server.add_handler(errors=["ERR_DECLARED"])
    async def fail(client: Client, packet: Packet) -> None:
        raise ApiError(str(packet["code"]))

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        codes = ["ERR_DECLARED", "ERR_X1", "ERR_X2", "ERR_X3"]  # the 4th is over the rate limit
        writer.write(b"".join(frame({"code": code}) for code in codes))
        replies = [json.loads((await asyncio.wait_for(read_frame(reader), 10))[1])["error"] for _ in codes]
        writer.close()
        assert server.metrics_port is not None
        seen = packets(await asyncio.to_thread(scrape, server.metrics_port))
    assert replies == ["ERR_DECLARED", "ERR_X1", "ERR_X2", "ERR_RATE_LIMITED"]
    assert seen == {(fail.__qualname__, "ERR_DECLARED"): 1, (fail.__qualname__, "other"): 2, ("-", "ERR_RATE_LIMITED"): 1}
