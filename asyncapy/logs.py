"""Log lines people can read: the format ``Server.start()`` installs, and the access log.

``configure_logging(level, pid=...)`` gives the root logger (so the application's own
loggers too) one handler with one format, unless logging is configured already::

    2026-11-24 13:40:00.123 INFO  [4242] shop: order 17 paid (session 5f3e...)

time, level, the PID when several workers write to one terminal, the logger, the
message, and the session (the connection) the line was logged for, when there is one.

The access log is the ``asyncapy.access`` logger: one INFO line per packet,
``PEER HANDLERS OUTCOME DURATION``, e.g. ``127.0.0.1:50312 person OK 87us``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Final

from .peer import Client

ACCESS_LOGGER: Final = "asyncapy.access"
LOG_FORMAT: Final = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
LOG_FORMAT_PID: Final = "%(asctime)s.%(msecs)03d %(levelname)-5s [%(process)d] %(name)s: %(message)s"
LOG_DATEFMT: Final = "%Y-%m-%d %H:%M:%S"

access_logger = logging.getLogger(ACCESS_LOGGER)


class SessionFormatter(logging.Formatter):
    """The format above, plus ``(session ID)`` on lines logged while a connection's packet is handled.

    asyncapy's own lines name their session already; the access log names the peer.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.name == "asyncapy" or record.name.startswith("asyncapy."):
            return line
        session = current_session_id()
        return line if session is None else f"{line} (session {session})"


def configure_logging(level: int, *, pid: bool = False) -> None:
    """Set the root logger's level and give it the readable format, unless logging is configured.

    "Configured" means the root logger has a handler already (``logging.basicConfig``,
    ``dictConfig``, a test runner's capture): then only asyncapy's own logger gets ``level``
    and the application's configuration is left as it is.
    """
    logging.getLogger("asyncapy").setLevel(level)
    root = logging.getLogger()
    if root.handlers:
        return
    root.setLevel(level)
    handler = logging.StreamHandler()
    handler.setFormatter(SessionFormatter(LOG_FORMAT_PID if pid else LOG_FORMAT, LOG_DATEFMT))
    root.addHandler(handler)


def current_session_id() -> str | None:
    """The id of the session whose packet the running code handles, or None.

    Found only when a line is logged (never per packet): the running task is the
    connection's host task (``asyncapy._eager.Host``), whose owner is the connection,
    or a task whose coroutine was given the ``client`` (``handler_timeout``'s).
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a thread, or code outside the server
        return None
    if task is None:
        return None
    client = _client_of(task)
    return None if client is None else str(client.session.id)


def _client_of(task: asyncio.Task[Any]) -> Client | None:
    frame = getattr(task.get_coro(), "cr_frame", None)
    if frame is None:
        return None
    local = frame.f_locals
    client = local.get("client")
    if isinstance(client, Client):
        return client
    host = local.get("self")
    owner = getattr(getattr(host, "_on_suspend", None), "__self__", None)  # Host -> Connection
    client = getattr(owner, "client", None)
    return client if isinstance(client, Client) else None


class AccessLog:
    """The access log of one serving run: the ``asyncapy.access`` logger at INFO.

    With ``True`` its lines go wherever the root logger's go; with a path, to that
    file only (appended to; workers share it, each line with its PID), opened here
    and closed by ``close()``.
    """

    def __init__(self, target: bool | str | os.PathLike[str], *, pid: bool = False) -> None:
        self.logger = access_logger
        self._handler: logging.FileHandler | None = None
        access_logger.setLevel(logging.INFO)
        if target is True:
            return
        self._handler = logging.FileHandler(os.fspath(target), encoding="utf-8")  # type: ignore[arg-type]
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT_PID if pid else LOG_FORMAT, LOG_DATEFMT))
        access_logger.addHandler(self._handler)
        access_logger.propagate = False

    def close(self) -> None:
        if self._handler is not None:
            access_logger.removeHandler(self._handler)
            access_logger.propagate = True
            self._handler.close()
            self._handler = None
