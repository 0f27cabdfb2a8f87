"""How dispatch calls one handler: plainly, or with its dependencies and its reply check.

Chosen once per route at compile time. A handler with no dependencies and no reply
type to check is called as it is (``call`` is the handler itself: nothing added on the
hot path). Otherwise:

- ``call(client, arg)`` is what a simple plan's ``start`` returns the coroutine of: it
  returns the reply for the connection to send, or (with generator dependencies, whose
  teardowns must follow the reply) writes the reply itself and returns None;
- ``run(client, packet, scope)`` is what ``Plan.dispatch`` awaits, with one ``Scope``
  for the whole packet (one value per provider per packet, teardowns after every
  group's reply).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..depends import Scope, Steps, resolve
from ...model.packet import Packet
from ...model.peer import Client
from ...model.replies import Checker
from .callplan import generated_call

logger = logging.getLogger("asyncapy")

Call = Callable[..., Awaitable[Any]]
Run = Callable[[Client, Packet[Any], Scope], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Invocation:
    """``call`` and ``call_data`` (pass ``packet.data`` rather than the packet) for ``start``; ``run`` for dispatch."""

    call: Call
    call_data: bool
    run: Run | None


def invocation(
    name: str, handler: Call, pass_data: bool, steps: Steps | None, check: Checker | None, model: type | None = None
) -> Invocation:
    """The cheapest way to call ``handler`` that honours its dependencies and reply type.

    ``model``: the handler is annotated ``-> model`` exactly, so an instance of that
    very class is returned as it is after one ``type(...) is`` test.
    """
    if steps is None and check is None:
        return Invocation(handler, pass_data, None)
    if steps is None:
        assert check is not None
        call = _checked(handler, check) if model is None else _checked_model(handler, check, model)
        return Invocation(call, pass_data, _run_checked(handler, pass_data, check))
    call = generated_call(name, handler, pass_data, steps, check, model)
    return Invocation(call, False, _run(handler, pass_data, steps, check))


def _checked(handler: Call, check: Checker) -> Call:
    async def call(client: Client, arg: Any) -> Any:
        return check(await handler(client, arg))

    return call


def _checked_model(handler: Call, check: Checker, model: type) -> Call:
    async def call(client: Client, arg: Any) -> Any:
        reply = await handler(client, arg)
        if type(reply) is model:
            return reply
        return check(reply)

    return call


def _run_checked(handler: Call, pass_data: bool, check: Checker) -> Run:
    async def run(client: Client, packet: Packet[Any], scope: Scope) -> Any:
        return check(await handler(client, packet.data if pass_data else packet))

    return run


def _run(handler: Call, pass_data: bool, steps: Steps, check: Checker | None) -> Run:
    async def run(client: Client, packet: Packet[Any], scope: Scope) -> Any:
        kwargs = await resolve(steps, client, packet, scope.exits, scope.cache)
        reply = await handler(client, packet.data if pass_data else packet, **kwargs)
        return reply if check is None else check(reply)

    return run


async def close_quietly(scope: Scope, name: str) -> None:
    """Run the teardowns after a reply went out: a failure is logged (a second reply would confuse the peer)."""
    try:
        await scope.close(None)
    except Exception:
        logger.exception("A dependency teardown (handler %s) failed after the reply was sent", name)
