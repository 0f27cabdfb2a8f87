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
import time
from collections.abc import Callable
from typing import Any, Final, TextIO, cast

from ..model.peer import Client

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
    connection's host task (``asyncapy.serve._eager.Host``), whose owner is the connection,
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


#: ``line(client, handlers, outcome, seconds)``: one access log line.
AccessLine = Callable[[Client, str, str, float], None]
#: A file access log is written in blocks and flushed this often (and when the server
#: stops): a write per packet would cost a system call per packet.
FLUSH_EVERY: Final = 0.5


class AccessLog:
    """The access log of one serving run; ``line`` writes one line (``asyncapy.ops.observe`` calls it).

    With ``True`` the lines are records of the ``asyncapy.access`` logger (at INFO),
    going wherever the root logger's go. With a path, they are appended to that file
    directly, in the same format, without the logging machinery (a third of the cost),
    flushed every ``FLUSH_EVERY`` seconds and on ``close()``; workers share the file,
    each line with its PID.
    """

    def __init__(self, target: bool | str | os.PathLike[str], *, pid: bool = False) -> None:
        self._file: TextIO | None = None
        self._timer: asyncio.TimerHandle | None = None
        if target is True:
            access_logger.setLevel(logging.INFO)
            self.line: AccessLine = _logged_line(access_logger)
            return
        path: str = os.fspath(cast("str | os.PathLike[str]", target))
        file = self._file = open(path, "a", encoding="utf-8", buffering=1 << 16)
        self.line = _file_line(file, f"[{os.getpid()}] " if pid else "")
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # made outside a server (a benchmark): flushed when full and on close()
            self._loop = None
        self._flush()

    def _flush(self) -> None:
        if self._file is not None and self._loop is not None:
            self._file.flush()
            self._timer = self._loop.call_later(FLUSH_EVERY, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._file is not None:
            self._file.close()
            self._file = None


def _logged_line(logger: logging.Logger) -> AccessLine:
    """A line as a log record, made directly (``Logger.info`` would look for its caller's frame)."""
    enabled, make, handle, name, info = logger.isEnabledFor, logger.makeRecord, logger.handle, logger.name, logging.INFO

    def line(client: Client, handlers: str, outcome: str, seconds: float) -> None:
        if enabled(info):
            args = (client.address, client.port, handlers, outcome, seconds * 1e6)
            handle(make(name, info, "asyncapy.logs", 0, "%s:%d %s %s %.0fus", args, None))

    return line


def _file_line(file: TextIO, pid: str) -> AccessLine:
    """A line written to ``file`` in the format of the log (its time text made once a second)."""
    write, clock, local, strftime = file.write, time.time, time.localtime, time.strftime
    stamp = ["", -1]  # the text of the current second, and that second

    def line(client: Client, handlers: str, outcome: str, seconds: float) -> None:
        now = clock()
        second = int(now)
        if second != stamp[1]:
            stamp[0], stamp[1] = strftime(LOG_DATEFMT, local(second)), second
        ms = int((now - second) * 1000)
        write(
            f"{stamp[0]}.{ms:03d} INFO  {pid}{ACCESS_LOGGER}: {client.address}:{client.port} "
            f"{handlers} {outcome} {seconds * 1e6:.0f}us\n"
        )

    return line
