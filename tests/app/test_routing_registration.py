"""Registration: wrong handlers and filters fail at once, naming the handler."""

from __future__ import annotations

import logging
from typing import Any, Literal, Union

import pytest
from pydantic import BaseModel

from asyncapy import Client, Packet, Router, UsageError
from asyncapy.app.filters import Fields, Ip
from asyncapy.app.routing import compile_routes

from ..conftest import make_server


class Ping(BaseModel):
    kind: Literal["ping"]


class Pong(BaseModel):
    kind: Literal["pong"]


def test_sync_handler_is_refused() -> None:
    def not_async(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match=r"not_async.*async def"):
        Router().register_handler(not_async)  # type: ignore[arg-type]


@pytest.mark.parametrize("arity", [1, 3])
def test_wrong_arity_is_refused(arity: int) -> None:
    async def one(client: Client) -> None: ...

    async def three(client: Client, packet: Packet, extra: int) -> None: ...

    handler = one if arity == 1 else three
    with pytest.raises(UsageError, match=rf"{handler.__name__}.*two positional arguments"):
        Router().register_handler(handler)


def test_extra_parameters_with_defaults_are_fine() -> None:
    async def handler(client: Client, packet: Packet, *, retries: int = 3) -> None: ...

    Router().register_handler(handler)


def test_non_model_annotation_is_refused() -> None:
    async def takes_int(client: Client, packet: int) -> None: ...

    with pytest.raises(UsageError, match=r"takes_int.*not a\s+pydantic model"):
        Router().register_handler(takes_int)


def test_union_with_a_non_model_member_is_refused() -> None:
    async def bad_union(client: Client, packet: Packet[Ping | int]) -> None: ...

    with pytest.raises(UsageError, match=r"bad_union.*int"):
        Router().register_handler(bad_union)


def test_unresolvable_annotation_is_refused() -> None:
    async def forward(client: Client, packet: Packet[Missing]) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(UsageError, match=r"forward.*cannot resolve"):
        Router().register_handler(forward)


def test_annotation_styles() -> None:
    router = Router()

    async def typed(client: Client, packet: Packet[Ping]) -> Pong:
        return Pong(kind="pong")

    async def bare(client: Client, packet: Ping | Pong) -> dict[str, Any] | None:
        return None

    async def union(client: Client, packet: Packet[Union[Ping, Pong]]) -> None: ...

    async def untyped(client, packet):  # type: ignore[no-untyped-def]
        ...

    async def packet_only(client: Client, packet: Packet) -> int:
        return 1

    for handler in (typed, bare, union, untyped, packet_only):
        router.register_handler(handler)
    routes = compile_routes(router.routes()).routes
    assert [r.style for r in routes] == ["packet", "model", "packet", "untyped", "untyped"]
    assert [r.models for r in routes] == [(Ping,), (Ping, Pong), (Ping, Pong), (), ()]
    assert routes[0].accepts is Ping and routes[3].accepts is None
    assert routes[0].reply_type is Pong
    assert routes[1].reply_type == dict[str, Any]
    assert routes[4].reply_type is None
    assert [r.name for r in routes][0].endswith("typed")


def test_bad_filter_is_refused_naming_the_handler() -> None:
    async def guarded(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match=r"guarded.*42 is not a filter"):
        Router().register_handler(guarded, 42)


def test_filter_class_instead_of_instance_is_refused() -> None:
    async def slip(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match="slip"):
        Router().register_handler(slip, Ip)


def test_bad_group_is_refused() -> None:
    async def grouped(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match="grouped"):
        Router().register_handler(grouped, group="1")  # type: ignore[arg-type]


def test_decorators_return_the_function_unchanged() -> None:
    router, server = Router(), make_server()

    async def handler(client: Client, packet: Packet[Ping]) -> None: ...

    assert router.add_handler(Ip("::1"))(handler) is handler
    assert server.add_handler(Fields(kind=None))(handler) is handler
    assert router.routes()[0].filters[0].describe() == "client address in ::1/128"


def test_nested_routers_keep_registration_order_per_group() -> None:
    outer, inner, server = Router(), Router(), make_server()
    plan: list[tuple[str, Any, int]] = [("a", server, 0), ("b", inner, 1), ("c", inner, 0), ("d", outer, 0), ("e", server, 1)]
    for name, target, group in plan:
        handler = _named(name)
        target.register_handler(handler, group=group)
        if name == "c":
            outer.include_router(inner)
        if name == "d":
            server.include_router(outer)
    assert [r.name for r in server.compile().routes] == ["a", "c", "d", "b", "e"]


def test_router_cannot_include_itself() -> None:
    a, b = Router(), Router()
    a.include_router(b)
    with pytest.raises(UsageError):
        b.include_router(a)


def test_dead_route_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()
    router.register_handler(_named("first", Ping))
    router.register_handler(_named("again", Ping))
    router.register_handler(_named("filtered", Pong), Ip("::1"))
    router.register_handler(_named("fallback", Pong))
    router.register_handler(_named("catch_all"))
    router.register_handler(_named("never", Pong))
    with caplog.at_level(logging.WARNING, logger="asyncapy"):
        compile_routes(router.routes())
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "again" in warned[0] and "first" in warned[0]
    assert "never" in warned[1] and "fallback" in warned[1]  # the first that shadows it


def test_plan_is_immutable() -> None:
    router = Router()
    router.register_handler(_named("h", Ping))
    plan = compile_routes(router.routes())
    with pytest.raises(AttributeError):
        plan.routes = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        plan.routes[0].name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.groups[0].index["ping"] = ()  # type: ignore[index]


def _named(name: str, model: Any = None) -> Any:
    async def handler(client: Client, packet: Any) -> None: ...

    handler.__annotations__ = {"packet": Packet if model is None else Packet[model]}
    handler.__qualname__ = name
    return handler
