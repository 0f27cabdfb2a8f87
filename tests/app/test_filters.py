"""Filters: Ip, Fields, ApiKey, custom ones, and their composition."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import pytest
from pydantic import BaseModel

import asyncapy
from asyncapy import APIKeyFactory, Client, Packet, Router
from asyncapy.app.filters import ApiKey, Fields, Filter, Filters, Ip, as_filter
from asyncapy.app.routing import compile_routes

from ..routing_helpers import fake_client


async def passes(flt: Any, payload: dict[str, Any], address: str = "127.0.0.1") -> bool:
    client, _ = fake_client(address)
    result = as_filter(flt).check(client, Packet(payload))
    return bool(await result) if inspect.isawaitable(result) else bool(result)


@pytest.mark.parametrize(
    ("allowed", "address", "ok"),
    [
        (("127.0.0.1",), "127.0.0.1", True),
        (("127.0.0.1",), "127.0.0.2", False),
        (("10.0.0.0/8",), "10.200.1.1", True),
        (("10.0.0.0/8",), "11.0.0.1", False),
        (("::1",), "::1", True),
        (("2001:db8::/32",), "2001:db8::42", True),
        (("2001:db8::/32",), "2001:db9::1", False),
        (("10.0.0.0/8",), "::ffff:10.1.1.1", True),
        (("10.0.0.0/8", "::1"), "::1", True),
        (("10.0.0.0/8",), "not-an-ip", False),
    ],
)
async def test_ip(allowed: tuple[str, ...], address: str, ok: bool) -> None:
    assert await passes(Ip(*allowed), {}, address) is ok


def test_ip_rejects_bad_networks() -> None:
    with pytest.raises(ValueError):
        Ip("300.1.1.1")
    with pytest.raises(ValueError):
        Ip()


async def test_fields_means_exactly_these_keys() -> None:
    flt = Fields(user=r"\w+", token=None)
    assert await passes(flt, {"user": "bob", "token": 1})
    assert not await passes(flt, {"user": "bob"})  # missing key
    assert not await passes(flt, {"user": "bob", "token": 1, "extra": 0})  # extra key
    assert not await passes(flt, {"user": "bob!", "token": 1})  # regex is a fullmatch
    assert await passes(Fields(n=r"\d+"), {"n": 42})  # matched against str(value)
    assert not await passes(Fields(n=r"\d"), {"n": 42})


def test_fields_json_schema() -> None:
    assert Fields(a=r"\d+", b=None).json_schema() == {
        "type": "object",
        "required": ["a", "b"],
        "properties": {"a": {"pattern": r"^(?:\d+)$"}, "b": {}},
        "additionalProperties": False,
    }
    assert Ip("::1").json_schema() is None


async def test_api_key() -> None:
    keys = APIKeyFactory()
    key = keys.create()
    other = keys.create()
    assert len(key) >= 40 and key != other
    flt = ApiKey(keys)
    assert await passes(flt, {"api_key": key})
    assert not await passes(flt, {"api_key": key + "x"})
    assert not await passes(flt, {"api_key": 5})
    assert not await passes(flt, {})
    assert keys.revoke(key) and not keys.revoke(key)
    assert not await passes(flt, {"api_key": key})
    assert await passes(ApiKey(["s3cret"], field="token"), {"token": "s3cret"})
    assert Filters.APIFactory is ApiKey


async def test_api_key_check_is_one_hash_and_one_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same work with 3 keys or 100,000: the candidate hashed once, its digest looked up once."""
    import asyncapy.shared.apikeys as apikeys

    for count in (3, 100_000):
        keys = APIKeyFactory(f"key-{n}" for n in range(count))
        hashed: list[str] = []
        real = apikeys.key_digest

        def spy(key: str) -> bytes:
            hashed.append(key)
            return real(key)

        monkeypatch.setattr(apikeys, "key_digest", spy)
        assert await passes(ApiKey(keys), {"api_key": "key-1"})
        assert not await passes(ApiKey(keys), {"api_key": "key-x"})
        assert hashed == ["key-1", "key-x"]
        monkeypatch.undo()
    # Only SHA-256 digests are held, never a key.
    held = keys._digests
    assert all(len(d) == 32 for d in held) and hashlib.sha256(b"key-1").digest() in held
    assert b"key-1" not in held and "key-1" not in repr(keys)


def test_api_keys_are_never_shown() -> None:
    keys = APIKeyFactory()
    key = keys.create()
    flt = ApiKey(keys)
    for text in (repr(keys), repr(flt), flt.describe(), str(flt.json_schema())):
        assert key not in text


async def test_custom_filters_sync_async_and_objects() -> None:
    def sync(client: Client, packet: Packet) -> bool:
        return "a" in packet

    async def asynchronous(client: Client, packet: Packet) -> bool:
        return "b" in packet

    class HasC:
        def check(self, client: Client, packet: Packet) -> bool:
            return "c" in packet

    class AsyncHasD(Filter):
        async def check(self, client: Client, packet: Packet) -> bool:
            return "d" in packet

    assert await passes(sync, {"a": 1}) and not await passes(sync, {})
    assert await passes(asynchronous, {"b": 1}) and not await passes(asynchronous, {})
    assert await passes(HasC(), {"c": 1}) and not await passes(HasC(), {})
    assert await passes(AsyncHasD(), {"d": 1}) and not await passes(AsyncHasD(), {})
    assert "sync" in as_filter(sync).describe()


async def test_composition() -> None:
    async def has_b(client: Client, packet: Packet) -> bool:
        return "b" in packet

    a = Fields(a=None)
    both = Ip("127.0.0.1") & has_b
    either = a | has_b
    assert await passes(both, {"b": 1}) and not await passes(both, {"b": 1}, "10.0.0.1")
    assert await passes(either, {"a": 1}) and await passes(either, {"b": 1, "c": 2})
    assert not await passes(either, {"c": 1})
    assert await passes(~a, {"b": 1}) and not await passes(~a, {"a": 1})
    assert await passes(~as_filter(has_b), {}) and not await passes(~as_filter(has_b), {"b": 0})
    assert await passes(has_b & a | Ip("::1"), {"x": 1}, "::1")  # right operand __ror__/__rand__
    assert (a & Ip("::1")).cheap and not both.cheap
    assert (a & Fields(b=None)).json_schema() == {"allOf": [a.json_schema(), Fields(b=None).json_schema()]}
    assert "not exactly the fields a" == (~a).describe()


@pytest.mark.parametrize("other", [1, "x", None, 2.5])
def test_composing_with_a_non_filter_is_a_type_error(other: Any) -> None:
    with pytest.raises(TypeError, match="compose"):
        Fields(a=None) & other
    with pytest.raises(TypeError, match="compose"):
        other | Ip("::1")


def test_public_names() -> None:
    assert asyncapy.APIKeyFactory is APIKeyFactory
    assert asyncapy.filters.Ip is Ip and Filters.Ip is Ip and Filters.Fields is Fields
    assert "APIKeyFactory" in asyncapy.__all__ and "filters" in asyncapy.__all__


class Order(BaseModel):
    qty: int


async def test_custom_filters_run_after_validation_on_typed_data() -> None:
    """Custom filters see ``packet.data`` as the model; cheap ones run first, on the map."""
    seen: list[Any] = []

    def big_order(client: Client, packet: Packet[Order]) -> bool:
        seen.append(packet.data)
        return packet.data.qty > 10

    router, called = Router(), []

    @router.add_handler(big_order)
    async def bulk(client: Client, packet: Packet[Order]) -> None:
        called.append(packet.data.qty)

    plan = compile_routes(router.routes())
    client, _ = fake_client()
    assert await plan.dispatch(client, Packet({"qty": 50})) is None
    miss = await plan.dispatch(client, Packet({"qty": 5}))
    assert miss is not None and "filter failed: custom filter" in miss.detail
    assert await plan.dispatch(client, Packet({"qty": "many"})) is not None
    assert called == [50] and seen == [Order(qty=50), Order(qty=5)]  # never called on invalid data


def test_fields_describes_each_field_once() -> None:
    assert Fields(user=r"[a-z]{1,16}").describe() == "exactly the fields user (matching '[a-z]{1,16}')"
    assert Fields(user=r"\w+", token=None).describe() == "exactly the fields user (matching '\\\\w+'), token"
    assert Fields().describe() == "exactly the fields (none)"
