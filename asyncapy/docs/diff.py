"""``asyncapy diff OLD NEW``: what changed between two AsyncAPI documents, and what breaks (DESIGN §10).

Each operation (and each topic: an operation the server ``send``s on) of the old
document is compared with the one of the same id in the new one. A change is
*breaking* when a client built against OLD can fail against NEW:

- an operation or topic removed, or an operation's reply removed;
- in what clients send (a request): a field added as required or made required, a
  field's type narrowed (a type, a ``Literal`` value, a union member no longer
  accepted; a bound tightened; a closed model), a field removed from a closed model;
- in what clients read (a reply, a stream item, a topic event): a field removed or made
  optional, a type widened (a new type or ``Literal`` value they may not expect);
- a field's alias renamed (one field gone, one with the same schema come);
- a security scheme added to an operation.

Everything else is compatible (new operations, optional request fields, narrower
replies, new error codes...). The model: ``buf breaking`` for protobuf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = ["Change", "diff_documents", "format_changes"]

REQUEST: Final = "request"  # what clients send: narrowing breaks them
REPLY: Final = "reply"  # what clients read: widening breaks them
_BOUNDS_LOW: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_BOUNDS_HIGH: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT: Final = ("pattern", "format", "multipleOf")
_MAX_REFS: Final = 32  # a chain of $refs longer than this is cut (a malformed document)


@dataclass(frozen=True)
class Change:
    """One difference: where (``operation``, ``path``), what (``rule``, ``message``), and whether it breaks."""

    operation: str
    kind: str  # "operation" or "topic"
    path: str
    rule: str
    breaking: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every change from ``old`` to ``new`` (two ``server.asyncapi()`` documents), operation by operation."""
    old_ops, new_ops = old.get("operations", {}), new.get("operations", {})
    changes: list[Change] = []
    for op_id, op in old_ops.items():
        kind = _kind(op)
        if op_id not in new_ops:
            changes.append(Change(op_id, kind, "", f"{kind}-removed", True, f"{kind} removed"))
            continue
        changes += _Operation(op_id, kind, _Side(old, op), _Side(new, new_ops[op_id])).changes()
    for op_id, op in new_ops.items():
        if op_id not in old_ops:
            kind = _kind(op)
            changes.append(Change(op_id, kind, "", f"{kind}-added", False, f"{kind} added"))
    return changes


def format_changes(changes: list[Change]) -> str:
    """The changes as text, grouped by operation, with a closing count."""
    if not changes:
        return "no changes\n"
    lines: list[str] = []
    current = None
    for change in changes:
        if change.operation != current:
            current = change.operation
            lines.append(f"{change.kind} {change.operation}")
        where = f"{change.path}: " if change.path else ""
        lines.append(f"  {'BREAKING  ' if change.breaking else 'compatible'}  {where}{change.message}")
    broken = sum(change.breaking for change in changes)
    lines.append(f"{broken} breaking, {len(changes) - broken} compatible")
    return "\n".join(lines) + "\n"


def _kind(op: Mapping[str, Any]) -> str:
    return "topic" if op.get("action") == "send" else "operation"


@dataclass(frozen=True)
class _Side:
    """One document and one of its operations: resolves ``$ref`` within that document."""

    doc: Mapping[str, Any]
    op: Mapping[str, Any]

    def resolve(self, node: Any) -> Any:
        for _ in range(_MAX_REFS):
            if not isinstance(node, Mapping) or not isinstance(node.get("$ref"), str):
                return node
            target: Any = self.doc
            for part in node["$ref"].lstrip("#").strip("/").split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, Mapping) else None
            if target is None:
                return {}
            node = target
        return {}

    def payload(self, refs: Any) -> Any:
        """The payload schema of a list of message references (a union when there are several)."""
        payloads = [self.resolve(self.resolve(ref).get("payload", {})) for ref in refs or ()]
        if not payloads:
            return None
        return payloads[0] if len(payloads) == 1 else {"oneOf": payloads}

    def security(self) -> list[str]:
        return [str(ref.get("$ref", ref.get("type", "?"))).rsplit("/", 1)[-1] for ref in self.op.get("security", [])]


class _Operation:
    """Compares one operation in two documents."""

    def __init__(self, op_id: str, kind: str, old: _Side, new: _Side) -> None:
        self.op_id, self.kind, self.old, self.new = op_id, kind, old, new
        self.found: list[Change] = []

    def changes(self) -> list[Change]:
        old, new = self.old.op, self.new.op
        if self.kind == "topic":
            self._schema(self.old.payload(old.get("messages")), self.new.payload(new.get("messages")), "event", REPLY)
        else:
            self._schema(self.old.payload(old.get("messages")), self.new.payload(new.get("messages")), "request", REQUEST)
            self._reply(old, new)
        self._security()
        self._errors()
        return self.found

    def add(self, path: str, rule: str, breaking: bool, message: str) -> None:
        self.found.append(Change(self.op_id, self.kind, path, rule, breaking, message))

    def _reply(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        label = "item" if old.get("x-asyncapy-stream") or new.get("x-asyncapy-stream") else "reply"
        before = self.old.payload(old.get("reply", {}).get("messages"))
        after = self.new.payload(new.get("reply", {}).get("messages"))
        if before is not None and after is None:
            self.add(label, f"{label}-removed", True, f"the declared {label} is gone")
        elif before is None and after is not None:
            self.add(label, f"{label}-added", False, f"a {label} is declared")
        elif before is not None:
            self._schema(before, after, label, REPLY)

    def _security(self) -> None:
        before, after = self.old.security(), self.new.security()
        for name in after:
            if name not in before:
                self.add("security", "security-added", True, f"security scheme {name} now guards it")
        for name in before:
            if name not in after:
                self.add("security", "security-removed", False, f"security scheme {name} no longer guards it")

    def _errors(self) -> None:
        before = self.old.op.get("x-asyncapy-errors", [])
        after = self.new.op.get("x-asyncapy-errors", [])
        for code in after:
            if code not in before:
                self.add("errors", "error-added", False, f"may answer {code}")
        for code in before:
            if code not in after:
                self.add("errors", "error-removed", False, f"no longer declares {code}")

    # -- schemas -------------------------------------------------------------------------------

    def _schema(self, old: Any, new: Any, path: str, direction: str) -> None:
        """Compare two schemas of what flows in ``direction`` at ``path``."""
        old_branches = list(_branches(old, self.old))
        new_branches = list(_branches(new, self.new))
        if _is_any(old_branches) or _is_any(new_branches):
            if not _is_any(new_branches):
                self._narrowed(path, direction, "type-narrowed", "accepted any value, now " + _describe(new_branches))
            elif not _is_any(old_branches):
                self._widened(path, direction, "type-widened", f"was {_describe(old_branches)}, now any value")
            return
        self._objects(old_branches, new_branches, path, direction)
        self._arrays(old_branches, new_branches, path, direction)
        self._scalars(old_branches, new_branches, path, direction)

    def _narrowed(self, path: str, direction: str, rule: str, message: str) -> None:
        self.add(path, rule, direction == REQUEST, message)

    def _widened(self, path: str, direction: str, rule: str, message: str) -> None:
        self.add(path, rule, direction == REPLY, message)

    def _objects(self, old: list[Any], new: list[Any], path: str, direction: str) -> None:
        before = [b for b in old if _shape(b) == "object"]
        after = [b for b in new if _shape(b) == "object"]
        if len(before) == 1 and len(after) == 1:
            self._object(before[0], after[0], path, direction)
            return
        by_title = {b.get("title"): b for b in after}
        for branch in before:
            match = by_title.pop(branch.get("title"), None)
            if match is None:
                self._narrowed(path, direction, "variant-removed", f"{_title(branch)} is no longer one of its forms")
            else:
                self._object(branch, match, path, direction)
        for branch in by_title.values():
            self._widened(path, direction, "variant-added", f"{_title(branch)} is one of its forms now")

    def _object(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, direction: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
        removed = [name for name in old_props if name not in new_props]
        added = [name for name in new_props if name not in old_props]
        for old_name, new_name in _renames(removed, added, old_props, new_props, old_req, new_req):
            removed.remove(old_name)
            added.remove(new_name)
            self.add(_join(path, old_name), "alias-renamed", True, f"field {old_name!r} is now named {new_name!r}")
        closed = new.get("additionalProperties") is False
        for name in removed:
            where = _join(path, name)
            if direction == REPLY:
                self.add(where, "field-removed", True, "field removed")
            else:
                self.add(where, "field-removed", closed, "field removed" + (" (and other fields are refused)" if closed else ""))
        for name in added:
            where = _join(path, name)
            if direction == REQUEST and name in new_req:
                self.add(where, "field-added-required", True, "field added as required")
            else:
                self.add(where, "field-added", False, "field added" + (" (optional)" if name not in new_req else ""))
        for name in old_props:
            if name not in new_props:
                continue
            where = _join(path, name)
            if name in old_req and name not in new_req:
                self.add(where, "field-made-optional", direction == REPLY, "field made optional")
            elif name not in old_req and name in new_req:
                self.add(where, "field-made-required", direction == REQUEST, "field made required")
            self._schema(old_props[name], new_props[name], where, direction)
        if old.get("additionalProperties") is not False and closed and direction == REQUEST:
            self.add(path, "closed", True, "other fields are refused now")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            self._schema(old_extra, new_extra, path + "{}", direction)

    def _arrays(self, old: list[Any], new: list[Any], path: str, direction: str) -> None:
        before = [b for b in old if _shape(b) == "array"]
        after = [b for b in new if _shape(b) == "array"]
        if len(before) == 1 and len(after) == 1:
            self._bounds(before[0], after[0], path, direction)
            self._schema(before[0].get("items", {}), after[0].get("items", {}), path + "[]", direction)

    def _scalars(self, old: list[Any], new: list[Any], path: str, direction: str) -> None:
        old_types, old_values = _accepts(old)
        new_types, new_values = _accepts(new)
        verb = "accepted" if direction == REQUEST else "sent"
        for kind in sorted(old_types - _covered(new_types)):
            self._narrowed(path, direction, "type-narrowed", f"{_kind_name(kind)} no longer {verb} (now {_describe(new)})")
        for kind in sorted(new_types - _covered(old_types)):
            self._widened(path, direction, "type-widened", f"{_kind_name(kind)} {verb} now (was {_describe(old)})")
        for value in sorted(old_values - new_values):
            if _type_of(json.loads(value)) not in _covered(new_types):
                self._narrowed(path, direction, "value-removed", f"value {value} removed")
        for value in sorted(new_values - old_values):
            if _type_of(json.loads(value)) not in _covered(old_types):
                self._widened(path, direction, "value-added", f"value {value} added")
        before = {_shape(b): b for b in old if _shape(b) in _SCALARS}
        after = {_shape(b): b for b in new if _shape(b) in _SCALARS}
        for kind in before.keys() & after.keys():
            self._bounds(before[kind], after[kind], path, direction)

    def _bounds(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, direction: str) -> None:
        for key in _BOUNDS_LOW + _BOUNDS_HIGH:
            before, after = old.get(key), new.get(key)
            if before == after or not _number(before, after):
                continue
            low = key in _BOUNDS_LOW
            tighter = after is not None and (before is None or (after > before if low else after < before))
            message = f"{key} {_show(before)} -> {_show(after)}"
            if tighter:
                self._narrowed(path, direction, "type-narrowed", message)
            else:
                self._widened(path, direction, "type-widened", message)
        for key in _EXACT:
            before, after = old.get(key), new.get(key)
            if before == after:
                continue
            message = f"{key} {_show(before)} -> {_show(after)}"
            if before is None:
                self._narrowed(path, direction, "type-narrowed", message)
            elif after is None:
                self._widened(path, direction, "type-widened", message)
            else:
                self.add(path, "type-changed", True, message)


_SCALARS: Final = frozenset({"string", "integer", "number", "boolean", "null"})


def _branches(schema: Any, side: _Side, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """The alternatives a schema allows, each resolved and with its ``allOf`` merged (one type each)."""
    schema = side.resolve(schema)
    if not isinstance(schema, Mapping) or depth > _MAX_REFS:
        yield {}
        return
    if "allOf" in schema:
        schema = _merge_all_of(schema, side)
    union = schema.get("anyOf") or schema.get("oneOf")
    if union:
        for member in union:
            yield from _branches(member, side, depth + 1)
        return
    kind = schema.get("type")
    if isinstance(kind, list):
        for one in kind:
            yield {**schema, "type": one}
        return
    yield schema


def _merge_all_of(schema: Mapping[str, Any], side: _Side) -> dict[str, Any]:
    """``allOf`` as one schema: a model and its filters' schemas become one object (pydantic's
    ``allOf: [{"$ref"}]`` wrappers become what they wrap)."""
    merged: dict[str, Any] = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        part = side.resolve(part)
        if not isinstance(part, Mapping):
            continue
        if "allOf" in part:
            part = _merge_all_of(part, side)
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            elif key == "type" and value == "object" or key not in merged:
                merged[key] = value
    return merged


def _shape(branch: Mapping[str, Any]) -> str:
    if "const" in branch or "enum" in branch:
        return "literal"
    kind = branch.get("type")
    if kind == "object" or "properties" in branch:
        return "object"
    if kind == "array" or "items" in branch:
        return "array"
    return str(kind) if kind in _SCALARS else "any"


def _is_any(branches: list[Mapping[str, Any]]) -> bool:
    return any(_shape(b) == "any" for b in branches)


def _accepts(branches: list[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """The scalar types accepted as a whole, and the literal values (as JSON text, so they hash)."""
    types = {_shape(b) for b in branches if _shape(b) in _SCALARS}
    values: set[str] = set()
    for branch in branches:
        if "const" in branch:
            values.add(json.dumps(branch["const"], sort_keys=True))
        for value in branch.get("enum", ()):
            values.add(json.dumps(value, sort_keys=True))
    return types, values


def _covered(types: set[str]) -> set[str]:
    """Types accepted by ``types``: a JSON number accepts integers too."""
    return types | {"integer"} if "number" in types else types


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def _renames(
    removed: list[str], added: list[str], old: Mapping[str, Any], new: Mapping[str, Any], old_req: set[str], new_req: set[str]
) -> list[tuple[str, str]]:
    """Pairs (old name, new name) that are one field under a new alias: the same schema, the same presence."""
    pairs = []
    for name in removed:
        matches = [a for a in added if _same(old[name], new[a]) and (name in old_req) == (a in new_req)]
        if len(matches) == 1 and sum(_same(old[r], new[matches[0]]) for r in removed) == 1:
            pairs.append((name, matches[0]))
    return pairs


def _same(a: Any, b: Any) -> bool:
    """Equal schemas, titles aside (pydantic titles a field after its alias)."""
    return bool(_untitled(a) == _untitled(b))


def _untitled(schema: Any) -> Any:
    if isinstance(schema, Mapping):
        return {key: _untitled(value) for key, value in schema.items() if key != "title"}
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    return schema


def _describe(branches: list[Mapping[str, Any]]) -> str:
    parts = []
    for branch in branches:
        shape = _shape(branch)
        if shape == "literal":
            values = [branch["const"]] if "const" in branch else list(branch.get("enum", ()))
            parts.append(" | ".join(json.dumps(v) for v in values))
        elif shape == "object":
            parts.append(_title(branch))
        else:
            parts.append(shape)
    return " | ".join(parts) or "nothing"


def _title(branch: Mapping[str, Any]) -> str:
    return str(branch.get("title") or "an object")


def _kind_name(kind: str) -> str:
    return {"null": "null (None)"}.get(kind, kind)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _number(*values: Any) -> bool:
    return all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) for value in values)


def _show(value: Any) -> str:
    return "none" if value is None else json.dumps(value)
