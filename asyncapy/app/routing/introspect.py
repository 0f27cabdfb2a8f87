"""Handler introspection: read a handler's signature once, at registration.

The packet parameter's annotation says what the handler accepts:

    Packet[Model] / Packet[A | B]   style "packet": ``packet.data`` is the instance
    Model / A | B / Union[A, B]     style "model": the handler receives the instance
    Packet / none / dict / Any      style "untyped": any map

An ``async def`` with ``yield`` (an async generator function) is a *streaming* handler
(DESIGN §9): its return annotation ``AsyncIterator[Item]`` (or ``AsyncGenerator[Item,
None]``, ``AsyncIterable[Item]``) names the type each yielded item is checked against,
a model, a union of models or a dict.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from ..depends import Dependency, dependency_params
from ...wire.errors import UsageError
from ...model.packet import Packet

Style = Literal["packet", "model", "untyped"]
_UNTYPED = (inspect.Parameter.empty, Any, dict, Mapping, Packet)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """What one handler accepts and returns, as read from its annotations."""

    style: Style
    models: tuple[type[BaseModel], ...]
    accepts: Any
    reply_type: Any
    #: The return annotation as written (``asyncapy.model.replies`` checks replies against it).
    returns: Any = None
    #: The parameters after ``(client, packet)``: name -> ``Depends``, in order.
    dependencies: tuple[tuple[str, Dependency], ...] = ()
    #: An async generator handler: ``reply_type``/``returns`` are its item type.
    stream: bool = False


def handler_name(handler: object) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


def inspect_handler(handler: Callable[..., Any]) -> HandlerSpec:
    """Read ``handler``'s packet annotation; a ``UsageError`` naming it when it is wrong."""
    name = handler_name(handler)
    stream = _is_async_gen(handler)
    if not stream and not _is_async(handler):
        raise UsageError(f"handler {name!r} must be an async function: write `async def {name}(client, packet)`")
    hints = _hints(handler, name)
    deps = dependency_params(handler, hints, 2)
    packet_param = _packet_parameter(handler, name, tuple(deps))
    annotation = hints.get(packet_param, inspect.Parameter.empty)
    style, accepts = _classify(annotation, name)
    models = () if accepts is None else _models_of(accepts)
    returns = hints.get("return")
    if stream:
        returns = _item_type(returns, name)
    elif _iterator_item(returns) is not None:
        raise UsageError(
            f"handler {name!r} is annotated to return {_show(returns)} but does not `yield`: "
            f"a streaming handler is an async generator (`yield item` in `async def {name}`)"
        )
    return HandlerSpec(style, models, accepts, _reply_type(returns), returns, tuple(deps.items()), stream)


_ASYNC_ITERATORS = (
    collections.abc.AsyncIterator, collections.abc.AsyncGenerator, collections.abc.AsyncIterable,
)  # fmt: skip


def _is_async_gen(handler: Callable[..., Any]) -> bool:
    if inspect.isasyncgenfunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with an async generator __call__
    return not inspect.isfunction(handler) and inspect.isasyncgenfunction(call)


def _iterator_item(annotation: Any) -> Any:
    """``X`` of ``AsyncIterator[X]`` / ``AsyncGenerator[X, None]`` / ``AsyncIterable[X]``; None otherwise."""
    bare = _strip(annotation)
    if get_origin(bare) in _ASYNC_ITERATORS:
        args = get_args(bare)
        return args[0] if args else Any
    return None


def _item_type(annotation: Any, name: str) -> Any:
    """A streaming handler's item type, from its return annotation; a ``UsageError`` when it has none."""
    fix = (
        f"annotate it `async def {name}(client, packet) -> AsyncIterator[Item]` "
        "(from collections.abc), where Item is a pydantic model, a union of models or dict"
    )
    item = _iterator_item(annotation)
    if item is None:
        shown = "no return annotation" if annotation is None else f"the return annotation {_show(annotation)}"
        raise UsageError(f"streaming handler {name!r} has {shown}: {fix}")
    if _reply_type(item) is None or _is_union(_strip(item)) and type(None) in get_args(_strip(item)):
        raise UsageError(f"streaming handler {name!r} yields {_show(item)}, which is not a model or a dict: {fix}")
    return item


def _is_async(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    return not inspect.isfunction(handler) and inspect.iscoroutinefunction(call)


def _packet_parameter(handler: Callable[..., Any], name: str, deps: tuple[str, ...] = ()) -> str:
    """The name of the second positional parameter, after checking the arity (dependencies aside)."""
    try:
        sig = inspect.signature(handler)
        sig.bind(object(), object(), **dict.fromkeys(deps))
    except (TypeError, ValueError):
        raise UsageError(
            f"handler {name!r} must take exactly two positional arguments: `async def {name}(client, packet)`"
        ) from None
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    return params[1].name if len(params) > 1 and params[1].kind is not inspect.Parameter.VAR_POSITIONAL else ""


def _hints(handler: Callable[..., Any], name: str) -> dict[str, Any]:
    target = handler if inspect.isfunction(handler) or inspect.ismethod(handler) else getattr(handler, "__call__")
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # NameError for a forward reference, TypeError for a bad one
        raise UsageError(
            f"handler {name!r}: cannot resolve its annotations ({exc}); "
            "import the models it names at module level"
        ) from None


def _classify(annotation: Any, name: str) -> tuple[Style, Any]:
    if _is_untyped(annotation):
        return "untyped", None
    if get_origin(annotation) is Packet:
        (inner,) = get_args(annotation)
        if _is_untyped(inner):
            return "untyped", None
        _check_models(inner, name)
        return "packet", inner
    _check_models(annotation, name)
    return "model", annotation


def _is_untyped(annotation: Any) -> bool:
    bare = _strip(annotation)
    return bare in _UNTYPED or get_origin(bare) in (dict, Mapping)


def _strip(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _models_of(annotation: Any) -> tuple[type[BaseModel], ...]:
    bare = _strip(annotation)
    if _is_union(bare):
        return tuple(m for arg in get_args(bare) for m in _models_of(arg))
    return (bare,)


def _is_model(annotation: Any) -> bool:
    bare = _strip(annotation)
    return isinstance(bare, type) and issubclass(bare, BaseModel)


def _check_models(annotation: Any, name: str) -> None:
    bare = _strip(annotation)
    members = get_args(bare) if _is_union(bare) else (bare,)
    for member in members:
        if _is_union(_strip(member)):
            _check_models(member, name)
        elif not _is_model(member):
            what = _show(member) if member is annotation else f"{_show(annotation)} has {_show(member)}, which"
            raise UsageError(
                f"handler {name!r}: its packet annotation {what} is not a "
                "pydantic model; annotate the packet with Packet[Model], a Model, a union of models, "
                "or Packet for any map"
            )


def _show(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation)


def _reply_type(annotation: Any) -> Any:
    """The return annotation when it is a model, a union of models or a dict (None dropped)."""
    bare = _strip(annotation)
    if _is_union(bare):
        members = tuple(a for a in get_args(bare) if a is not type(None))
        if members and all(_is_model(m) or _is_dict(m) for m in members):
            return members[0] if len(members) == 1 else Union[members]  # noqa: UP007
        return None
    return annotation if _is_model(bare) or _is_dict(bare) else None


def _is_dict(annotation: Any) -> bool:
    bare = _strip(annotation)
    return bare is dict or get_origin(bare) is dict
