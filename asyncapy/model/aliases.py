"""Field aliases are the wire names (DESIGN §10): what decides, once per model, how it is sent.

pydantic validates by alias but serialises by field name unless asked. asyncapy asks:
a model with an alias anywhere in it (its fields, its nested models, its computed
fields) is sent with ``by_alias=True``, by the server (replies, ``client.send``) and by
the clients (``request(Model(...))``). Whether a model has one is read once from its
core schema and remembered, so a model without aliases is sent exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel

__all__ = ["has_aliases", "json_encoder", "dump_for_wire"]

#: Model class -> whether it has an alias; classes of the application, a bounded set.
_HAS_ALIASES: dict[type, bool] = {}


def has_aliases(model: type[BaseModel]) -> bool:
    """True when serialising ``model`` by alias differs from by field name (worked out once per class)."""
    found = _HAS_ALIASES.get(model)
    if found is None:
        found = _HAS_ALIASES[model] = _mentions_alias(model.__pydantic_core_schema__)
    return found


def json_encoder(model: type[BaseModel]) -> Callable[[Any], bytes]:
    """``instance -> JSON bytes`` for ``model``: pydantic-core's serializer, by alias when it has aliases."""
    to_json = model.__pydantic_serializer__.to_json
    return partial(to_json, by_alias=True) if has_aliases(model) else to_json


def dump_for_wire(instance: BaseModel) -> dict[str, Any]:
    """``instance`` as a JSON-compatible map keyed by its wire names (for codecs other than JSON)."""
    if has_aliases(type(instance)):
        return instance.model_dump(mode="json", by_alias=True)
    return instance.model_dump(mode="json")


def _mentions_alias(schema: Any) -> bool:
    """Whether a pydantic core schema (a tree of dicts and lists) sets a serialisation alias anywhere."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("serialization_alias") is not None:
                return True
            if node.get("type") == "computed-field" and node.get("alias") not in (None, node.get("property_name")):
                return True
            stack.extend(value for key, value in node.items() if key not in ("cls", "metadata", "config"))
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return False
