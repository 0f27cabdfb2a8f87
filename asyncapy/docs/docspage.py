"""The API documentation as one HTML page: ``asyncapy docs MODULE:SERVER -o api.html``.

``render(document)`` turns the AsyncAPI document of ``server.asyncapi()`` into one
self-contained page: the styles are inline, there is no script, no font, no image
and no link outside the page, so it renders offline and can be mailed or committed.
It shows the server and its framing, every operation (its group, filters, request
and reply schemas, an example packet of each, on the wire too), the models, and the
error codes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any, Final

#: What each error code means (docs/protocol.md); codes of the application are listed without one.
ERROR_MEANINGS: Final = {
    "ERR_HEADER_INVALID": ("unknown Protocol-Version or Content-Encoding, or Content-Length < 2", "stays open"),
    "ERR_REQUEST_MALFORMED": ("the payload does not decode, or is not a map", "stays open"),
    "ERR_PAYLOAD_TOO_LARGE": ("Content-Length over the server's maximum packet size", "closed"),
    "ERR_TIMED_OUT": ("no complete packet within the timeout, or a handler ran past handler_timeout", "closed (idle)"),
    "ERR_SESSION_LIMIT_REACHED": ("too many concurrent sessions from one IP address", "closed"),
    "ERR_SERVER_BUSY": ("too many open connections", "closed"),
    "ERR_NO_HANDLER": ("no handler in any group accepted the packet; detail and errors say why", "stays open"),
    "ERR_INTERNAL": ("a handler raised, or its reply could not be sent; the traceback is in the server's log", "stays open"),
    "ERR_RATE_LIMITED": ("over a rate limit; detail says when to retry", "stays open"),
    "ERR_UNAUTHORIZED": ("a security scheme refused the packet: its credential is missing or wrong", "stays open"),
    "ERR_SLOW_CONSUMER": ("a topic subscription fell more than max_buffered events behind; it ends", "stays open"),
}
_REF = "#/components/schemas/"
_MAX_DEPTH = 6  # example values of recursive models stop here


def render(doc: Mapping[str, Any]) -> str:
    """The HTML page of the AsyncAPI document ``doc`` (as ``server.asyncapi()`` returns it)."""
    schemas: Mapping[str, Any] = doc.get("components", {}).get("schemas", {})
    messages: Mapping[str, Any] = doc.get("components", {}).get("messages", {})
    security: Mapping[str, Any] = doc.get("components", {}).get("securitySchemes", {})
    info = doc.get("info", {})
    title = str(info.get("title", "API"))
    framing = _framing(doc)
    everything = doc.get("operations", {})
    operations = {op_id: op for op_id, op in everything.items() if "x-asyncapy-topic" not in op}
    topics = {op_id: op for op_id, op in everything.items() if "x-asyncapy-topic" in op}
    body = [
        f'<header><h1>{_e(title)}</h1><p class="version">version {_e(info.get("version", ""))}'
        f' · AsyncAPI {_e(doc.get("asyncapi", ""))}</p>',
        f"<p>{_e(info['description'])}</p>" if info.get("description") else "",
        "</header>",
        _nav(operations, schemas, security, topics),
        "<main>",
        _server_section(doc, framing),
        '<section id="operations"><h2>Operations</h2>',
        '<p class="note">Groups run in ascending order; inside a group the first handler whose filters pass and '
        "whose model validates the packet runs. A packet no handler accepts gets ERR_NO_HANDLER.</p>",
        *(_operation(op_id, op, messages, schemas, framing, security) for op_id, op in operations.items()),
        "</section>",
        _topics_section(topics, messages, schemas, framing),
        _security_section(security),
        _models_section(schemas),
        _errors_section(messages),
        "</main>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# -- sections -----------------------------------------------------------------------------


def _nav(
    operations: Mapping[str, Any], schemas: Mapping[str, Any], security: Mapping[str, Any], topics: Mapping[str, Any] | None = None
) -> str:
    items = "".join(f'<li><a href="#op-{_id(op_id)}">{_e(op_id)}</a></li>' for op_id in operations)
    models = "".join(f'<li><a href="#model-{_id(name)}">{_e(name)}</a></li>' for name in schemas)
    named = "".join(f'<li><a href="#op-{_id(op_id)}">{_e(op.get("x-asyncapy-topic"))}</a></li>' for op_id, op in (topics or {}).items())
    return (
        '<nav><a href="#server">Server</a><h3>Operations</h3><ul>' + items + "</ul>"
        + ("<h3>Topics</h3><ul>" + named + "</ul>" if named else "")
        + ('<a href="#security">Security</a>' if security else "")
        + ("<h3>Models</h3><ul>" + models + "</ul>" if models else "")
        + '<a href="#errors">Error codes</a></nav>'
    )  # fmt: skip


def _framing(doc: Mapping[str, Any]) -> dict[str, Any]:
    for server in doc.get("servers", {}).values():
        framing: dict[str, Any] = server.get("x-asyncapy-framing", {})
        return framing
    return {}


def _server_section(doc: Mapping[str, Any], framing: Mapping[str, Any]) -> str:
    rows = []
    for name, server in doc.get("servers", {}).items():
        rows.append(
            f"<tr><th>{_e(name)}</th><td><code>{_e(server.get('host', ''))}</code> ({_e(server.get('protocol', ''))})"
            f"<br>{_e(server.get('description', ''))}</td></tr>"
        )
    if framing:
        encodings = ", ".join(f"{_e(k)} = {_e(v)}" for k, v in framing.get("encodings", {}).items())
        rows.append(
            f"<tr><th>framing</th><td>Content-Length: {_e(framing.get('headerSize'))} bytes, "
            f"{_e(framing.get('byteorder'))} endian · Protocol-Version {_e(framing.get('protocolVersion'))} · "
            f"Content-Encoding: {encodings} · largest packet: {_e(framing.get('maxPacketSize'))} bytes</td></tr>"
        )
    return '<section id="server"><h2>Server</h2><table class="kv">' + "".join(rows) + "</table></section>"


def _operation(
    op_id: str,
    op: Mapping[str, Any],
    messages: Mapping[str, Any],
    schemas: Mapping[str, Any],
    framing: Mapping[str, Any],
    security: Mapping[str, Any] | None = None,
) -> str:
    request = _message(op.get("messages", []), messages)
    reply = _message(op.get("reply", {}).get("messages", []), messages)
    filters = op.get("x-asyncapy-filters", [])
    facts = [
        f'<span class="tag">group {_e(op.get("x-asyncapy-group", 0))}</span>',
        f'<span class="tag">{_e(op.get("x-asyncapy-style", ""))}</span>',
        f'<span class="tag">handler <code>{_e(op.get("x-asyncapy-handler", op_id))}</code></span>',
    ]
    streams = op.get("x-asyncapy-stream") is True
    if streams:
        facts.append('<span class="tag stream">stream: answers with items, then an end</span>')
    parts = [
        f'<article class="operation" id="op-{_id(op_id)}"><h3>{_e(op.get("title", op_id))}</h3>',
        '<p class="facts">' + " ".join(facts) + "</p>",
        f'<p class="summary">{_e(op["summary"])}</p>' if op.get("summary") else "",
        f"<p>{_e(op['description'])}</p>" if op.get("description") else "",
        '<div class="filters"><h4>Filters</h4>'
        + ("<ul>" + "".join(f"<li>{_e(f.get('description', ''))}</li>" for f in filters) + "</ul>" if filters else
           '<span class="none">none: every packet that validates</span>')
        + "</div>",
        _operation_security(op.get("security", []), security or {}),
        '<div class="io"><div class="request">',
        _payload_block("Request", request, schemas, framing),
        '</div><div class="reply">',
        _payload_block("Items (a stream)" if streams else "Reply", reply, schemas, framing) if reply is not None else '<h4>Reply</h4><p class="none">'
        "no declared reply (the handler sends what it sends)</p>",
        "</div></div></article>",
    ]
    return "\n".join(parts)


def _topics_section(
    topics: Mapping[str, Any], messages: Mapping[str, Any], schemas: Mapping[str, Any], framing: Mapping[str, Any]
) -> str:
    """Each topic: its name, its bound and the event its subscribers receive."""
    if not topics:
        return ""
    articles = []
    for op_id, op in topics.items():
        event = _message(op.get("messages", []), messages)
        articles.append(
            f'<article class="operation" id="op-{_id(op_id)}"><h3>{_e(op.get("x-asyncapy-topic"))}</h3>'
            f'<p class="facts"><span class="tag">topic</span> <span class="tag">max_buffered '
            f'{_e(op.get("x-asyncapy-max-buffered"))}</span></p>'
            + _payload_block("Event", event, schemas, framing) + "</article>"
        )  # fmt: skip
    return (
        '<section id="topics"><h2>Topics</h2><p class="note">Events the server publishes; a handler that '
        "subscribes sends them on its connection. A subscriber that falls more than max_buffered events "
        "behind gets those it holds, then ERR_SLOW_CONSUMER.</p>" + "\n".join(articles) + "</section>"
    )


def _operation_security(refs: list[Mapping[str, Any]], security: Mapping[str, Any]) -> str:
    """The schemes guarding an operation: a packet without their credential gets ERR_UNAUTHORIZED."""
    if not refs:
        return ""
    items = []
    for ref in refs:
        name = str(ref.get("$ref", "")).rsplit("/", 1)[-1]
        scheme = security.get(name, ref)
        items.append(f'<li><a href="#security-{_id(name)}">{_e(name)}</a>: {_e(scheme.get("description", ""))}</li>')
    return '<div class="filters security"><h4>Security</h4><ul>' + "".join(items) + "</ul></div>"


def _security_section(security: Mapping[str, Any]) -> str:
    if not security:
        return ""
    rows = "".join(
        f'<tr id="security-{_id(name)}"><td><code>{_e(name)}</code></td><td>{_e(scheme.get("type", ""))}</td>'
        f"<td>{_field_of(scheme)}</td><td>{_e(scheme.get('description', ''))}</td></tr>"
        for name, scheme in security.items()
    )
    return (
        '<section id="security"><h2>Security</h2><p>The operations a scheme guards answer ERR_UNAUTHORIZED to a '
        "packet whose credential is missing or wrong.</p>"
        '<table class="fields"><thead><tr><th>scheme</th><th>type</th><th>credential</th><th>description</th></tr>'
        f"</thead><tbody>{rows}</tbody></table></section>"
    )


def _field_of(scheme: Mapping[str, Any]) -> str:
    field = scheme.get("x-asyncapy-field")
    return f"field <code>{_e(field)}</code>" if field else ""


def _message(refs: list[Mapping[str, Any]], messages: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in refs:
        name = str(ref.get("$ref", "")).rsplit("/", 1)[-1]
        if name in messages:
            found: Mapping[str, Any] = messages[name]
            return found
    return None


def _payload_block(
    label: str, message: Mapping[str, Any] | None, schemas: Mapping[str, Any], framing: Mapping[str, Any]
) -> str:
    if message is None:
        return f'<h4>{label}</h4><p class="none">any map</p>'
    schema = message.get("payload", {})
    sample = example(schema, schemas)
    text = json.dumps(sample, indent=2, ensure_ascii=False)
    wire = _wire(sample, framing)
    return (
        f"<h4>{label}</h4>" + _schema_html(schema, schemas)
        + f'<div class="example"><div class="label">example {label.lower()}</div><pre>{_e(text)}</pre>'
        + f'<div class="label">on the wire (JSON)</div><pre class="wire">{_e(wire)}</pre></div>'
        + f"<details><summary>JSON Schema</summary><pre>{_e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre></details>"
    )  # fmt: skip


def _wire(sample: Any, framing: Mapping[str, Any]) -> str:
    payload = json.dumps(sample, ensure_ascii=False, separators=(",", ":")).encode()
    size = int(framing.get("headerSize", 4))
    try:
        if framing.get("byteorder") == "little":
            header = (len(payload) + 2).to_bytes(size, "little")
        else:
            header = (len(payload) + 2).to_bytes(size, "big")
    except OverflowError:
        return "(too large for the Content-Length field)"
    return repr(header + bytes((int(framing.get("protocolVersion", 22)), 0)) + payload)


def _schema_html(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> str:
    """A payload schema as a field table (objects) or a line (anything else)."""
    resolved = _resolve(schema, schemas)
    variants = resolved.get("oneOf") or resolved.get("anyOf")
    if variants:
        key = resolved.get("discriminator")
        head = "one of " + ", ".join(_type(v) for v in variants)
        return f'<p class="oneof">{head}{f" (chosen by <code>{_e(key)}</code>)" if key else ""}</p>' + "".join(
            _fields_table(_resolve(v, schemas)) for v in variants
        )
    if resolved.get("allOf"):
        resolved = _merge_all_of(resolved, schemas)
    if resolved.get("type") == "object" or "properties" in resolved:
        return _fields_table(resolved)
    return f"<p>{_type(resolved)}</p>"


def _merge_all_of(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every part of an ``allOf`` (a model and its filters' schemas) asks for, as one object."""
    merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
    for part in schema["allOf"]:
        part = _resolve(part, schemas)
        if part.get("allOf"):
            part = _merge_all_of(part, schemas)
        for name, prop in part.get("properties", {}).items():
            merged["properties"][name] = {**merged["properties"].get(name, {}), **prop}
        merged["required"] += [name for name in part.get("required", []) if name not in merged["required"]]
        if part.get("additionalProperties") is False:
            merged["additionalProperties"] = False
        if part.get("title") and "title" not in merged:
            merged["title"] = part["title"]
    return merged


def _fields_table(schema: Mapping[str, Any]) -> str:
    props: Mapping[str, Any] = schema.get("properties", {})
    title = f'<div class="model-title">{_e(schema["title"])}</div>' if schema.get("title") else ""
    if not props:
        extra = schema.get("additionalProperties")
        what = "any fields" if extra in (None, True) else ("no fields" if extra is False else f"any fields of {_type(extra)}")
        return f"{title}<p>a map: {what}</p>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{_type(prop)}</td><td>{'required' if name in required else 'optional'}</td>"
        f"<td>{_constraints(prop)}</td></tr>"
        for name, prop in props.items()
    )
    closed = '<p class="note">no other fields</p>' if schema.get("additionalProperties") is False else ""
    return (
        f'{title}<table class="fields"><thead><tr><th>field</th><th>type</th><th>presence</th><th>constraints</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>{closed}"
    )


def _type(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "any"
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#model-{_id(name)}">{_e(name)}</a>'
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return (" & " if key == "allOf" else " | ").join(_type(v) for v in schema[key])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"map of {_type(schema['additionalProperties'])}"
    if isinstance(kind, list):
        return " | ".join(_e(k) for k in kind)
    return _e(kind or "any")


_CONSTRAINTS = (
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "pattern", "minItems", "maxItems", "format", "default",
)  # fmt: skip


def _constraints(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return ""
    parts = [f"{key} <code>{_e(json.dumps(schema[key]))}</code>" for key in _CONSTRAINTS if key in schema]
    if schema.get("description"):
        parts.append(_e(schema["description"]))
    return "; ".join(parts)


def _models_section(schemas: Mapping[str, Any]) -> str:
    if not schemas:
        return ""
    blocks = "".join(
        f'<article class="model" id="model-{_id(name)}"><h3>{_e(name)}</h3>'
        + (f"<p>{_e(schema['description'])}</p>" if schema.get("description") else "")
        + _schema_html(schema, schemas) + "</article>"
        for name, schema in schemas.items()
    )  # fmt: skip
    return f'<section id="models"><h2>Models</h2>{blocks}</section>'


def _errors_section(messages: Mapping[str, Any]) -> str:
    error = messages.get("error", {}).get("payload", {})
    codes = list(error.get("properties", {}).get("error", {}).get("enum", []))
    rows = "".join(
        f"<tr><td><code>{_e(code)}</code></td><td>{_e(ERROR_MEANINGS.get(code, ('', ''))[0])}</td>"
        f"<td>{_e(ERROR_MEANINGS.get(code, ('', ''))[1])}</td></tr>"
        for code in codes
    )
    sample = '{"status": "failure", "error": "ERR_NO_HANDLER", "detail": "..."}'
    return (
        '<section id="errors"><h2>Error codes</h2><p>An error reply is an ordinary packet: '
        f"<code>{_e(sample)}</code>.</p>"
        '<table class="fields"><thead><tr><th>code</th><th>when</th><th>connection</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


# -- examples ---------------------------------------------------------------------------------


def example(schema: Any, schemas: Mapping[str, Any], depth: int = 0) -> Any:
    """An example value of ``schema``: its own ``examples``/``default``/``const`` where given, else made up."""
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return None
    schema = _resolve(schema, schemas)
    for key in ("examples",):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    for key in ("const", "default", "example"):
        if key in schema:
            return schema[key]
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if schema.get(key):
            return example(schema[key][0], schemas, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = example(part, schemas, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: example(prop, schemas, depth + 1) for name, prop in props.items()}
    if kind == "array":
        return [example(schema.get("items", {}), schemas, depth + 1)]
    if kind == "string" or (kind is None and "pattern" in schema):
        return _string_example(schema)
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return 0 if low <= 0 <= schema.get("maximum", 0) else int(low)  # 0 when the range allows it
    if kind == "number":
        low = schema.get("minimum", 0.0)
        return 0.0 if low <= 0 <= schema.get("maximum", 0.0) else float(low)
    if kind == "boolean":
        return True
    return None


def _string_example(schema: Mapping[str, Any]) -> str:
    formats = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "email": "user@example.org", "uuid": "00000000-0000-0000-0000-000000000000"}
    if schema.get("format") in formats:
        return formats[schema["format"]]
    if "pattern" in schema:
        return "abc"  # a guess: patterns are not generated from
    return "string"[: schema.get("maxLength", 6)] if schema.get("minLength", 0) <= 6 else "x" * schema["minLength"]


def _resolve(schema: Mapping[str, Any], schemas: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while "$ref" in schema and str(schema["$ref"]).startswith(_REF) and seen < _MAX_DEPTH:
        target = schemas.get(str(schema["$ref"])[len(_REF) :])
        if target is None:
            break
        schema, seen = target, seen + 1
    return schema


# -- helpers -------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _id(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


_CSS = """
:root { --fg: #1d2330; --muted: #5b6474; --line: #dde2ea; --accent: #2456a6; --code: #f3f5f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: #fff; display: grid; grid-template-columns: 230px 1fr;
       grid-template-areas: "nav head" "nav main"; grid-template-rows: auto 1fr; }
header { grid-area: head; padding: 24px 40px 8px; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 26px; }
.version { color: var(--muted); margin: 4px 0 8px; }
nav { grid-area: nav; position: sticky; top: 0; align-self: start; height: 100vh; overflow: auto;
      padding: 24px 16px; background: #f7f8fb; border-right: 1px solid var(--line); font-size: 14px; }
nav h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 18px 0 6px; }
nav ul { list-style: none; margin: 0; padding: 0; }
nav li a, nav > a { display: block; padding: 2px 6px; border-radius: 4px; color: var(--fg); text-decoration: none; }
nav li a:hover, nav > a:hover { background: #e8edf6; }
nav > a { font-weight: 600; margin-top: 14px; }
main { grid-area: main; padding: 8px 40px 60px; max-width: 1100px; }
h2 { font-size: 21px; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 18px; margin: 0 0 6px; }
h4 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); margin: 16px 0 6px; }
a { color: var(--accent); }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
code { background: var(--code); padding: 1px 4px; border-radius: 3px; }
pre { background: var(--code); padding: 10px 12px; border-radius: 6px; overflow: auto; margin: 4px 0 8px; }
pre.wire { color: #6b3d00; }
.operation, .model { border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin: 0 0 18px; }
.operation h3 { color: var(--accent); }
.facts { margin: 0 0 8px; }
.tag { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 10px; background: #e8edf6;
       color: #25406d; margin-right: 4px; }
.summary { margin: 4px 0; }
.none, .note { color: var(--muted); font-size: 14px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
thead th { font-size: 12px; color: var(--muted); font-weight: 600; }
table.kv th { width: 120px; color: var(--muted); font-weight: 600; }
.model-title { font-weight: 600; margin-top: 6px; }
.example { display: block; }
.label { font-size: 12px; color: var(--muted); margin-top: 6px; }
details summary { cursor: pointer; color: var(--muted); font-size: 13px; }
.filters ul { margin: 0; padding-left: 20px; }
.filters h4 { display: inline-block; margin-right: 10px; }
.io { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 24px; }
.io > div { min-width: 0; }
table.fields td:nth-child(3) { color: var(--muted); font-size: 13px; }
@media (max-width: 900px) { .io { grid-template-columns: 1fr; } }
@media print { body { display: block; } nav { display: none; } }
"""
