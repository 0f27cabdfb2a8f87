"""Misuse of typed topics that mypy must report (tests/typecheck/test_mypy_topics.py)."""

from __future__ import annotations

from pydantic import BaseModel

from asyncapy import Server


class Tick(BaseModel):
    symbol: str


class Other(BaseModel):
    name: str


prices = Server(port=0).topic("prices", Tick)


async def main() -> None:
    await prices.publish(Other(name="x"))  # not a Tick
    reveal_type(prices.publish)
    async with prices.subscribe() as ticks:
        async for tick in ticks:
            reveal_type(tick)
