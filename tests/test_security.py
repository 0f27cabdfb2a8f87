"""Authentication that says so (DESIGN §10), and ``ApiError`` as the app's own answer.

Real sockets throughout: a server on a loopback port and ``AsyncClient``; the shared
key store is a real ``redis-server``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from asyncapy import (
    APIKeyFactory,
    ApiError,
    ApiKeyAuth,
    AsyncAPYError,
    Client,
    Depends,
    Packet,
    Router,
    SecurityScheme,
    Server,
    Unauthorized,
    UsageError,
)
from asyncapy.client import AsyncClient
from asyncapy.docs.docspage import render
from asyncapy.filters import RateLimit
from asyncapy.redis import RedisState

from .asyncapi_validation import json_schema_errors, parse_with_official_parser, require_parser
from .conftest import make_server, running
from .services import RedisProcess, redis_server  # noqa: F401  (fixture)


class Search(BaseModel):
    q: str


class SessionToken(SecurityScheme):
    """A session token from the login operation, in the field `token`."""

    field = "token"

    def __init__(self, sessions: dict[str, str]) -> None:
        self.sessions = sessions

    def authenticate(self, packet: Packet) -> str:
        user = self.sessions.get(str(packet.get("token")))
        if user is None:
            raise Unauthorized("log in first")
        return user


class AsyncToken(SessionToken):
    """The same, checked by an awaitable lookup."""

    scheme_name = "asyncToken"

    async def authenticate(self, packet: Packet) -> str:  # type: ignore[override]
        return SessionToken.authenticate(self, packet)


TOKENS = SessionToken({"t-1": "ada"})


def short(named: dict[str, Any]) -> dict[str, Any]:
    """Operations or routes by the last part of their handler's name (``f.<locals>.report``: ``report``)."""
    return {name.replace(".", "_").rsplit("_", 1)[-1]: value for name, value in named.items()}


async def ask(server: Server, *payloads: dict[str, Any]) -> list[dict[str, Any]]:
    async with running(server), AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        return [await client.request(payload) for payload in payloads]


# -- ApiError is the app's answer -------------------------------------------------------------


@pytest.mark.parametrize("catch_all", [Exception, AsyncAPYError])
async def test_api_error_is_never_caught_by_a_base_class_handler(catch_all: type[Exception]) -> None:
    server = make_server()

    @server.add_handler(dependencies=[RateLimit("2/minute")])
    async def fails(client: Client, packet: Packet) -> dict[str, Any]:
        if packet.get("how") == "api":
            raise ApiError("ERR_ONE", "the app's answer")
        raise catch_all("unexpected")

    @server.exception_handler(catch_all)
    async def catch(client: Client, packet: Packet, exc: Exception) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_CAUGHT", "detail": type(exc).__name__}

    replies = await ask(server, {"how": "api"}, {"how": "boom"}, {"how": "api"})
    assert replies[0] == {"status": "failure", "error": "ERR_ONE", "detail": "the app's answer"}
    assert replies[1] == {"status": "failure", "error": "ERR_CAUGHT", "detail": catch_all.__name__}
    assert replies[2]["error"] == "ERR_RATE_LIMITED"  # an ApiError subclass raised by a dependency: not caught either


async def test_a_handler_registered_for_api_error_itself_still_maps_it() -> None:
    server = make_server()

    @server.add_handler()
    async def fails(client: Client, packet: Packet) -> None:
        raise ApiError("ERR_ONE")

    @server.exception_handler(ApiError)
    async def rename(client: Client, packet: Packet, exc: ApiError) -> dict[str, Any]:
        return {"status": "failure", "error": f"ERR_MAPPED_{exc.code}"}

    assert await ask(server, {}) == [{"status": "failure", "error": "ERR_MAPPED_ERR_ONE"}]


# -- ApiKeyAuth ---------------------------------------------------------------------------------


def guarded_server(auth: SecurityScheme) -> Server:
    server = make_server()

    @server.add_handler(dependencies=[auth])
    async def search(client: Client, packet: Packet[Search]) -> dict[str, Any]:
        return {"found": packet.data.q}

    @server.add_handler()
    async def whoami(client: Client, packet: Packet, who: str = Depends(auth)) -> dict[str, Any]:
        return {"you": who}

    return server


@pytest.mark.parametrize("keys", [APIKeyFactory(["k-1"]), ["k-1"]], ids=["factory", "iterable"])
async def test_api_key_auth_answers_unauthorized_not_no_handler(keys: Any) -> None:
    server = guarded_server(ApiKeyAuth(keys))
    replies = await ask(
        server,
        {"q": "tea", "api_key": "k-1"},
        {"q": "tea"},
        {"q": "tea", "api_key": "wrong"},
        {"q": "tea", "api_key": 7},
        {"api_key": "k-1"},
    )
    assert replies[0] == {"found": "tea"}
    assert replies[1] == {"status": "failure", "error": "ERR_UNAUTHORIZED", "detail": "no API key: send it in field 'api_key'"}
    assert replies[2] == {"status": "failure", "error": "ERR_UNAUTHORIZED", "detail": "unknown API key in field 'api_key'"}
    assert replies[3]["error"] == "ERR_UNAUTHORIZED"
    assert replies[4] == {"you": "k-1"}  # the dependency's value is the key
    assert "wrong" not in str(replies)  # the candidate key never travels back


async def test_api_key_auth_in_another_field_and_with_keys_in_redis(redis_server: RedisProcess) -> None:  # noqa: F811
    state = RedisState(redis_server.url, namespace="auth", timeout=3.0)
    keys = APIKeyFactory(store=state)
    key = await keys.acreate()
    server = guarded_server(ApiKeyAuth(keys, field="key"))
    replies = await ask(server, {"q": "a", "key": key}, {"q": "a", "api_key": key}, {"key": key})
    assert replies[0] == {"found": "a"}
    assert replies[1]["error"] == "ERR_UNAUTHORIZED" and "'key'" in replies[1]["detail"]
    assert replies[2] == {"you": key}
    await keys.arevoke(key)
    assert (await ask(server, {"q": "a", "key": key}))[0]["error"] == "ERR_UNAUTHORIZED"
    await state.aclose()


@pytest.mark.parametrize("scheme", [SessionToken, AsyncToken])
async def test_a_custom_scheme_and_depends_of_a_scheme(scheme: type[SessionToken]) -> None:
    auth = scheme({"t-ada": "ada"})
    server = make_server()

    @server.add_handler()
    async def me(client: Client, packet: Packet, user: str = Depends(auth)) -> dict[str, Any]:
        return {"user": user}

    assert await ask(server, {"token": "t-ada"}, {"token": "nope"}) == [
        {"user": "ada"},
        {"status": "failure", "error": "ERR_UNAUTHORIZED", "detail": "log in first"},
    ]


def test_a_scheme_without_authenticate_fails_at_registration() -> None:
    class Nothing(SecurityScheme):
        """Checks nothing."""

    server = make_server()
    with pytest.raises(UsageError, match="Nothing must define authenticate"):
        server.register_handler(_any_handler, dependencies=[Nothing()])
    with pytest.raises(UsageError, match="field is the payload key"):
        ApiKeyAuth(["k"], field="")


async def _any_handler(client: Client, packet: Packet) -> None:
    pass


# -- Router(errors=...), the schema, AsyncAPI and the docs page --------------------------------------


def documented_server() -> Server:
    keys = APIKeyFactory(["k"])
    server = make_server()
    admin = Router(dependencies=[ApiKeyAuth(keys)], errors=["ERR_FORBIDDEN"])
    reports = Router(errors=["ERR_NOT_FOUND", "ERR_FORBIDDEN"])

    @reports.add_handler(errors=["ERR_TOO_BIG"])
    async def report(client: Client, packet: Packet[Search]) -> dict[str, Any]:
        return {}

    @server.add_handler()
    async def public(client: Client, packet: Packet) -> dict[str, Any]:
        return {}

    @server.add_handler(group=1)
    async def me(client: Client, packet: Packet, user: Annotated[str, TOKENS]) -> dict[str, Any]:
        return {}

    admin.include_router(reports)
    server.include_router(admin)
    return server


def test_router_errors_apply_to_every_route_of_the_router() -> None:
    routes = short({route["handler"]: route for route in documented_server().schema()["routes"]})
    assert routes["report"]["errors"] == ["ERR_TOO_BIG", "ERR_NOT_FOUND", "ERR_FORBIDDEN", "ERR_UNAUTHORIZED"]
    assert routes["public"]["errors"] == [] and routes["public"]["security"] == []
    assert [entry["name"] for entry in routes["report"]["security"]] == ["apiKey"]
    assert routes["report"]["accepts"]["allOf"][1]["required"] == ["api_key"]  # the credential is part of the request
    with pytest.raises(UsageError, match="Router\\(errors=...\\)"):
        Router(errors=["not a code"])


def test_security_schemes_in_asyncapi_pass_the_official_parser(tmp_path: Path) -> None:
    doc = documented_server().asyncapi(title="Secured", version="2.0.0")
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        "type": "apiKey",
        "in": "user",
        "description": "An API key in the packet's field `api_key`; a missing or unknown key is answered ERR_UNAUTHORIZED.",
        "x-asyncapy-field": "api_key",
    }
    assert schemes["SessionToken"]["description"] == "A session token from the login operation, in the field `token`."
    ops = short(doc["operations"])
    assert ops["report"]["security"] == [{"$ref": "#/components/securitySchemes/apiKey"}]
    assert ops["me"]["security"] == [{"$ref": "#/components/securitySchemes/SessionToken"}]
    assert "security" not in ops["public"]
    assert "ERR_UNAUTHORIZED" in doc["components"]["messages"]["error"]["payload"]["properties"]["error"]["enum"]
    assert json_schema_errors(doc) == []
    require_parser()
    result = parse_with_official_parser({"secured": doc}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_schemes_of_one_name_get_two_keys() -> None:
    server = make_server()

    @server.add_handler(dependencies=[ApiKeyAuth(["a"], name="key")])
    async def one(client: Client, packet: Packet[Search]) -> None:
        pass

    @server.add_handler(dependencies=[ApiKeyAuth(["b"], field="other", name="key")])
    async def two(client: Client, packet: Packet) -> None:
        pass

    doc = server.asyncapi()
    assert set(doc["components"]["securitySchemes"]) == {"key", "key_2"}
    assert short(doc["operations"])["two"]["security"] == [{"$ref": "#/components/securitySchemes/key_2"}]


def test_the_docs_page_shows_the_schemes_and_who_they_guard() -> None:
    page = render(documented_server().asyncapi())
    assert '<section id="security">' in page and '<a href="#security">Security</a>' in page
    assert '<tr id="security-apiKey"><td><code>apiKey</code></td><td>apiKey</td><td>field <code>api_key</code></td>' in page
    report = page[page.index('_report"><h3>') : page.index("</article>", page.index('_report"><h3>'))]
    assert '<h4>Security</h4><ul><li><a href="#security-apiKey">apiKey</a>' in report
    public = page[page.index('_public"><h3>') : page.index("</article>", page.index('_public"><h3>'))]
    assert "Security" not in public
    assert "a security scheme refused the packet" in page  # ERR_UNAUTHORIZED in the error table
