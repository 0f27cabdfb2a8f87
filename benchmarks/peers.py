"""The peers a user would pick instead of asyncapy, doing the same typed work.

``python peers.py KIND PORT``, KIND one of:

- ``grpc``: gRPC's asyncio server (``grpc.aio``), one unary method ``/bench.Bench/Echo``
  taking and returning the protobuf message ``bench.Test {int64 test = 1;}`` (built from
  a descriptor at start-up, so no protoc step); driven by ``h2load``.
- ``fastapi``: FastAPI on uvicorn with uvloop and httptools, ``POST /echo`` taking and
  returning the pydantic model ``Test(test: int)``; driven by ``wrk``.

Each handler builds a new ``Test`` from the validated request, like the asyncapy
``typed-test`` server in ``servers.py``. They need the ``bench`` extra:
``pip install -e '.[bench]'``.
"""

import asyncio
import signal
import sys
from typing import Any

from pydantic import BaseModel

GRPC_METHOD = "/bench.Bench/Echo"
# The request body h2load posts: gRPC's 5-byte message prefix (not compressed, length 2),
# then bench.Test(test=1) in protobuf (field 1, varint 1).
GRPC_BODY = b"\x00\x00\x00\x00\x02\x08\x01"


def grpc_test_message() -> Any:
    """The protobuf class ``bench.Test`` with one ``int64 test = 1`` field."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="bench.proto", package="bench", syntax="proto3")
    message = proto.message_type.add(name="Test")
    message.field.add(
        name="test",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Test"))


async def serve_grpc(port: int) -> None:
    import grpc

    test = grpc_test_message()

    async def echo(request: Any, context: Any) -> Any:
        return test(test=request.test)

    handler = grpc.unary_unary_rpc_method_handler(
        echo, request_deserializer=test.FromString, response_serializer=test.SerializeToString
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Bench", {"Echo": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def grpc_check(port: int) -> str:
    """One call with gRPC's own client: the reply to ``Test(test=1)`` as text, or the error."""
    import grpc

    test = grpc_test_message()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(GRPC_METHOD, request_serializer=test.SerializeToString, response_deserializer=test.FromString)
        try:
            return f"test={call(test(test=1), timeout=10).test}"
        except grpc.RpcError as exc:
            return f"error: {exc}"


class Test(BaseModel):
    test: int


def fastapi_app() -> Any:
    # No `from __future__ import annotations` in this module: FastAPI reads the
    # handler's annotations as objects.
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/echo")
    async def echo(body: Test) -> Test:
        return Test(test=body.test)

    return app


def serve_fastapi(port: int) -> None:
    import uvicorn

    uvicorn.run(
        fastapi_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "grpc":
        asyncio.run(serve_grpc(port))
    elif kind == "fastapi":
        serve_fastapi(port)
    else:
        raise SystemExit(f"unknown peer {kind!r}")


if __name__ == "__main__":
    main()
