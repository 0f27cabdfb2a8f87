"""The compiled, immutable pieces a ``Plan`` is made of (data only; no behaviour)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from ..filters import Filter

Tag = str | int


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRoute:
    """One handler ready for dispatch.

    The public attributes (``name``, ``group``, ``handler``, ``filters``, ``models``,
    ``accepts``, ``reply_type``, ``style``) are what schema export reads. ``pre`` are
    the cheap filters run before validation, ``post`` the custom ones run after it;
    ``tags`` are this route's values of its group's discriminator (None: untagged).
    ``validate`` is the adapter's pydantic-core validator, called without the Python
    wrapper of ``TypeAdapter.validate_python`` (it is on the hot path).
    ``call``/``call_data``/``run`` are how dispatch calls the handler (``routing.invoke``):
    ``call`` is ``handler`` itself unless dependencies or a reply check need more.
    ``errors`` are the ``ApiError`` codes the route declares; ``security`` the
    ``asyncapy.security`` schemes among its dependencies (for the schema and docs).
    ``stream``: an async generator handler whose ``reply_type`` is its item type.
    """

    name: str
    group: int
    handler: Callable[..., Any]  # an async function, or an async generator function (``stream``)
    filters: tuple[Filter, ...]
    models: tuple[type[BaseModel], ...]
    accepts: Any
    reply_type: Any | None
    style: Literal["packet", "model", "untyped"]
    order: int
    adapter: TypeAdapter[Any] | None
    validate: Callable[[Any], Any] | None
    pre: tuple[Filter, ...]
    post: tuple[Filter, ...]
    tags: frozenset[Tag] | None
    call: Callable[..., Awaitable[Any]]
    call_data: bool
    run: Callable[..., Awaitable[Any]] | None
    errors: tuple[str, ...] = ()
    security: tuple[Any, ...] = ()
    #: A streaming handler: ``reply_type`` is the type of each item it yields.
    stream: bool = False


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    """A group's routes in registration order, with its discriminator index if it has one.

    ``index[tag]`` lists, in registration order, the routes tagged ``tag`` and every
    untagged route; ``untagged`` serves a tag no route declares or a missing key.
    """

    group: int
    routes: tuple[CompiledRoute, ...]
    key: str | None
    index: Mapping[Tag, tuple[CompiledRoute, ...]]
    untagged: tuple[CompiledRoute, ...]


_MISSING: Any = object()


def candidates(group: CompiledGroup, payload: Mapping[str, Any]) -> tuple[CompiledRoute, ...]:
    """The routes of ``group`` that could accept ``payload``: one dict lookup when indexed.

    Only an exact ``str``/``int`` tag is looked up; any other value (a float or a
    bool that pydantic might coerce) gets every route, so the index never hides one.
    """
    key = group.key
    if key is None:
        return group.routes
    value = payload.get(key, _MISSING)
    kind = type(value)
    if kind is str or kind is int:
        return group.index.get(value, group.untagged)
    return group.untagged if value is _MISSING else group.routes
