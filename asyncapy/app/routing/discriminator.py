"""Find a group's discriminator: a payload key every typed model pins with a ``Literal``.

The index built on it must never hide a handler that the naive loop would run, so
a field only counts when validation cannot turn another value into one of its tags:
required, a plain ``Literal`` of str/int values, one payload key, and no validator
that runs before the literal check (model ``before``/``wrap``, field ``before``/
``wrap``/``plain``, or ``Annotated`` metadata).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, RootModel

Tag = str | int
_EARLY_MODES = ("before", "wrap", "plain")


def find_discriminator(model_sets: Sequence[tuple[type[BaseModel], ...]]) -> tuple[str, list[frozenset[Tag]]] | None:
    """The shared tag key and each model set's tags, or None if the models share none."""
    if not model_sets:
        return None
    tag_maps = [[literal_fields(m) for m in models] for models in model_sets]
    flat = [fields for per_set in tag_maps for fields in per_set]
    shared = [key for key in flat[0] if all(key in fields for fields in flat[1:])]
    if not shared:
        return None
    key = shared[0]
    return key, [frozenset().union(*(fields[key] for fields in per_set)) for per_set in tag_maps]


def literal_fields(model: type[BaseModel]) -> dict[str, frozenset[Tag]]:
    """Payload key -> allowed tags, for every field of ``model`` that can serve as an index."""
    if issubclass(model, RootModel) or _has_early_model_validator(model):
        return {}
    out: dict[str, frozenset[Tag]] = {}
    for name, field in model.model_fields.items():
        key = _payload_key(model, name, field)
        tags = _literal_tags(field.annotation)
        if key is None or tags is None or not field.is_required() or field.metadata:
            continue
        if _has_early_field_validator(model, name):
            continue
        out[key] = tags
    return out


def _literal_tags(annotation: Any) -> frozenset[Tag] | None:
    if get_origin(annotation) is not Literal:
        return None
    values = get_args(annotation)
    if not values or not all(type(v) is str or type(v) is int for v in values):
        return None
    return frozenset(values)


def _payload_key(model: type[BaseModel], name: str, field: Any) -> str | None:
    """The one key the payload must use for this field, or None if several would do."""
    if field.validation_alias is not None and not isinstance(field.validation_alias, str):
        return None
    key = field.validation_alias or field.alias or name
    if key == name:
        return key
    config = model.model_config
    by_name = config.get("populate_by_name") or config.get("validate_by_name")
    if by_name or config.get("validate_by_alias") is False:
        return None
    return str(key)


def _has_early_model_validator(model: type[BaseModel]) -> bool:
    validators = model.__pydantic_decorators__.model_validators.values()
    return any(v.info.mode in ("before", "wrap") for v in validators)


def _has_early_field_validator(model: type[BaseModel], name: str) -> bool:
    for v in model.__pydantic_decorators__.field_validators.values():
        if (name in v.info.fields or "*" in v.info.fields) and v.info.mode in _EARLY_MODES:
            return True
    return False
