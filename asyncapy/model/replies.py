"""Checked replies: what a handler returns against its declared reply type (DESIGN §4).

Worked out once per handler, from its return annotation:

    -> Model / -> A | B      an instance passes as it is (an ``isinstance`` check); a dict is
                             validated into the model; anything else, or None, is an error
    -> Model | None          the same, and None (nothing sent) is fine
    -> dict / dict[str, T]   a dict passes; anything else is an error (None too, unless allowed)
    -> None, no annotation,  not checked: the handler may send nothing (a returned dict or
       anything else          model is still sent, as before)

A failed check raises ``ReplyError`` naming the handler: the connection answers
ERR_INTERNAL and logs it, the reply is never sent.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

__all__ = ["ReplyError", "reply_checker"]


class ReplyError(Exception):
    """A handler's reply does not match its declared reply type (an ERR_INTERNAL)."""


Checker = Callable[[Any], Any]


def reply_checker(name: str, annotation: Any, verb: str = "returned") -> Checker | None:
    """``check(reply) -> reply to send`` for a handler's return annotation; None: nothing to check.

    ``verb``: how the errors say the handler gave the value ("yielded" for a stream's items).
    """
    bare = _strip(annotation)
    members = get_args(bare) if get_origin(bare) in (Union, types.UnionType) else (bare,)
    allow_none = type(None) in members or None in members
    members = tuple(_strip(m) for m in members if m is not type(None) and m is not None)
    if not members or not all(_is_model(m) or _is_dict(m) for m in members):
        return None
    models = tuple(m for m in members if _is_model(m))
    wants_dict = any(_is_dict(m) for m in members)
    shown = " | ".join(_show(m) for m in members) + (" | None" if allow_none else "")
    adapter: TypeAdapter[Any] | None = None
    if models:
        target: Any = models[0] if len(models) == 1 else Union[models]  # noqa: UP007
        adapter = TypeAdapter(target)

    def check(reply: Any) -> Any:
        if isinstance(reply, models):
            return reply
        if reply is None:
            if allow_none:
                return None
            raise ReplyError(f"handler {name!r} {verb} None, but its reply type is {shown}")
        if isinstance(reply, dict):
            if wants_dict:
                return reply
            assert adapter is not None
            try:
                return adapter.validate_python(reply)
            except ValidationError as exc:
                raise ReplyError(f"handler {name!r} {verb} a dict that is not a valid {shown}: {exc}") from None
        raise ReplyError(f"handler {name!r} {verb} a {type(reply).__name__}, but its reply type is {shown}")

    return check


def exact_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a ``-> Model`` annotation (no union, no None): its instances need no check at all."""
    bare = _strip(annotation)
    return bare if _is_model(bare) else None


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_dict(annotation: Any) -> bool:
    return annotation is dict or get_origin(annotation) is dict


def _show(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation)
