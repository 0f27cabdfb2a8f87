"""A server with typed topics, for the schema and the docs page (``tests.servers.ticker:server``)."""

from pydantic import BaseModel, Field

from asyncapy import Client, Router, Server


class Tick(BaseModel):
    symbol: str = Field(description="The ticker symbol")
    price: float


class Trade(BaseModel):
    symbol: str
    qty: int
    last: Tick


server = Server("127.0.0.1", 0)
prices = server.topic("prices", Tick)
market = Router()
trades = market.topic("market.trades", Trade, max_buffered=50)
server.include_router(market)


@server.add_handler()
async def quote(client: Client, packet: Tick) -> Tick:
    """Publish a price."""
    await prices.publish(packet)
    return packet
