"""Dispatch cost per packet: the compiled plan against the naive loop of DESIGN §3.

Run: ``.venv/bin/python benchmarks/bench_dispatch.py``. In process, from a decoded map
to the handler called: N handlers in one group, each with a model tagged by a
``Literal`` field, the packet aimed at the last one. Not a test: numbers vary by machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from asyncapy import Client, Packet, Router, Session
from asyncapy.app.routing import compile_routes

SIZES = (1, 10, 100, 1000)
ROUNDS = 5  # best of: hides scheduler noise
MIN_TIME = 0.2  # seconds per round


class _NullLink:
    closing = True

    def write_payload(self, payload: bytes, encoding: int) -> None: ...

    def close(self) -> None: ...

    async def drain(self) -> None: ...


def build(n: int) -> tuple[Router, list[tuple[TypeAdapter[Any], Callable[..., Awaitable[Any]]]], list[int]]:
    """N tagged models and handlers, registered on a router and listed for the naive loop."""
    router, naive, calls = Router(), [], [0]
    for i in range(n):
        model: type[BaseModel] = create_model(f"Op{i}", kind=(Literal[f"op{i}"], ...), value=(int, ...))

        async def handler(client: Client, packet: Any) -> None:
            calls[0] += 1

        handler.__annotations__ = {"packet": Packet[model]}  # type: ignore[valid-type]
        handler.__qualname__ = f"handle_op{i}"
        router.register_handler(handler)
        naive.append((TypeAdapter(model), handler))
    return router, naive, calls


async def naive_dispatch(routes: list[tuple[TypeAdapter[Any], Callable[..., Awaitable[Any]]]], client: Client, packet: Packet[Any]) -> None:
    """DESIGN §3 as a plain loop: validate against each handler in turn."""
    for adapter, handler in routes:
        try:
            data = adapter.validate_python(packet.payload)
        except ValidationError:
            continue
        await handler(client, packet._with_data(data))
        return


async def per_packet(dispatch: Callable[[Client, Packet[Any]], Awaitable[Any]], payload: dict[str, Any]) -> float:
    """Best seconds per packet over ``ROUNDS`` rounds of at least ``MIN_TIME`` each."""
    client = Client("127.0.0.1", 0, Session("127.0.0.1", 0), _NullLink())
    best = float("inf")
    count = 100
    for _ in range(ROUNDS):
        while True:
            start = time.perf_counter()
            for _ in range(count):
                await dispatch(client, Packet._received(payload, "json", client, b""))
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_TIME:
                break
            count *= 2
        best = min(best, elapsed / count)
    return best


async def main() -> None:
    rows = []
    for n in SIZES:
        router, naive, calls = build(n)
        plan = compile_routes(router.routes())
        payload = {"kind": f"op{n - 1}", "value": 7}
        compiled = await per_packet(plan.dispatch, payload)
        plain = await per_packet(lambda c, p: naive_dispatch(naive, c, p), payload)
        assert calls[0] > 0
        rows.append((n, compiled, plain))
    base_c, base_n = rows[0][1], rows[0][2]
    print(f"{'handlers':>8} | {'compiled µs':>11} | {'ratio':>6} | {'naive µs':>9} | {'ratio':>7}")
    print("-" * 54)
    for n, compiled, plain in rows:
        print(f"{n:>8} | {compiled * 1e6:>11.2f} | {compiled / base_c:>6.2f} | {plain * 1e6:>9.2f} | {plain / base_n:>7.1f}")
    verdict = "met" if rows[-1][1] / base_c <= 1.3 else "NOT met"
    print(f"target (1,000 handlers <= 1.3x of 1 handler, compiled): {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
