"""The ``asyncapy`` command: ``run``, ``schema``, ``docs``, ``send``, ``diff`` and ``probe``.

Exit codes: 0 success, 1 the server answered an error packet (``send``), a change
breaks clients (``diff``) or the server is not serving (``probe``), 2 bad usage
(argparse's code, also for a bad ``module:server`` spec), 3 the server could not be
reached (``send``) or could not listen (``run``).
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client import Client
from .wire.errors import ClientError, ConnectionClosed, ErrorReply, ProtocolError
from .wire.proxy import check_trusted_proxies
from .server import Server, _check_metrics_port, _check_uvloop, _check_workers

EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class CLIError(Exception):
    """A message for the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        result: int = args.command(args)
        return result
    except CLIError as exc:
        print(f"asyncapy: error: {exc}", file=sys.stderr)
        return exc.code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asyncapy", description="Serve, describe and call AsyncAProto APIs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_schema(commands)
    _add_docs(commands)
    _add_send(commands)
    _add_diff(commands)
    _add_probe(commands)
    return parser


# -- run ----------------------------------------------------------------------------


def _add_run(commands: Any) -> None:
    run = commands.add_parser("run", help="serve MODULE:SERVER until SIGINT/SIGTERM", description=cmd_run.__doc__)
    run.add_argument("server", metavar="MODULE:SERVER", help="where the Server is, e.g. myapp.api:server")
    run.add_argument("--host", help="address to listen on (default: the server's addr)")
    run.add_argument("--port", type=int, help="port to listen on (default: the server's port)")
    run.add_argument("--log-level", choices=LOG_LEVELS, help="level of the logs: asyncapy's and the application's (root)")
    run.add_argument("--access-log", action="store_true", help="log one line per packet: peer, handlers, outcome, microseconds")
    run.add_argument("--access-log-file", metavar="FILE", help="write the access log to FILE (implies --access-log)")
    run.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics on PORT (asyncapy[prometheus])")
    run.add_argument("--workers", type=int, help="processes sharing the port (default: the server's, 1)")
    run.add_argument("--uvloop", action="store_true", help="run on uvloop (the asyncapy[uvloop] extra)")
    run.add_argument("--reload", action="store_true", help="restart when a .py file of the app changes (development; asyncapy[reload])")
    run.add_argument("--health", action="store_true", help='answer the probe {"asyncapy": "health"} (asyncapy probe, balancers)')
    run.add_argument(
        "--drain", type=float, metavar="SECONDS",
        help="on SIGTERM, keep serving this long while the health probe says NOT_SERVING (implies --health)",
    )  # fmt: skip
    run.add_argument(
        "--proxy-protocol", action="store_true", help="read a PROXY header (v1/v2) from the load balancer first"
    )
    run.add_argument(
        "--trusted-proxy", action="append", metavar="CIDR",
        help="an address or network allowed to send PROXY headers (repeatable; default 127.0.0.0/8 and ::1)",
    )  # fmt: skip
    run.set_defaults(command=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """Import MODULE, take its SERVER attribute and serve it until SIGINT or SIGTERM."""
    if args.reload:
        if args.workers is not None and args.workers > 1:
            raise CLIError("--reload runs one process: drop --workers")
        from .ops.reload import run_reloading

        return run_reloading(args.server, [arg for arg in args.argv[1:] if arg != "--reload"])
    server = load_server(args.server)
    if args.host is not None:
        server.addr = args.host
    if args.port is not None:
        server.port = args.port
    if args.log_level is not None:
        server.logging_level = getattr(logging, args.log_level.upper())
    if args.access_log or args.access_log_file:
        server.access_log = args.access_log_file or True
    try:
        if args.metrics_port is not None:
            server.metrics_port = _check_metrics_port(args.metrics_port)
        if args.workers is not None:
            server.workers = _check_workers(args.workers)
        if args.uvloop:
            server.uvloop = _check_uvloop(True)
        if args.health or args.drain is not None:
            _enable_health(server, args.drain)
        if args.proxy_protocol or args.trusted_proxy:
            server.proxy_protocol = server.proxy_protocol or args.proxy_protocol
            server.trusted_proxies = check_trusted_proxies(server.proxy_protocol, args.trusted_proxy)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    try:
        server.start()
    except OSError as exc:  # the address is taken, or not this machine's
        raise CLIError(f"cannot serve on {server.addr}:{server.port}: {exc.strerror or exc}", EXIT_UNREACHABLE) from None
    return 0


def _enable_health(server: Server, drain: float | None) -> None:
    """``--health`` / ``--drain``: as ``Server(health=True, drain=...)``."""
    from .serve.health import Health

    if drain is not None:
        if drain < 0:
            raise ValueError(f"--drain must be 0 or positive, not {drain!r}")
        server.drain = drain
    if server.health is None:
        server.health = Health()


# -- schema ---------------------------------------------------------------------------


def _add_schema(commands: Any) -> None:
    schema = commands.add_parser(
        "schema", help="print the JSON Schema (or AsyncAPI document) of MODULE:SERVER", description=cmd_schema.__doc__
    )
    schema.add_argument("server", metavar="MODULE:SERVER", help="where the Server is, e.g. myapp.api:server")
    schema.add_argument("--asyncapi", action="store_true", help="print an AsyncAPI 3.0.0 document instead")
    schema.add_argument("--title", default="asyncapy API", help="the AsyncAPI info.title (default: %(default)s)")
    schema.add_argument("--api-version", default="1.0.0", help="the AsyncAPI info.version (default: %(default)s)")
    schema.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    schema.set_defaults(command=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of every route of SERVER, or its AsyncAPI document."""
    server = load_server(args.server)
    doc = server.asyncapi(title=args.title, version=args.api_version) if args.asyncapi else server.schema()
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    return 0


# -- docs ---------------------------------------------------------------------------------


def _add_docs(commands: Any) -> None:
    docs = commands.add_parser(
        "docs", help="write (or serve) the API documentation of MODULE:SERVER as one HTML page", description=cmd_docs.__doc__
    )
    docs.add_argument("server", metavar="MODULE:SERVER", help="where the Server is, e.g. myapp.api:server")
    docs.add_argument("-o", "--output", metavar="FILE", help="write the page to FILE (default: api.html unless --serve)")
    docs.add_argument("--serve", action="store_true", help="serve the page over HTTP until SIGINT/SIGTERM")
    docs.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    docs.add_argument("--port", type=int, default=8000, help="port to serve on (default: %(default)s)")
    docs.add_argument("--title", default="asyncapy API", help="the page's title (default: %(default)s)")
    docs.add_argument("--api-version", default="1.0.0", help="the API version shown (default: %(default)s)")
    docs.set_defaults(command=cmd_docs)


def cmd_docs(args: argparse.Namespace) -> int:
    """Render SERVER's AsyncAPI document as one self-contained HTML page (it renders offline).

    The page shows every operation with its group, filters, request and reply schemas
    and an example packet of each, the models, and the error codes. With --serve it is
    served at http://HOST:PORT/ (and the AsyncAPI document at /asyncapi.json).
    """
    from .docs.docspage import render

    server = load_server(args.server)
    doc = server.asyncapi(title=args.title, version=args.api_version)
    page = render(doc)
    if args.output is not None or not args.serve:
        path = args.output or "api.html"
        with open(path, "w", encoding="utf-8") as out:
            out.write(page)
        print(f"wrote {path}", file=sys.stderr)
    if args.serve:
        from .docs.docserve import serve_page

        try:
            serve_page(page, json.dumps(doc, indent=2), args.host, args.port)
        except OSError as exc:
            raise CLIError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_UNREACHABLE) from None
    return 0


# -- send -------------------------------------------------------------------------------


def _add_send(commands: Any) -> None:
    send = commands.add_parser("send", help="send one packet and print the reply", description=cmd_send.__doc__)
    send.add_argument("address", metavar="HOST:PORT", help="the server, e.g. 127.0.0.1:1500 or [::1]:1500")
    send.add_argument("payload", metavar="JSON", help='the packet, a JSON object, e.g. \'{"test": 1}\'')
    send.add_argument("--encoding", choices=("json", "ziproto"), default="json", help="Content-Encoding to send")
    send.add_argument("--tls", action="store_true", help="connect with TLS (the certificate is verified)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default: %(default)s)")
    send.set_defaults(command=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    """Send JSON to HOST:PORT as one packet and print the reply as JSON.

    The reply is printed on stdout, an error packet too (so scripts can read its code);
    an error packet exits 1 with a line on stderr, a server that cannot be reached exits 3.
    """
    host, port = parse_address(args.address)
    payload = parse_payload(args.payload)
    client = Client(host, port, tls=args.tls, encoding=args.encoding, timeout=args.timeout)
    try:
        with client:
            reply = client.request(payload)
    except (ClientError, ProtocolError, OSError) as exc:
        raise CLIError(f"{host}:{port}: {_why(exc)}", EXIT_UNREACHABLE) from None
    print(json.dumps(reply, ensure_ascii=False, default=_jsonable), flush=True)
    if reply.get("status") == "failure" and "error" in reply:
        raise CLIError(f"the server answered {ErrorReply(reply)}", EXIT_ERROR_REPLY)
    return 0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"expected HOST:PORT, e.g. 127.0.0.1:1500, not {text!r}")
    return host.strip("[]"), int(port)


def parse_payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"the packet is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CLIError("the packet must be a JSON object, e.g. '{\"test\": 1}'")
    return value


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, ConnectionClosed):
        return f"{exc} before replying"
    return str(exc) or type(exc).__name__


def _jsonable(value: object) -> object:
    """ZiProto can carry bytes, JSON cannot: print them as base64."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- diff -------------------------------------------------------------------------------------


def _add_diff(commands: Any) -> None:
    diff = commands.add_parser(
        "diff", help="list the changes between two versions of an API, and which break clients", description=cmd_diff.__doc__
    )
    diff.add_argument("old", metavar="OLD", help="the released API: an `asyncapy schema --asyncapi` file, - (stdin) or MODULE:SERVER")
    diff.add_argument("new", metavar="NEW", help="the API now: a file, - (stdin) or MODULE:SERVER")
    diff.add_argument("--json", action="store_true", help="print the changes as JSON")
    diff.set_defaults(command=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    """Compare two AsyncAPI documents operation by operation; exit 1 if a change breaks clients of OLD.

    Breaking: an operation or topic removed, a request field added as required, a type
    narrowed in a request (a Literal value removed...), a reply field removed or made
    optional, a type widened in a reply, an alias renamed, a security scheme added.
    """
    from .docs.diff import diff_documents, format_changes

    changes = diff_documents(load_document(args.old), load_document(args.new))
    broken = sum(change.breaking for change in changes)
    if args.json:
        report = {"breaking": broken, "compatible": len(changes) - broken, "changes": [c.as_dict() for c in changes]}
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(format_changes(changes))
    return 1 if broken else 0


def load_document(spec: str) -> dict[str, Any]:
    """An AsyncAPI document: a JSON file (``asyncapy schema --asyncapi`` wrote it), ``-`` for stdin, or ``MODULE:SERVER``."""
    if spec == "-" or os.path.isfile(spec):
        try:
            text = sys.stdin.read() if spec == "-" else Path(spec).read_text(encoding="utf-8")
            doc = json.loads(text)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read an AsyncAPI document from {spec}: {exc}") from None
        if not isinstance(doc, dict) or "operations" not in doc:
            raise CLIError(f"{spec} is not an AsyncAPI document (write one with `asyncapy schema MODULE:SERVER --asyncapi`)")
        return doc
    if ":" not in spec:
        raise CLIError(f"{spec!r} is neither a file nor MODULE:SERVER")
    return load_server(spec).asyncapi()


# -- probe ------------------------------------------------------------------------------------


def _add_probe(commands: Any) -> None:
    probe = commands.add_parser(
        "probe", help="ask a server started with health=True whether it is serving", description=cmd_probe.__doc__
    )
    probe.add_argument("address", metavar="HOST:PORT", help="the server, e.g. 127.0.0.1:1500")
    probe.add_argument("--tls", action="store_true", help="connect with TLS (the certificate is verified)")
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default: %(default)s)")
    probe.set_defaults(command=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    """Send the health packet {"asyncapy": "health"}; exit 0 when the answer is SERVING, 1 otherwise.

    For a Kubernetes exec probe or a script. NOT_SERVING (a graceful stop began), any
    other answer (the server has no health=True), no answer and no connection exit 1,
    with the reason on stderr.
    """
    from .serve.health import HEALTH_PACKET, SERVING

    host, port = parse_address(args.address)
    try:
        with Client(host, port, tls=args.tls, timeout=args.timeout) as client:
            reply = client.request(dict(HEALTH_PACKET))
    except (ClientError, ProtocolError, OSError) as exc:
        print(f"asyncapy: {host}:{port}: {_why(exc)}", file=sys.stderr)
        return 1
    status = reply.get("status")
    print(status if isinstance(status, str) and status.isupper() else json.dumps(reply, default=_jsonable))
    if status == SERVING:
        return 0
    if reply.get("error"):
        print(f"asyncapy: {host}:{port} answered {reply.get('error')}: is it started with health=True?", file=sys.stderr)
    return 1


# -- loading MODULE:SERVER ---------------------------------------------------------------


def load_server(spec: str) -> Server:
    """Import ``module:attr`` (``attr`` may be dotted) from the current directory, like uvicorn."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(f"expected MODULE:SERVER, e.g. myapp.api:server, not {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise  # the module exists but imports something missing: its traceback says more
        raise CLIError(f"could not import module {module_name!r}: {exc}") from None
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(value, Server):
        raise CLIError(f"{spec!r} is a {type(value).__name__}, not an asyncapy Server")
    return value


def _version() -> str:
    from . import __version__

    return __version__
