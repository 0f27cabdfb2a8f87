"""How dispatch calls a streaming handler (an async generator, DESIGN §9).

The handler's generator is driven by ``stream_out``: each yielded item is checked
against the declared item type, as a reply is (``asyncapy.model.replies``), and written
through the packet's answers (``asyncapy.model.answers``); awaiting the write waits
while the connection's write buffer is over its high-water mark, so a generator is
resumed only when its client keeps up (backpressure). The generator is always closed
(``aclose``: its ``finally`` runs) before the stream's end or error is answered.

What leaves the generator is answered as for any handler (middleware and exception
handlers see it first): while the stream is open, the error ends it; a generator that
returns ends it well. To a middleware, ``call_next()`` returns None once the whole
stream was sent.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ..depends import Scope, Steps, resolve
from ...model.answers import Answers, StreamClosed, answers_of
from ...model.packet import Packet
from ...model.peer import Client
from ...model.replies import Checker
from ...wire.errors import StopPropagation
from .invoke import Invocation, close_quietly


async def stream_out(gen: AsyncGenerator[Any, None], answers: Answers, check: Checker, model: type | None) -> None:
    """Send what ``gen`` yields as the items of the packet's stream, then end it.

    An exception (the generator's, a failed item check, a cancellation) closes the
    generator and leaves the stream open, for the exchange to end with its error.
    """
    answers.open_stream()
    try:
        try:
            async for item in gen:
                if type(item) is not model:
                    item = check(item)
                await answers.item(item)
        finally:
            await gen.aclose()
    except StreamClosed:  # the connection is closing: nothing to answer
        answers.end()
        return
    except StopPropagation:
        answers.end()
        raise
    answers.end()


def stream_invocation(
    name: str, handler: Any, pass_data: bool, steps: Steps | None, check: Checker, model: type | None
) -> Invocation:
    """``call``/``run`` for a streaming handler, with its dependencies around the whole stream
    (their teardowns run once it ended, also when it failed or was cancelled)."""
    if steps is None:

        async def plain(client: Client, arg: Any) -> None:
            await stream_out(handler(client, arg), answers_of(client), check, model)

        async def run_plain(client: Client, packet: Packet[Any], scope: Scope) -> None:
            await plain(client, packet.data if pass_data else packet)

        return Invocation(plain, pass_data, run_plain)

    async def run(client: Client, packet: Packet[Any], scope: Scope) -> None:
        kwargs = await resolve(steps, client, packet, scope.exits, scope.cache)
        gen = handler(client, packet.data if pass_data else packet, **kwargs)
        await stream_out(gen, answers_of(client), check, model)

    async def call(client: Client, packet: Packet[Any]) -> None:
        scope = Scope()
        try:
            await run(client, packet, scope)
        except BaseException as exc:
            if scope.exits:
                await scope.close(exc)
            raise
        if scope.exits:
            await close_quietly(scope, name)

    return Invocation(call, False, run)
