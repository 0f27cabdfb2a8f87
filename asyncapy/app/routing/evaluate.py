"""Filter evaluation shared by dispatch and explain."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ..filters import Filter
from ...model.packet import Packet
from ...model.peer import Client


def failing_cheap(filters: Sequence[Filter], client: Client, packet: Packet[Any]) -> Filter | None:
    """The first of the sync, cheap ``filters`` that fails, or None."""
    for flt in filters:
        if not flt.check(client, packet):
            return flt
    return None


async def failing_custom(filters: Sequence[Filter], client: Client, packet: Packet[Any]) -> Filter | None:
    """The first of ``filters`` that fails (sync or async), or None."""
    for flt in filters:
        result = flt.check(client, packet)
        if inspect.isawaitable(result):
            result = await result
        if not result:
            return flt
    return None
