"""The application layer (DESIGN §4): ApiError, exception handlers, middleware, Depends,
checked replies and rule 5's structured misses, over real sockets and in the TestClients."""

# No `from __future__ import annotations`: the providers below are local to their tests,
# and their names must resolve when the handlers are registered.

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel

from asyncapy import ApiError, CallNext, Client, Depends, Packet, Router, Server, UsageError
from asyncapy.client import AsyncClient
from asyncapy.testing import AsyncTestClient, TestClient

from ..conftest import make_server, running


class Order(BaseModel):
    kind: Literal["order"]
    item: str
    qty: int


class Placed(BaseModel):
    item: str
    qty: int


async def over_socket(server: Server, *payloads: dict[str, Any], protocol: int = 2) -> list[dict[str, Any]]:
    """Each payload's reply from ``server`` served on a loopback port, one connection."""
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, timeout=5, protocol=protocol) as client:
            return [await client.request(p) for p in payloads]


async def both(server: Server, *payloads: dict[str, Any]) -> list[dict[str, Any]]:
    """The replies over a socket, after checking the AsyncTestClient gets the same."""
    async with AsyncTestClient(server) as tc:
        in_memory = [await tc.request(p) for p in payloads]
    real = await over_socket(server, *payloads)
    assert in_memory == real
    return real


# -- ApiError and exception handlers ---------------------------------------------------


async def test_api_error_is_the_reply_and_the_connection_stays_open() -> None:
    server = make_server()

    @server.add_handler()
    async def find(client: Client, packet: Packet) -> dict[str, Any]:
        if packet["id"] != 1:
            raise ApiError("ERR_NOT_FOUND", f"no order {packet['id']}")
        return {"id": 1}

    replies = await both(server, {"id": 2}, {"id": 1})
    assert replies == [{"status": "failure", "error": "ERR_NOT_FOUND", "detail": "no order 2"}, {"id": 1}]


async def test_api_error_stops_later_groups() -> None:
    server = make_server()
    seen: list[str] = []

    @server.add_handler(group=-1)
    async def auth(client: Client, packet: Packet) -> None:
        raise ApiError("ERR_UNAUTHORIZED")

    @server.add_handler()
    async def later(client: Client, packet: Packet) -> None:
        seen.append("later")

    assert await both(server, {"a": 1}) == [{"status": "failure", "error": "ERR_UNAUTHORIZED"}]
    assert seen == []


def test_api_error_code_is_checked() -> None:
    with pytest.raises(ValueError, match="ERR_NOT_FOUND"):
        ApiError("not found")


async def test_exception_handler_maps_by_class_and_base_class() -> None:
    server = make_server()

    @server.add_handler()
    async def lookup(client: Client, packet: Packet) -> dict[str, Any]:
        if packet["what"] == "key":
            raise KeyError("nope")
        if packet["what"] == "silent":
            raise ConnectionError("quiet")
        raise RuntimeError("boom")

    @server.exception_handler(LookupError)
    async def not_found(client: Client, packet: Packet, exc: LookupError) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_NOT_FOUND", "detail": str(exc)}

    @server.exception_handler(OSError)
    async def quiet(client: Client, packet: Packet, exc: OSError) -> None:
        await client.send({"quiet": True})

    replies = await both(server, {"what": "key"}, {"what": "silent"}, {"what": "other"})
    assert replies[0] == {"status": "failure", "error": "ERR_NOT_FOUND", "detail": "'nope'"}
    assert replies[1] == {"quiet": True}
    assert replies[2]["error"] == "ERR_INTERNAL"


def test_exception_handler_misuse_is_a_usage_error() -> None:
    server = make_server()
    with pytest.raises(UsageError, match="exception class"):
        server.exception_handler("KeyError")(lambda c, p, e: None)  # type: ignore[arg-type,return-value]

    def sync(client: Client, packet: Packet, exc: KeyError) -> None: ...

    with pytest.raises(UsageError, match="'.*sync' must be an async function"):
        server.exception_handler(KeyError)(sync)  # type: ignore[arg-type]


# -- middleware -----------------------------------------------------------------------


async def test_middleware_wraps_routing_outermost_first() -> None:
    server = make_server()
    events: list[str] = []

    @server.middleware
    async def outer(client: Client, packet: Packet, call_next: CallNext) -> None:
        events.append("outer in")
        await call_next()
        events.append("outer out")

    @server.middleware
    async def inner(client: Client, packet: Packet, call_next: CallNext) -> None:
        events.append("inner in")
        await call_next()
        events.append("inner out")

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        events.append("handler")
        await client.send(packet)

    assert await over_socket(server, {"x": 1}) == [{"x": 1}]
    assert events == ["outer in", "inner in", "handler", "inner out", "outer out"]


async def test_middleware_may_answer_instead_of_routing() -> None:
    server = make_server()

    @server.middleware
    async def maintenance(client: Client, packet: Packet, call_next: CallNext) -> None:
        if packet.get("maintenance"):
            await client.send({"status": "failure", "error": "ERR_MAINTENANCE"})
            return
        await call_next()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, Any]:
        return dict(packet)

    replies = await both(server, {"maintenance": True}, {"x": 1})
    assert replies == [{"status": "failure", "error": "ERR_MAINTENANCE"}, {"x": 1}]


async def test_middleware_sees_misses_and_handler_errors_first() -> None:
    server = make_server()
    seen: list[Any] = []

    @server.middleware
    async def watch(client: Client, packet: Packet, call_next: CallNext) -> None:
        try:
            await call_next()
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise
        seen.append("ok")

    @server.add_handler()
    async def order(client: Client, packet: Packet[Order]) -> Placed:
        if packet.data.item == "bomb":
            raise ValueError("boom")
        return Placed(item=packet.data.item, qty=packet.data.qty)

    @server.exception_handler(ValueError)
    async def bad(client: Client, packet: Packet, exc: ValueError) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_BAD", "detail": str(exc)}

    replies = await over_socket(
        server,
        {"kind": "order", "item": "tea", "qty": 1},
        {"kind": "order", "item": "tea", "qty": "many"},
        {"kind": "order", "item": "bomb", "qty": 1},
    )
    assert replies[0] == {"item": "tea", "qty": 1}
    assert replies[1]["error"] == "ERR_NO_HANDLER"
    assert replies[1]["errors"] == [
        {"handler": order.__qualname__, "group": 0, "reason": "validation", "loc": ["qty"], "msg": replies[1]["errors"][0]["msg"]}
    ]
    assert replies[2] == {"status": "failure", "error": "ERR_BAD", "detail": "boom"}
    assert seen == ["ok", "ok", "ValueError"]


def test_middleware_misuse_is_a_usage_error() -> None:
    server = make_server()

    async def two(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match="call_next"):
        server.middleware(two)  # type: ignore[type-var]


# -- dependencies ------------------------------------------------------------------------


class Tx:
    def __init__(self, log: list[str]) -> None:
        self.log = log


async def test_dependencies_in_both_forms_with_teardown_after_the_reply() -> None:
    server = make_server()
    log: list[str] = []

    async def get_tx() -> AsyncIterator[Tx]:
        log.append("open")
        try:
            yield Tx(log)
        except Exception as exc:
            log.append(f"rollback {type(exc).__name__}")
            raise
        else:
            log.append("commit")

    def session_user(client: Client) -> str:
        log.append("user")
        return f"user@{client.address}"

    async def audit(packet: Packet, user: Annotated[str, Depends(session_user)]) -> None:
        log.append(f"audit {user}")

    @server.add_handler(dependencies=[Depends(audit)])
    async def place(
        client: Client,
        packet: Packet[Order],
        tx: Annotated[Tx, Depends(get_tx)],
        user: str = Depends(session_user),
    ) -> Placed:
        log.append(f"place {user}")
        if packet.data.qty > 10:
            raise ApiError("ERR_TOO_MANY")
        return Placed(item=packet.data.item, qty=packet.data.qty)

    replies = await over_socket(server, {"kind": "order", "item": "tea", "qty": 1}, {"kind": "order", "item": "x", "qty": 99})
    assert replies[0] == {"item": "tea", "qty": 1}
    assert replies[1] == {"status": "failure", "error": "ERR_TOO_MANY"}
    # session_user runs once per packet (cached), its value shared by audit and the handler
    assert log == [
        "user", "audit user@127.0.0.1", "open", "place user@127.0.0.1", "commit",
        "user", "audit user@127.0.0.1", "open", "place user@127.0.0.1", "rollback ApiError",
    ]  # fmt: skip


async def test_generator_teardown_runs_after_the_reply_is_written() -> None:
    server = make_server()
    written_before_teardown: list[int] = []

    def resource(client: Client) -> Iterator[int]:
        yield 1
        written_before_teardown.append(len(client._link._out))  # type: ignore[attr-defined]

    @server.add_handler()
    async def h(client: Client, packet: Packet, r: Annotated[int, Depends(resource)]) -> dict[str, Any]:
        return {"r": r}

    assert await over_socket(server, {}, protocol=1) == [{"r": 1}]  # the v1 link's write queue
    assert written_before_teardown == [2]  # header and payload of the reply, queued in one write


async def test_router_dependencies_and_typed_providers() -> None:
    server = make_server()
    sessions = {"secret"}

    def logged_in(packet: Packet) -> str:
        token = packet.get("token")
        if token not in sessions:
            raise ApiError("ERR_UNAUTHORIZED", "log in first")
        return str(token)

    def quantity(order: Order) -> int:
        return order.qty * 2

    admin = Router(dependencies=[Depends(logged_in)])

    @admin.add_handler()
    async def place(client: Client, packet: Packet[Order], double: Annotated[int, Depends(quantity)]) -> dict[str, Any]:
        return {"double": double}

    server.include_router(admin)
    replies = await both(
        server,
        {"kind": "order", "item": "a", "qty": 2, "token": "secret"},
        {"kind": "order", "item": "a", "qty": 2},
    )
    assert replies == [{"double": 4}, {"status": "failure", "error": "ERR_UNAUTHORIZED", "detail": "log in first"}]


async def test_dependencies_run_after_filters_and_validation() -> None:
    server = make_server()
    opened: list[int] = []

    def opener() -> Iterator[None]:
        opened.append(1)
        yield

    @server.add_handler(lambda client, packet: "ok" in packet, dependencies=[opener])
    async def h(client: Client, packet: Packet[Order]) -> None:
        await client.send({"ok": True})

    replies = await both(server, {"kind": "order", "item": "a", "qty": 1}, {"kind": "order", "item": "a", "qty": "x", "ok": 1})
    assert [r["error"] for r in replies] == ["ERR_NO_HANDLER", "ERR_NO_HANDLER"]
    assert opened == []


async def test_dependencies_across_groups_share_one_value_per_packet() -> None:
    server = make_server()
    made: list[int] = []
    torn: list[int] = []

    async def counter() -> AsyncIterator[int]:
        made.append(len(made))
        yield len(made)
        torn.append(1)

    @server.add_handler(group=-1)
    async def first(client: Client, packet: Packet, n: Annotated[int, Depends(counter)]) -> None:
        await client.send({"first": n})

    @server.add_handler()
    async def second(client: Client, packet: Packet, n: Annotated[int, Depends(counter)]) -> dict[str, Any]:
        return {"second": n}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            await client.send({})
            assert await client.receive() == {"first": 1}
            assert await client.receive() == {"second": 1}
    assert made == [0] and torn == [1]


def test_dependency_misuse_is_a_usage_error_naming_handler_and_parameter() -> None:
    server = make_server()

    async def plain(client: Client, packet: Packet, extra: int) -> None: ...

    with pytest.raises(UsageError, match=r"plain.*'extra'"):
        server.register_handler(plain)

    def needs_mystery(mystery: int) -> int:
        return mystery

    async def uses(client: Client, packet: Packet, x: Annotated[int, Depends(needs_mystery)]) -> None: ...

    with pytest.raises(UsageError, match=r"uses.*'x'.*needs_mystery.*'mystery'"):
        server.register_handler(uses)

    def a(b: int = Depends(lambda: 0)) -> int:
        return b

    def cyc_a(x: Annotated[int, Depends(lambda: 1)]) -> int:
        return x

    def loop_a(v: int = Depends(lambda: 0)) -> int:
        return v

    def ping(p: int = Depends(lambda: 0)) -> int:
        return p

    # a real cycle: ping -> pong -> ping
    def pong(p: int = Depends(ping)) -> int:
        return p

    ping.__defaults__ = (Depends(pong),)

    async def cyclic(client: Client, packet: Packet, v: Annotated[int, Depends(ping)]) -> None: ...

    with pytest.raises(UsageError, match=r"cyclic.*'v'.*cycle"):
        server.register_handler(cyclic)

    async def not_callable(client: Client, packet: Packet, n: Annotated[int, Depends(42)]) -> None: ...

    with pytest.raises(UsageError, match=r"not_callable.*'n'.*callable"):
        server.register_handler(not_callable)

    async def wrong_model(p: Placed) -> None: ...

    async def typed(client: Client, packet: Packet[Order], w: Annotated[None, Depends(wrong_model)]) -> None: ...

    with pytest.raises(UsageError, match=r"typed.*wrong_model"):
        server.register_handler(typed)
    del a, cyc_a, loop_a


# -- checked replies ----------------------------------------------------------------------


async def test_replies_are_checked_against_the_declared_type(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()

    @server.add_handler()
    async def place(client: Client, packet: Packet) -> Placed:
        what = packet["what"]
        if what == "dict":
            return {"item": "tea", "qty": "2"}  # type: ignore[return-value]  # validated into Placed
        if what == "bad dict":
            return {"item": "tea"}  # type: ignore[return-value]
        if what == "none":
            return None  # type: ignore[return-value]
        if what == "str":
            return "tea"  # type: ignore[return-value]
        return Placed(item="tea", qty=1)

    with caplog.at_level(logging.ERROR, logger="asyncapy"):
        replies = await both(server, {"what": "model"}, {"what": "dict"}, {"what": "bad dict"}, {"what": "none"}, {"what": "str"})
    assert replies[:2] == [{"item": "tea", "qty": 1}, {"item": "tea", "qty": 2}]
    assert [r["error"] for r in replies[2:]] == ["ERR_INTERNAL"] * 3
    named = [r for r in caplog.records if "place" in str(r.exc_info[1] if r.exc_info else "")]
    assert len(named) == 6  # three per run (TestClient and socket), each naming the handler


async def test_optional_and_untyped_replies_may_be_nothing() -> None:
    server = make_server()

    @server.add_handler(group=-1)
    async def maybe(client: Client, packet: Packet) -> Placed | None:
        return None if packet.get("skip") else Placed(item="a", qty=1)

    @server.add_handler(group=0)
    async def untyped(client: Client, packet: Packet):  # type: ignore[no-untyped-def]
        await client.send({"untyped": True})

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            await client.send({"skip": True})
            assert await client.receive() == {"untyped": True}


# -- rule 5: no silent drops ----------------------------------------------------------------


async def test_a_rejection_after_an_earlier_group_ran_is_answered() -> None:
    """The issue's case: an audit handler in group -1 ran, the typed handler rejected qty 0."""
    server = make_server()
    audited: list[Any] = []

    class Positive(BaseModel):
        kind: Literal["order"]
        item: str
        qty: int

        def model_post_init(self, context: Any) -> None:
            if self.qty <= 0:
                raise ValueError("qty must be positive")

    @server.add_handler(group=-1)
    async def audit(client: Client, packet: Packet) -> None:
        audited.append(dict(packet))

    @server.add_handler()
    async def place(client: Client, packet: Packet[Order]) -> Placed:
        return Placed(item=packet.data.item, qty=packet.data.qty)

    replies = await both(server, {"kind": "order", "item": "tea", "qty": "zero"}, {"kind": "order", "item": "tea", "qty": 1})
    assert replies[0]["error"] == "ERR_NO_HANDLER"
    assert replies[0]["errors"] == [
        {"handler": place.__qualname__, "group": 0, "reason": "validation", "loc": ["qty"], "msg": replies[0]["errors"][0]["msg"]}
    ]
    assert "qty" in replies[0]["detail"]
    assert replies[1] == {"item": "tea", "qty": 1}
    assert len(audited) == 4


def test_no_handler_errors_in_the_test_client() -> None:
    server = make_server()

    @server.add_handler(lambda client, packet: False)
    async def never(client: Client, packet: Packet) -> None: ...

    @server.add_handler()
    async def order(client: Client, packet: Packet[Order]) -> None: ...

    with TestClient(server) as client:
        reply = client.request({"kind": "order"})
    assert reply["error"] == "ERR_NO_HANDLER"
    assert [(e["handler"], e["reason"]) for e in reply["errors"]] == [(never.__qualname__, "filter"), (order.__qualname__, "validation")]
    assert reply["errors"][1]["loc"] == ["item"]


# -- the generated call plan: unwinding and teardown failures ------------------------------------


async def test_teardowns_unwind_in_reverse_when_a_later_provider_fails(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    log: list[str] = []

    async def first() -> AsyncIterator[str]:
        log.append("open first")
        try:
            yield "first"
        except ApiError:
            log.append("first saw ApiError")
            raise
        finally:
            log.append("close first")

    def second() -> Iterator[str]:
        log.append("open second")
        yield "second"
        log.append("close second")

    def refuse(packet: Packet) -> None:
        if packet.get("refuse"):
            raise ApiError("ERR_REFUSED")

    def broken_teardown() -> Iterator[None]:
        yield
        raise OSError("disk full")

    def twice() -> Iterator[int]:
        yield 1
        yield 2

    @server.add_handler(dependencies=[first, second, refuse])
    async def h(client: Client, packet: Packet) -> dict[str, Any]:
        log.append("handler")
        return {"ok": True}

    @server.add_handler(group=0, dependencies=[broken_teardown])
    async def unreachable(client: Client, packet: Packet) -> None: ...

    assert await both(server, {"refuse": True}) == [{"status": "failure", "error": "ERR_REFUSED"}]
    assert log[:4] == ["open first", "open second", "first saw ApiError", "close first"]
    log.clear()
    assert await over_socket(server, {}) == [{"ok": True}]
    assert log == ["open first", "open second", "handler", "close second", "close first"]

    server2 = make_server()

    @server2.add_handler(dependencies=[broken_teardown])
    async def h2(client: Client, packet: Packet) -> dict[str, Any]:
        return {"sent": True}

    server3 = make_server()

    @server3.add_handler()
    async def h3(client: Client, packet: Packet, n: Annotated[int, Depends(twice)]) -> dict[str, Any]:
        return {"n": n}

    with caplog.at_level(logging.ERROR, logger="asyncapy"):
        assert await over_socket(server2, {}, {}) == [{"sent": True}, {"sent": True}]  # logged, no second reply
        assert await over_socket(server3, {}) == [{"n": 1}]
    assert "teardown of handler" in caplog.text and "disk full" in caplog.text
    assert "yielded more than once" in caplog.text


async def test_async_provider_and_class_provider() -> None:
    server = make_server()

    class Settings:
        def __init__(self, client: Client) -> None:
            self.address = client.address

    async def greeting(settings: Annotated[Settings, Depends(Settings)]) -> str:
        return f"hello {settings.address}"

    @server.add_handler()
    async def h(client: Client, packet: Packet, text: Annotated[str, Depends(greeting)]) -> dict[str, Any]:
        return {"text": text}

    assert await both(server, {}) == [{"text": "hello 127.0.0.1"}]


# -- schema ------------------------------------------------------------------------------------


def test_schema_lists_declared_errors_and_no_dependencies() -> None:
    server = make_server()

    def token(packet: Packet) -> str:
        return str(packet.get("token"))

    @server.add_handler(errors=["ERR_NOT_FOUND", "ERR_UNAUTHORIZED"], dependencies=[token])
    async def find(client: Client, packet: Packet[Order], user: Annotated[str, Depends(token)]) -> Placed:
        raise ApiError("ERR_NOT_FOUND")

    route = server.schema()["routes"][0]
    assert route["errors"] == ["ERR_NOT_FOUND", "ERR_UNAUTHORIZED"]
    assert "user" not in json.dumps(route) and "token" not in json.dumps(route)  # dependencies never leak
    assert route["accepts"] == {"$ref": "#/$defs/Order"}
    doc = server.asyncapi()
    (operation,) = doc["operations"].values()
    assert operation["x-asyncapy-errors"] == ["ERR_NOT_FOUND", "ERR_UNAUTHORIZED"]
    codes = doc["components"]["messages"]["error"]["payload"]["properties"]["error"]["enum"]
    assert {"ERR_NOT_FOUND", "ERR_UNAUTHORIZED", "ERR_NO_HANDLER"} <= set(codes)
    with pytest.raises(UsageError, match="error codes"):
        Router().add_handler(errors=["not found"])(find)


# -- the general dispatch path: several groups, middleware, handler_timeout --------------------


async def test_middleware_over_several_groups_with_dependencies_and_rule_5() -> None:
    server = make_server(handler_timeout=5)
    log: list[str] = []

    def resource() -> Iterator[str]:
        log.append("open")
        try:
            yield "r"
        finally:
            log.append("close")

    @server.middleware
    async def mw(client: Client, packet: Packet, call_next: CallNext) -> None:
        log.append("mw")
        await call_next()

    @server.add_handler(group=-1)
    async def audit(client: Client, packet: Packet, r: Annotated[str, Depends(resource)]) -> None:
        log.append(f"audit {r}")
        if packet.get("fail"):
            raise KeyError("gone")

    @server.add_handler()
    async def place(client: Client, packet: Packet[Order], r: Annotated[str, Depends(resource)]) -> Placed:
        log.append(f"place {r}")
        return Placed(item=packet.data.item, qty=packet.data.qty)

    @server.exception_handler(KeyError)
    async def gone(client: Client, packet: Packet, exc: KeyError) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_GONE"}

    replies = await over_socket(
        server,
        {"kind": "order", "item": "tea", "qty": 1},
        {"kind": "order", "item": "tea"},
        {"fail": True},
    )
    assert replies[0] == {"item": "tea", "qty": 1}
    assert replies[1]["error"] == "ERR_NO_HANDLER" and replies[1]["errors"][0]["loc"] == ["qty"]
    assert replies[2] == {"status": "failure", "error": "ERR_GONE"}
    # one value per provider per packet, closed once after the packet's last reply
    assert log == [
        "mw", "open", "audit r", "place r", "close",
        "mw", "open", "audit r", "close",
        "mw", "open", "audit r", "close",
    ]  # fmt: skip


async def test_api_error_from_a_middleware_and_mapped_middleware_errors() -> None:
    server = make_server()

    @server.middleware
    async def guard(client: Client, packet: Packet, call_next: CallNext) -> None:
        if "token" not in packet:
            raise ApiError("ERR_UNAUTHORIZED", "no token")
        if packet["token"] == "bad":
            raise PermissionError("bad token")
        await call_next()

    @server.exception_handler(PermissionError)
    async def denied(client: Client, packet: Packet, exc: PermissionError) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_FORBIDDEN", "detail": str(exc)}

    @server.add_handler()
    async def ok(client: Client, packet: Packet) -> dict[str, Any]:
        return {"ok": True}

    replies = await both(server, {}, {"token": "bad"}, {"token": "good"})
    assert replies == [
        {"status": "failure", "error": "ERR_UNAUTHORIZED", "detail": "no token"},
        {"status": "failure", "error": "ERR_FORBIDDEN", "detail": "bad token"},
        {"ok": True},
    ]


def test_public_names() -> None:
    import asyncapy

    for name in ("ApiError", "CallNext", "Depends", "LifespanError"):
        assert name in asyncapy.__all__ and hasattr(asyncapy, name)
