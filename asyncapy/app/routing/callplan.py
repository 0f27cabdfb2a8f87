"""A handler's dependencies as one generated function: the plain call plan of a simple plan.

``Steps`` (``asyncapy.app.depends``) says, in order, which provider to call with what. For
the connection's fast path that list is turned, once at compile time, into the source of
one ``async def`` that calls each provider by name with its arguments spelled out, then
the handler, checks the reply, writes it and closes the generators: per packet there is
no loop over steps, no kwargs dict built from a table and no helper coroutine.

For ``Depends(get_tx)`` (an async generator) and ``Depends(user)`` (a function of the
client) on ``async def h(client, packet: Packet[M], tx=..., user=...) -> Reply`` it reads:

    async def call(client, packet):
        g0 = None
        try:
            _g = p0()
            v0 = await _g.__anext__()
            g0 = _g
            v1 = p1(client=client)
            reply = await handler(client, packet, tx=v0, user=v1)
            if type(reply) is not model:
                reply = check(reply)
        except BaseException as exc:
            await unwind((g0,), exc)
            raise
        if reply is not None:
            write_reply(client, reply)
        await finish((g0,), name)
        return None

The source is made of our own names and the parameter names of the handler and its
providers (Python identifiers, as ``inspect.signature`` read them); nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..depends import ASYNC, ASYNC_GEN, CLIENT, GEN, PACKET, Steps, close_exits, close_exits_sync
from ...model.peer import write_reply
from ...model.replies import Checker

logger = logging.getLogger("asyncapy")

_NOTHING: Final = object()


def generated_call(
    name: str, handler: Callable[..., Awaitable[Any]], pass_data: bool, steps: Steps, check: Checker | None, model: type | None
) -> Callable[..., Awaitable[Any]]:
    """The simple plan's ``call(client, packet)`` for a handler with dependencies."""
    ns: dict[str, Any] = {
        "handler": handler,
        "check": check,
        "model": model,
        "write_reply": write_reply,
        "name": name,
        "NOTHING": _NOTHING,
        "twice": _twice,
        "log_teardown": _log_teardown,
        "unwind_sync": _unwind_sync,
        "unwind_async": _unwind_async,
        "finish_sync": _finish_sync,
        "finish_async": _finish_async,
    }
    body: list[str] = []
    gens: list[str] = []
    for index, step in enumerate(steps.steps):
        ns[f"p{index}"] = step.provider
        args = ", ".join(f"{arg}={_source(source)}" for arg, source in step.args)
        call = f"p{index}({args})"
        if step.kind == GEN:
            body += [f"_g = {call}", f"v{index} = next(_g)", f"g{index} = _g"]
            gens.append(f"g{index}")
        elif step.kind == ASYNC_GEN:
            body += [f"_g = {call}", f"v{index} = await _g.__anext__()", f"g{index} = _g"]
            gens.append(f"g{index}")
        elif step.kind == ASYNC:
            body.append(f"v{index} = await {call}")
        else:
            body.append(f"v{index} = {call}")
    kwargs = ", ".join(f"{param}=v{index}" for param, index in steps.params)
    arg = "packet.data" if pass_data else "packet"
    body.append(f"reply = await handler(client, {arg}{', ' if kwargs else ''}{kwargs})")
    if check is not None:
        body.append("if type(reply) is not model:" if model is not None else "if True:")
        body.append("    reply = check(reply)")
    lines = ["async def call(client, packet):"]
    if not gens:
        lines += ["    " + line for line in body] + ["    return reply"]
    else:
        is_async = steps.sync_exits is False
        live = "(" + ", ".join(reversed(gens)) + ",)"  # last opened first
        lines.append("    " + " = ".join(gens) + " = None")
        lines.append("    try:")
        lines += ["        " + line for line in body]
        lines.append("    except BaseException as exc:")
        lines.append(f"        {'await unwind_async' if is_async else 'unwind_sync'}({live}, exc)")
        lines.append("        raise")
        lines.append("    if reply is not None:")
        lines.append("        write_reply(client, reply)  # written before the teardowns run")
        if len(gens) == 1 and not is_async:
            lines += [
                "    try:",
                f"        if next({gens[0]}, NOTHING) is not NOTHING:",
                f"            twice({gens[0]})",
                "    except Exception:",
                "        log_teardown(name)",
            ]
        else:
            lines.append(f"    {'await finish_async' if is_async else 'finish_sync'}({live}, name)")
        lines.append("    return None")
    source = "\n".join(lines) + "\n"
    exec(compile(source, f"<asyncapy call plan of {name}>", "exec"), ns)  # noqa: S102 - our own source, see above
    call_fn: Callable[..., Awaitable[Any]] = ns["call"]
    call_fn.__qualname__ = f"call_plan[{name}]"
    return call_fn


def _source(source: int) -> str:
    if source >= 0:
        return f"v{source}"
    return "client" if source == CLIENT else "packet" if source == PACKET else "packet.data"


def _twice(gen: Any) -> None:
    gen.close()
    raise RuntimeError(f"the dependency {getattr(gen, '__qualname__', gen)} yielded more than once")


def _log_teardown(name: str) -> None:
    logger.exception("A dependency teardown of handler %s failed after its reply was sent", name)


def _unwind_sync(gens: tuple[Any, ...], exc: BaseException) -> None:
    close_exits_sync([g for g in reversed(gens) if g is not None], exc)


async def _unwind_async(gens: tuple[Any, ...], exc: BaseException) -> None:
    await close_exits([g for g in reversed(gens) if g is not None], exc)


def _finish_sync(gens: tuple[Any, ...], name: str) -> None:
    try:
        close_exits_sync(list(reversed(gens)))
    except Exception:
        _log_teardown(name)


async def _finish_async(gens: tuple[Any, ...], name: str) -> None:
    try:
        await close_exits(list(reversed(gens)))
    except Exception:
        _log_teardown(name)
