"""Authentication as dependencies that say so (DESIGN §10).

    keys = APIKeyFactory()
    auth = ApiKeyAuth(keys)                      # the key travels in the packet's "api_key"

    @server.add_handler(dependencies=[auth])     # guards the route: ERR_UNAUTHORIZED without a good key
    async def orders(client: Client, packet: Packet[Orders]) -> OrderList: ...

    @server.add_handler()
    async def me(client: Client, packet: Packet[Me], key: Annotated[str, auth]) -> Profile: ...

A scheme is a dependency (``dependencies=[scheme]``, ``Annotated[T, scheme]``,
``Depends(scheme)``, or inside a ``Router``), so it runs after filters and validation,
once per packet, and its value (the key, the user...) is there for the handler. A
missing or wrong credential raises ``Unauthorized``: ERR_UNAUTHORIZED, the connection
stays open. Every route it guards shows it: ``server.asyncapi()`` lists it under
``components/securitySchemes`` and the operation's ``security``; the request schema
requires its field; the docs page shows both. Write your own by subclassing
``SecurityScheme`` and defining ``authenticate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, ClassVar

from ..shared.apikeys import APIKeyFactory
from .depends import Dependency
from ..wire.errors import ERR_UNAUTHORIZED, ApiError, UsageError
from ..model.packet import Packet

__all__ = ["ApiKeyAuth", "SecurityScheme", "Unauthorized"]


class Unauthorized(ApiError):
    """A credential is missing or wrong: the packet's reply is ERR_UNAUTHORIZED (connection open)."""

    def __init__(self, detail: Any = None) -> None:
        super().__init__(ERR_UNAUTHORIZED, detail)


class SecurityScheme(Dependency):
    """Base of authentication dependencies.

    A subclass defines ``authenticate``, a provider like any other (sync or async; it
    takes the ``Client``, the ``Packet`` or other ``Depends``), that returns who or what
    was authenticated and raises ``Unauthorized`` to refuse. Class attributes describe
    it for the AsyncAPI document and the docs page: ``scheme_name`` (its key under
    ``components/securitySchemes``; default: the class name), ``field`` (the payload
    field holding the credential, required by the request schema; None: none) and the
    class docstring (its description). Override ``security_scheme()`` for another
    AsyncAPI Security Scheme Object than ``{"type": "apiKey", "in": "user"}``.

    Example:
        class SessionToken(SecurityScheme):
            \"\"\"A token from the login operation, in the field `token`.\"\"\"

            field = "token"

            def __init__(self, sessions: dict[str, str]) -> None:
                self.sessions = sessions

            def authenticate(self, packet: Packet) -> str:
                user = self.sessions.get(packet.get("token"))
                if user is None:
                    raise Unauthorized("log in first")
                return user
    """

    scheme_name: ClassVar[str | None] = None
    field: str | None = None
    #: How the schema export and the docs tell a scheme among a route's dependencies.
    asyncapy_security_scheme: ClassVar[bool] = True

    def __init__(self) -> None:
        """Nothing to set: a subclass's own ``__init__`` need not call it."""

    def __getattr__(self, name: str) -> Any:
        """A subclass need not call ``__init__``: the provider is its ``authenticate``, cached per packet."""
        if name == "provider":
            if not callable(getattr(type(self), "authenticate", None)):
                raise UsageError(f"{type(self).__name__} must define authenticate(...), the check it makes")
            return getattr(self, "authenticate")
        if name == "use_cache":
            return True
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def name(self) -> str:
        """The scheme's key under ``components/securitySchemes``."""
        return self.scheme_name or type(self).__name__

    def description(self) -> str:
        """One line for the AsyncAPI document and the docs page (default: the class docstring's first line)."""
        doc = inspect.getdoc(type(self))
        return doc.strip().splitlines()[0] if doc and type(self).__doc__ else type(self).__name__

    def security_scheme(self) -> dict[str, Any]:
        """The AsyncAPI 3.0 Security Scheme Object of this scheme."""
        scheme: dict[str, Any] = {"type": "apiKey", "in": "user", "description": self.description()}
        if self.field is not None:
            scheme["x-asyncapy-field"] = self.field
        return scheme

    def json_schema(self) -> dict[str, Any] | None:
        """What the request payload must hold for this scheme (its ``field``), as JSON Schema."""
        if self.field is None:
            return None
        return {"type": "object", "required": [self.field], "properties": {self.field: {"type": "string"}}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ApiKeyAuth(SecurityScheme):
    """An API key in the packet's ``field`` (default ``"api_key"``), one of ``keys``.

    ``keys`` is an ``APIKeyFactory`` (in memory, or in a shared store: then the check is
    one round trip, and a store that does not answer is ERR_INTERNAL) or an iterable
    of keys. The dependency's value is the key. A missing key and a wrong one are both
    ERR_UNAUTHORIZED (``detail`` says which, never the key).
    """

    scheme_name = "apiKey"
    field: str

    def __init__(self, keys: APIKeyFactory | Iterable[str], field: str = "api_key", *, name: str | None = None) -> None:
        if not isinstance(field, str) or not field:
            raise UsageError(f"ApiKeyAuth(keys, field=...): field is the payload key holding the API key, not {field!r}")
        self.keys = keys if isinstance(keys, APIKeyFactory) else APIKeyFactory(keys)
        self.field = field
        self._name = name
        # Decided once: a sync check for keys in memory (no coroutine per packet), an async one for a store.
        self.provider = self._check_stored if self.keys.store is not None else self._check
        self.use_cache = True

    @property
    def name(self) -> str:
        return self._name or ("apiKey" if self.field == "api_key" else f"apiKey_{self.field}")

    def description(self) -> str:
        return f"An API key in the packet's field `{self.field}`; a missing or unknown key is answered ERR_UNAUTHORIZED."

    def _check(self, packet: Packet) -> str:
        key = self._key(packet)
        if not self.keys.contains(key):
            raise Unauthorized(f"unknown API key in field {self.field!r}")
        return key

    async def _check_stored(self, packet: Packet) -> str:
        key = self._key(packet)
        if not await self.keys.acontains(key):
            raise Unauthorized(f"unknown API key in field {self.field!r}")
        return key

    def _key(self, packet: Packet) -> str:
        key = packet.payload.get(self.field)
        if not isinstance(key, str) or not key:
            raise Unauthorized(f"no API key: send it in field {self.field!r}")
        return key

    def __repr__(self) -> str:
        return f"ApiKeyAuth({self.keys!r}, field={self.field!r})"

