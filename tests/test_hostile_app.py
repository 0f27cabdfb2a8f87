"""Hardening, round three (issue 21): hostile input meets the application and operating layers.

Every test here reproduced its failure on real sockets, a real server process or a
real Redis before the fix, unless its docstring says otherwise.
"""

from __future__ import annotations

from typing import Annotated

import pytest

from asyncapy import Client, Depends, Packet, Router, UsageError

from .conftest import make_server


# -- Depends(42): the programmer's slip, named at registration ------------------------------


def test_depends_on_a_non_callable_names_the_handler_and_the_parameter() -> None:
    server = make_server()

    async def create(client: Client, packet: Packet, tx: Annotated[int, Depends(42)]) -> None: ...

    with pytest.raises(UsageError, match=r"handler '.*create'.*parameter 'tx'.*callable.*42"):
        server.register_handler(create)

    async def listed(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match=r"handler '.*listed'.*dependencies=\[\.\.\.\].*callable.*'nope'"):
        server.register_handler(listed, dependencies=[Depends("nope")])  # type: ignore[arg-type]

    with pytest.raises(UsageError, match=r"Router\(dependencies=\.\.\.\).*callable.*None"):
        Router(dependencies=[Depends(None)])  # type: ignore[arg-type]  # no handler yet: fails at once
