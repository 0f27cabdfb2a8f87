"""``asyncapy diff``: one pair of models per rule of DESIGN §10, then the command itself.

Each case builds two servers with one operation ``op`` (old and new models) and diffs
their ``server.asyncapi()`` documents; the command is run for real on exported files,
on ``module:server`` and on stdin.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from asyncapy import ApiKeyAuth, Client, Packet, Server
from asyncapy.docs.diff import Change, diff_documents, format_changes

from .procs import ROOT


def model(name: str, config: ConfigDict | None = None, **fields: Any) -> type[BaseModel]:
    made: type[BaseModel] = create_model(name, __config__=config, **fields)
    return made


def server_with(request: Any, reply: Any = None, *, errors: tuple[str, ...] = (), guarded: bool = False, more: bool = False) -> Server:
    """A server whose operation ``op`` accepts ``request`` and replies ``reply`` (None: no declared reply)."""
    server = Server(port=0)

    async def op(client: Client, packet: Packet[Any]) -> Any:
        return None

    op.__qualname__ = "op"  # the operation's id
    op.__annotations__ = {"client": Client, "packet": Packet[request] if request is not None else Packet, "return": reply}
    deps = [ApiKeyAuth(["k"])] if guarded else []
    server.register_handler(op, dependencies=deps, errors=list(errors))
    if more:

        async def gone(client: Client, packet: Packet[Any]) -> None:
            return None

        gone.__qualname__ = "gone"
        gone.__annotations__ = {"client": Client, "packet": Packet[Gone], "return": None}
        server.register_handler(gone, group=1)
    return server


@dataclass(frozen=True)
class Case:
    """Old and new servers, and the change the diff must report (operation ``op`` unless said)."""

    id: str
    old: Server
    new: Server
    path: str
    rule: str
    breaking: bool
    operation: str = field(default="op")


class Gone(BaseModel):
    kind: Literal["gone"]


Req = model("Req", a=(int, ...))
Rep = model("Rep", x=(int, ...), y=(str, ...))
Addr = model("Addr", street=(str, ...))
AddrZip = model("Addr", street=(str, ...), zip=(str, ...))
A = model("A", kind=(Literal["a"], ...))
B = model("B", kind=(Literal["b"], ...))

CASES = [
    # -- operations
    Case("route removed", server_with(Req, more=True), server_with(Req), "", "operation-removed", True, "gone"),
    Case("route added", server_with(Req), server_with(Req, more=True), "", "operation-added", False, "gone"),
    # -- requests: what clients send
    Case("request field added as required", server_with(Req), server_with(model("Req", a=(int, ...), b=(int, ...))),
         "request.b", "field-added-required", True),
    Case("request field added, optional", server_with(Req), server_with(model("Req", a=(int, ...), b=(int, 0))),
         "request.b", "field-added", False),
    Case("request field made required", server_with(model("Req", a=(int, 0))), server_with(Req),
         "request.a", "field-made-required", True),
    Case("request field made optional", server_with(Req), server_with(model("Req", a=(int, 0))),
         "request.a", "field-made-optional", False),
    Case("request type narrowed", server_with(model("Req", a=(Union[int, str], ...))), server_with(Req),  # noqa: UP007
         "request.a", "type-narrowed", True),
    Case("request number narrowed to integer", server_with(model("Req", a=(float, ...))), server_with(Req),
         "request.a", "type-narrowed", True),
    Case("request type widened", server_with(Req), server_with(model("Req", a=(Union[int, str], ...))),  # noqa: UP007
         "request.a", "type-widened", False),
    Case("request Literal value removed", server_with(model("Req", k=(Literal["a", "b"], ...))),
         server_with(model("Req", k=(Literal["a"], ...))), "request.k", "value-removed", True),
    Case("request Literal value added", server_with(model("Req", k=(Literal["a"], ...))),
         server_with(model("Req", k=(Literal["a", "b"], ...))), "request.k", "value-added", False),
    Case("request bound tightened", server_with(model("Req", a=(int, Field(le=100)))),
         server_with(model("Req", a=(int, Field(le=10)))), "request.a", "type-narrowed", True),
    Case("request bound loosened", server_with(model("Req", a=(int, Field(ge=0)))), server_with(Req),
         "request.a", "type-widened", False),
    Case("request field removed", server_with(model("Req", a=(int, ...), b=(int, ...))), server_with(Req),
         "request.b", "field-removed", False),
    Case("request field removed from a closed model",
         server_with(model("Req", ConfigDict(extra="forbid"), a=(int, ...), b=(int, 0))),
         server_with(model("Req", ConfigDict(extra="forbid"), a=(int, ...))), "request.b", "field-removed", True),
    Case("request model closed", server_with(Req), server_with(model("Req", ConfigDict(extra="forbid"), a=(int, ...))),
         "request", "closed", True),
    Case("nested request field added as required", server_with(model("Req", home=(Addr, ...))),
         server_with(model("Req", home=(AddrZip, ...))), "request.home.zip", "field-added-required", True),
    Case("request list items narrowed", server_with(model("Req", a=(list[Union[int, str]], ...))),  # noqa: UP007
         server_with(model("Req", a=(list[int], ...))), "request.a[]", "type-narrowed", True),
    Case("request union member removed", server_with(Union[A, B]), server_with(A),  # noqa: UP007
         "request", "variant-removed", True),
    Case("request union member added", server_with(A), server_with(Union[A, B]),  # noqa: UP007
         "request", "variant-added", False),
    Case("request alias renamed", server_with(model("Req", user_id=(int, Field(alias="userId")))),
         server_with(model("Req", user_id=(int, Field(alias="uid")))), "request.userId", "alias-renamed", True),
    # -- replies: what clients read
    Case("reply field removed", server_with(Req, Rep), server_with(Req, model("Rep", x=(int, ...))),
         "reply.y", "field-removed", True),
    Case("reply field made optional", server_with(Req, Rep), server_with(Req, model("Rep", x=(int, ...), y=(str, ""))),
         "reply.y", "field-made-optional", True),
    Case("reply field made nullable", server_with(Req, Rep),
         server_with(Req, model("Rep", x=(int, ...), y=(Optional[str], ...))), "reply.y", "type-widened", True),  # noqa: UP007
    Case("reply field added", server_with(Req, Rep),
         server_with(Req, model("Rep", x=(int, ...), y=(str, ...), z=(int, ...))), "reply.z", "field-added", False),
    Case("reply type widened", server_with(Req, Rep),
         server_with(Req, model("Rep", x=(Union[int, str], ...), y=(str, ...))), "reply.x", "type-widened", True),  # noqa: UP007
    Case("reply type narrowed", server_with(Req, model("Rep", x=(float, ...), y=(str, ...))), server_with(Req, Rep),
         "reply.x", "type-narrowed", False),
    Case("reply Literal value added", server_with(Req, model("Rep", s=(Literal["ok"], ...))),
         server_with(Req, model("Rep", s=(Literal["ok", "late"], ...))), "reply.s", "value-added", True),
    Case("reply Literal value removed", server_with(Req, model("Rep", s=(Literal["ok", "late"], ...))),
         server_with(Req, model("Rep", s=(Literal["ok"], ...))), "reply.s", "value-removed", False),
    Case("reply alias renamed", server_with(Req, model("Rep", total_sum=(int, Field(alias="totalSum")))),
         server_with(Req, model("Rep", total_sum=(int, Field(alias="total")))), "reply.totalSum", "alias-renamed", True),
    Case("reply removed", server_with(Req, Rep), server_with(Req), "reply", "reply-removed", True),
    Case("reply declared", server_with(Req), server_with(Req, Rep), "reply", "reply-added", False),
    # -- around the payloads
    Case("security added", server_with(Req), server_with(Req, guarded=True), "security", "security-added", True),
    Case("security removed", server_with(Req, guarded=True), server_with(Req), "security", "security-removed", False),
    Case("error code declared", server_with(Req), server_with(Req, errors=("ERR_GONE",)), "errors", "error-added", False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_rule(case: Case) -> None:
    changes = diff_documents(case.old.asyncapi(), case.new.asyncapi())
    found = [c for c in changes if (c.operation, c.path, c.rule) == (case.operation, case.path, case.rule)]
    assert found, f"expected {case.rule} at {case.path!r}; got {[(c.path, c.rule) for c in changes]}"
    assert found[0].breaking is case.breaking
    assert any(c.breaking for c in changes) is case.breaking, format_changes(changes)


def test_the_same_api_has_no_changes() -> None:
    doc = server_with(model("Req", a=(int, ...), k=(Literal["a"], ...)), Rep, guarded=True).asyncapi()
    assert diff_documents(doc, json.loads(json.dumps(doc))) == []


def test_topics_are_compared_as_what_clients_read() -> None:
    """Documents with topics (an operation the server sends): removed and narrowed events are told apart."""

    def doc(events: dict[str, Any]) -> dict[str, Any]:
        return {
            "operations": {
                name: {"action": "send", "channel": {"$ref": f"#/channels/{name}"}, "messages": [{"$ref": f"#/components/messages/{name}"}]}
                for name in events
            },
            "components": {"messages": {name: {"payload": payload} for name, payload in events.items()}},
        }

    tick = {"type": "object", "properties": {"symbol": {"type": "string"}, "price": {"type": "number"}}, "required": ["symbol", "price"]}
    lean = {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}
    changes = diff_documents(doc({"prices": tick, "news": lean}), doc({"prices": lean}))
    assert Change("news", "topic", "", "topic-removed", True, "topic removed") in changes
    assert [(c.operation, c.kind, c.path, c.rule, c.breaking) for c in changes if c.operation == "prices"] == [
        ("prices", "topic", "event.price", "field-removed", True)
    ]


# -- the command ------------------------------------------------------------------------------------

V1 = '''
from typing import Literal
from pydantic import BaseModel, Field
from asyncapy import Client, Packet, Server

server = Server(port=0)

class Order(BaseModel):
    kind: Literal["order"]
    item: str
    qty: int = 1

class Placed(BaseModel):
    order_id: int = Field(alias="orderId")
    eta: str

@server.add_handler()
async def place(client: Client, packet: Packet[Order]) -> Placed:
    return Placed(orderId=1, eta="soon")
'''

V2_COMPATIBLE = V1.replace("    qty: int = 1\n", "    qty: int = 1\n    note: str = ''\n")
V2_BREAKING = V1.replace('    eta: str\n', '').replace(', eta="soon"', "")


def asyncapy(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncapy", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, input=stdin,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_the_command_on_files_modules_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "api_v1.py").write_text(V1)
    (tmp_path / "api_ok.py").write_text(V2_COMPATIBLE)
    (tmp_path / "api_bad.py").write_text(V2_BREAKING)
    exported = asyncapy(tmp_path, "schema", "api_v1:server", "--asyncapi", "-o", "released.json")
    assert exported.returncode == 0, exported.stderr

    same = asyncapy(tmp_path, "diff", "released.json", "api_v1:server")
    assert (same.returncode, same.stdout) == (0, "no changes\n")

    compatible = asyncapy(tmp_path, "diff", "released.json", "api_ok:server")
    assert compatible.returncode == 0, compatible.stdout + compatible.stderr
    assert compatible.stdout == "operation place\n  compatible  request.note: field added (optional)\n0 breaking, 1 compatible\n"

    breaking = asyncapy(tmp_path, "diff", "-", "api_bad:server", "--json", stdin=(tmp_path / "released.json").read_text())
    assert breaking.returncode == 1, breaking.stderr
    report = json.loads(breaking.stdout)
    assert report["breaking"] == 1 and report["compatible"] == 0
    assert report["changes"] == [
        {"operation": "place", "kind": "operation", "path": "reply.eta", "rule": "field-removed", "breaking": True,
         "message": "field removed"},
    ]  # fmt: skip

    text = asyncapy(tmp_path, "diff", "api_v1:server", "api_bad:server")
    assert text.returncode == 1 and "BREAKING    reply.eta: field removed" in text.stdout


def test_the_command_refuses_what_is_not_a_document(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "broken.json").write_text("{")
    for spec, message in [("notes.json", "is not an AsyncAPI document"), ("broken.json", "cannot read"), ("nothing", "neither a file")]:
        result = asyncapy(tmp_path, "diff", spec, spec)
        assert result.returncode == 2 and message in result.stderr, result.stderr
