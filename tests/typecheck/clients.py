"""User-shaped client code that must type-check under ``mypy --strict`` (see test_mypy_clients.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy.client import AsyncClient, Client
from asyncapy.testing import AsyncTestClient, TestClient


class Login(BaseModel):
    user: str


class Welcome(BaseModel):
    greeting: str


async def asynchronous(client: AsyncClient, test_client: AsyncTestClient) -> None:
    assert_type(await client.request(Login(user="ann"), reply=Welcome), Welcome)
    assert_type(await client.request({"user": "ann"}, "ziproto", reply=Welcome), Welcome)
    assert_type(await client.request({"user": "ann"}), dict[str, Any])
    assert_type(await client.request({"user": "ann"}, raise_errors=True), dict[str, Any])
    assert_type(await test_client.request({"user": "ann"}, reply=Welcome), Welcome)
    assert_type(await test_client.request({"user": "ann"}), dict[str, Any])


def blocking(client: Client, test_client: TestClient) -> None:
    assert_type(client.request(Login(user="ann"), reply=Welcome), Welcome)
    assert_type(client.request({"user": "ann"}), dict[str, Any])
    assert_type(test_client.request({"user": "ann"}, reply=Welcome), Welcome)
    assert_type(test_client.request({"user": "ann"}, encoding="json"), dict[str, Any])
    with Client("127.0.0.1", 1500, pool_size=4, reconnect=False) as pooled:
        greeting: str = pooled.request({"user": "ann"}, reply=Welcome).greeting
        print(greeting)
