"""Helpers for routing tests: a stand-in client that sends into a list."""

from __future__ import annotations

from typing import Any

from asyncapy import Client, Session
from asyncapy.model.peer import encode_payload


class RecordingLink:
    """A link that keeps what a handler sends, decoded as JSON payload bytes."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        #: Frames written, as a connection counts them (rule 5 of DESIGN §3 reads it).
        self.writes = 0
        self.closing = False
        self.exchange: Any = None

    def write_payload(self, payload: bytes, encoding: int) -> None:
        self.sent.append(payload)
        self.writes += 1

    def close(self) -> None:
        self.closing = True

    async def drain(self) -> None:
        pass


    def cancelled_by_server(self) -> bool:
        return False


def fake_client(address: str = "127.0.0.1") -> tuple[Client, RecordingLink]:
    """A ``Client`` from ``address`` whose sends land in the returned link."""
    link = RecordingLink()
    return Client(address, 0, Session(address, 0), link), link


def encoded(obj: Any) -> bytes:
    return encode_payload(obj, "json")
