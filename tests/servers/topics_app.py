"""A server with a topic shared through Redis (run as a script: PORT REDIS_URL).

``{"symbol", "price"}`` publishes a Tick; ``{"watch": symbol, "count": n}`` subscribes
and forwards the next ``n`` ticks of that symbol to the connection, as ordinary packets.
"""

import sys

from pydantic import BaseModel

from asyncapy import Client, Packet, Server
from asyncapy.redis import RedisState


class Tick(BaseModel):
    symbol: str
    price: float
    seq: int = 0


class Watch(BaseModel):
    watch: str
    count: int


server = Server("127.0.0.1", int(sys.argv[1]), shared_state=RedisState(sys.argv[2], namespace="topics-test", timeout=1.0))
prices = server.topic("prices", Tick)


@server.add_handler()
async def publish(client: Client, packet: Tick) -> dict[str, str]:
    await prices.publish(packet)
    return {"published": packet.symbol}


@server.add_handler()
async def watch(client: Client, packet: Packet[Watch]) -> None:
    sent = 0
    async with prices.subscribe() as ticks:
        await client.send({"subscribed": packet.data.watch})
        async for tick in ticks:
            if tick.symbol == packet.data.watch:
                await client.send(tick)
                sent += 1
                if sent >= packet.data.count:
                    return


if __name__ == "__main__":
    server.start()
