"""The compiled plan calls exactly the handlers, in order, that the naive loop of DESIGN §3 calls."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal, Union

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from asyncapy import CallNext, Client, Packet, Router, StopPropagation
from asyncapy.serve.pipeline import Settings, build_pipeline, run_started
from asyncapy.model.sessions import SessionRegistry
from asyncapy.filters import Fields, Filter, Ip, as_filter
from asyncapy.app.routing import Miss, Plan, compile_routes
from asyncapy.app.routing.discriminator import literal_fields

from ..routing_helpers import RecordingLink, fake_client


class TagA(BaseModel):
    kind: Literal["a"]
    x: int


class TagB(BaseModel):
    kind: Literal["b"]
    x: int = 0


class TagAB(BaseModel):
    kind: Literal["a", "b"]
    y: str


class TagOne(BaseModel):
    kind: Literal[1]
    x: int


class TagStrict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["a"]


class TagLower(BaseModel):
    """A validator that runs before the literal check: must not be indexed."""

    kind: Literal["a"]

    @field_validator("kind", mode="before")
    @classmethod
    def lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class TagDefault(BaseModel):
    """A tag with a default: a packet without the key still validates."""

    kind: Literal["b"] = "b"
    x: int


class PlainX(BaseModel):
    x: int


class PlainY(BaseModel):
    y: str


TAGGED: list[Any] = [TagA, TagB, TagAB, TagOne, TagStrict, TagA | TagB, Union[TagAB, TagOne]]
UNTAGGED: list[Any] = [PlainX, PlainY, PlainX | PlainY, TagLower, TagDefault, None]


def has_y(client: object, packet: Packet) -> bool:
    return "y" in packet.payload


async def has_x(client: object, packet: Packet) -> bool:
    return "x" in packet.payload


class XIsSmall:
    def check(self, client: object, packet: Packet) -> bool:
        return isinstance(packet.payload.get("x"), int) and packet.payload["x"] < 2


FILTERS: list[Any] = [
    Fields(kind=None, x=r"\d+"),
    Fields(kind="a|b", y=None),
    Ip("127.0.0.1"),
    Ip("10.0.0.0/8", "::1"),
    has_y,
    has_x,
    XIsSmall(),
    ~Fields(kind=None, x=None),
    as_filter(has_x) | Ip("10.0.0.0/8"),
    as_filter(XIsSmall()) & has_y,
]
STYLES = ["packet", "model", "untyped"]
BEHAVIOURS = ["none", "stop", "raise", "reply"]
VALUES = ["a", "A", "b", "c", 1, "1", 0, True, 1.0, None, "xx"]


def _handler(i: int, style: str, accepts: Any, behaviour: str, log: list[int]) -> Callable[..., Any]:
    async def handler(client: object, packet: Any) -> Any:
        log.append(i)
        if behaviour == "stop" and style != "model":
            packet.stop_propagation()
        elif behaviour == "raise":
            raise StopPropagation
        elif behaviour == "reply":
            return {"from": i}
        return None

    annotation = {"packet": Packet[accepts], "model": accepts, "untyped": Packet}[style]
    handler.__annotations__ = {"client": object, "packet": annotation, "return": type(None)}
    handler.__qualname__ = f"h{i}"
    return handler


Entry = tuple[Any, tuple[int, ...], int, str, str]
_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _validates(accepts: Any, payload: dict[str, Any]) -> bool:
    adapter = _ADAPTERS.get(accepts) or _ADAPTERS.setdefault(accepts, TypeAdapter(accepts))
    try:
        adapter.validate_python(payload)
    except ValidationError:
        return False
    return True


async def _passes(flt: Any, client: Any, packet: Packet) -> bool:
    result = as_filter(flt).check(client, packet)
    return bool(await result) if inspect.isawaitable(result) else bool(result)


async def naive(entries: list[Entry], client: Any, payload: dict[str, Any]) -> tuple[list[int], bool]:
    """DESIGN §3 written as plainly as possible: the reference the plan must equal.

    Returns the handlers called and whether the packet was answered without
    ERR_NO_HANDLER: some group matched, and (rule 5) either every group it reached
    matched or something was sent (a "reply" handler returned a map).
    """
    called: list[int] = []
    packet = Packet(payload)
    some_group_missed = False
    sent = False
    for group in sorted({e[2] for e in entries}):
        matched = False
        for i, (accepts, filter_ids, g, style, behaviour) in enumerate(entries):
            if g != group:
                continue
            if not all([await _passes(FILTERS[f], client, packet) for f in filter_ids]):
                continue
            if accepts is not None and not _validates(accepts, payload):
                continue
            called.append(i)
            matched = True
            sent = sent or behaviour == "reply"
            # a model-style handler holds no packet, so its "stop" is a no-op
            if behaviour in ("stop", "raise") and not (behaviour == "stop" and style == "model" and accepts is not None):
                return called, not some_group_missed or sent
            break
        some_group_missed = some_group_missed or not matched
    return called, bool(called) and (not some_group_missed or sent)


def _plan(entries: list[Entry], log: list[int], dependencies: list[Any] | None = None) -> Plan:
    """The compiled plan of ``entries``; its handlers append their index to ``log``."""
    router = Router(dependencies=dependencies)
    for i, (accepts, filter_ids, group, style, behaviour) in enumerate(entries):
        handler = _handler(i, style, accepts, behaviour, log)
        router.register_handler(handler, *(FILTERS[f] for f in filter_ids), group=group)
    return compile_routes(router.routes())


async def with_dependency(entries: list[Entry], client: Any, payload: dict[str, Any]) -> tuple[list[int], bool]:
    """Every handler behind a generator dependency: same handlers, same misses; it opens
    once per packet that some handler accepted, and closes as often as it opens."""
    log: list[int] = []
    opened: list[int] = []
    closed: list[int] = []

    def tracked() -> Iterator[None]:
        opened.append(1)
        try:
            yield
        finally:
            closed.append(1)

    plan = _plan(entries, log, [tracked])
    if plan.simple:
        started = plan.start(client, Packet._received(payload, "json", client, b""))
        miss = started if isinstance(started, Miss) else None
        if miss is None:
            try:
                await started  # type: ignore[misc]
            except StopPropagation:
                pass
    else:
        miss = await plan.dispatch(client, Packet._received(payload, "json", client, b""))
    assert len(opened) == len(closed) == (1 if log else 0)
    return log, miss is None


async def compiled(entries: list[Entry], client: Any, payload: dict[str, Any]) -> tuple[list[int], bool]:
    log: list[int] = []
    plan = _plan(entries, log)
    miss = await plan.dispatch(client, Packet._received(payload, "json", client, b""))
    if miss is not None:
        _check_errors(plan, miss, entries)
    return log, miss is None


def _check_errors(plan: Plan, miss: Miss, entries: list[Entry]) -> None:
    """Each ``errors`` entry names a rejecting handler, its group and why, as DESIGN §3 rule 5 says."""
    by_name = {route.name: route for route in plan.routes}
    assert len(miss.errors) <= len(entries)
    for entry in miss.errors:
        assert set(entry) == {"handler", "group", "reason", "loc", "msg"}, entry
        route = by_name[entry["handler"]]
        assert entry["group"] == route.group
        assert entry["reason"] in ("filter", "validation")
        assert isinstance(entry["loc"], list) and isinstance(entry["msg"], str)
        assert entry["reason"] == "validation" or route.filters


async def started(entries: list[Entry], client: Any, payload: dict[str, Any]) -> tuple[list[int], bool, str] | None:
    """``plan.start`` (the connection's path for simple plans) run like dispatch; None if not simple."""
    log: list[int] = []
    plan = _plan(entries, log)
    if not plan.simple:
        return None
    coro = plan.start(client, Packet._received(payload, "json", client, b""))
    if isinstance(coro, Miss):
        miss = await plan.dispatch(client, Packet._received(payload, "json", client, b""))
        assert miss is not None and not log
        return log, False, coro.detail if coro.detail == miss.detail else f"{coro.detail} != {miss.detail}"
    try:
        await coro
    except StopPropagation:
        pass
    return log, True, ""


def entries_from(accept_pool: list[Any]) -> st.SearchStrategy[list[Entry]]:
    entry = st.tuples(
        st.sampled_from(accept_pool),
        st.lists(st.integers(0, len(FILTERS) - 1), max_size=2).map(tuple),
        st.sampled_from([-1, 0, 0, 1]),
        st.sampled_from(STYLES),
        st.sampled_from(BEHAVIOURS),
    )
    return st.lists(entry.map(_normalized), max_size=8)


def _normalized(entry: Entry) -> Entry:
    """An untyped handler accepts no model, and a handler without a model is untyped."""
    accepts, filter_ids, group, style, behaviour = entry
    if accepts is None or style == "untyped":
        return (None, filter_ids, group, "untyped", behaviour)
    return entry


payloads = st.lists(st.dictionaries(st.sampled_from(["kind", "x", "y"]), st.sampled_from(VALUES), max_size=3), min_size=1, max_size=4)


async def through_middleware(entries: list[Entry], address: str, payload: dict[str, Any]) -> tuple[list[int], bool]:
    """The plan behind a pass-through middleware (``App``): the same handlers, the same misses."""
    log: list[int] = []
    plan = _plan(entries, log)

    async def passthrough(client: Client, packet: Packet, call_next: CallNext) -> None:
        await call_next()

    link = RecordingLink()
    pipeline = build_pipeline(Settings(plan=plan, default_encoding=0, sessions=SessionRegistry(0), middleware=(passthrough,)))
    exchange = pipeline.open(link, address, 0, 0)
    assert exchange is not None
    link.exchange = exchange  # as a Connection holds its exchange
    client = exchange.client
    result = await run_started(pipeline.entry(client, Packet._received(payload, "json", client, b"")))
    assert result is None  # the middleware layer answers through the exchange
    missed = any(b'"ERR_NO_HANDLER"' in sent for sent in link.sent)
    assert not missed or link.sent[-1].count(b"ERR_NO_HANDLER") == 1
    return log, not missed


def _check(entries: list[Entry], packets: list[dict[str, Any]], address: str) -> None:
    client, _ = fake_client(address)
    logging.getLogger("asyncapy").setLevel(logging.ERROR)  # dead-route warnings are expected here
    for payload in packets:
        expected = asyncio.run(naive(entries, client, payload))
        assert asyncio.run(compiled(entries, client, payload)) == expected, payload
        assert asyncio.run(through_middleware(entries, address, payload)) == expected, payload
        assert asyncio.run(with_dependency(entries, client, payload)) == expected, payload
        fast = asyncio.run(started(entries, client, payload))
        if fast is not None:
            assert fast[:2] == expected, payload
            assert "!=" not in fast[2], fast[2]  # a miss is explained as dispatch explains it


@settings(max_examples=150, deadline=None)
@given(entries_from(TAGGED + UNTAGGED), payloads, st.sampled_from(["127.0.0.1", "10.1.2.3", "::1"]))
def test_plan_equals_naive_loop(entries: list[Entry], packets: list[dict[str, Any]], address: str) -> None:
    _check(entries, packets, address)


@settings(max_examples=150, deadline=None)
@given(entries_from(TAGGED + [TagLower, None]), payloads, st.sampled_from(["127.0.0.1", "10.1.2.3"]))
def test_indexed_plan_equals_naive_loop(entries: list[Entry], packets: list[dict[str, Any]], address: str) -> None:
    """Tagged models and untyped handlers: most groups get a discriminator index
    (not those with ``TagLower``, whose validator could turn "A" into its tag)."""
    _check(entries, packets, address)


def test_tagged_groups_are_indexed() -> None:
    router = Router()
    for i, accepts in enumerate([TagA, TagB, None, TagA | TagB, TagOne]):
        router.register_handler(_handler(i, "packet" if accepts else "untyped", accepts, "none", []))
    group = compile_routes(router.routes()).groups[0]
    assert group.key == "kind"
    assert [r.name for r in group.index["a"]] == ["h0", "h2", "h3"]
    assert [r.name for r in group.index[1]] == ["h2", "h4"]
    assert [r.name for r in group.untagged] == ["h2"]


def test_models_that_could_coerce_a_tag_are_not_indexed() -> None:
    router = Router()
    for i, accepts in enumerate([TagA, TagLower]):
        router.register_handler(_handler(i, "packet", accepts, "none", []))
    assert compile_routes(router.routes()).groups[0].key is None
    assert literal_fields(TagDefault) == {} and literal_fields(TagLower) == {}
    assert literal_fields(TagAB) == {"kind": frozenset({"a", "b"})}


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    kind: Literal["a"] = Field(alias="type")


class AliasOnly(BaseModel):
    kind: Literal["a"] = Field(alias="type")


def test_aliases_decide_the_payload_key() -> None:
    assert literal_fields(Aliased) == {}  # either key would do: no index
    assert literal_fields(AliasOnly) == {"type": frozenset({"a"})}


def test_filter_is_not_a_plain_callable_class() -> None:
    assert isinstance(as_filter(has_y), Filter)
