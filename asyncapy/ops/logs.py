"""Log lines people can read: the format ``Server.start()`` installs, and the access log.

``configure_logging(level, pid=...)`` gives the root logger (so the application's own
loggers too) one handler with one format, unless logging is configured already::

    2026-11-24 13:40:00.123 INFO  [4242] shop: order 17 paid (session 5f3e...)

time, level, the PID when several workers write to one terminal, the logger, the
message, and the session (the connection) the line was logged for, when there is one.

The access log is the ``asyncapy.access`` logger: one INFO line per packet,
``PEER HANDLERS OUTCOME DURATION``, e.g. ``127.0.0.1:50312 person OK 87us``.

Text a client chose (a field name in ERR_NO_HANDLER's detail, the code of an echoed
packet shaped like an error reply) goes through ``clean`` before it reaches a line:
one event stays one line, under 8 KiB, and a terminal shows it as text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Final, TextIO, cast

from ..model.peer import Client

ACCESS_LOGGER: Final = "asyncapy.access"
LOG_FORMAT: Final = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
LOG_FORMAT_PID: Final = "%(asctime)s.%(msecs)03d %(levelname)-5s [%(process)d] %(name)s: %(message)s"
LOG_DATEFMT: Final = "%Y-%m-%d %H:%M:%S"

access_logger = logging.getLogger(ACCESS_LOGGER)

#: Characters of client-supplied text kept in one log line (escapes included): at 4 bytes
#: a character at most (UTF-8), a line with it and its prefix stays under 8 KiB.
MAX_CLIENT_TEXT: Final = 1500


def clean(text: object, limit: int = MAX_CLIENT_TEXT) -> str:
    """``text``, supplied by a client, as it may enter a log line.

    Non-printable characters (line breaks, ANSI escapes, U+2028, bidirectional
    overrides) and the backslash are written ``\\xNN`` (``\\uNNNN`` past Latin-1) as nginx
    writes its access log; text past ``limit`` characters is cut and ends with
    ``...(+N characters)``. Plain short text comes back as it is, after two C scans.
    """
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit and text.isprintable() and "\\" not in text:
        return text
    pieces: list[str] = []
    size = 0
    for char in text:
        piece = char if char.isprintable() and char != "\\" else _escape(char)
        if size + len(piece) > limit:
            break
        pieces.append(piece)
        size += len(piece)
    left = len(text) - len(pieces)
    return "".join(pieces) + (f"...(+{left} characters)" if left else "")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


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

    Found only when a line is logged (never per packet), by walking the stack of the
    code that logs: a frame that holds the ``client`` (a handler's, a dependency's), or
    one of the connection's own frames. Under ``handler_timeout`` the handler runs in a
    task of its own; the task's coroutine was given the ``client``.
    """
    frame = sys._getframe(1)
    while frame is not None:
        client = _client_in(frame)
        if client is not None:
            return str(client.session.id)
        frame = frame.f_back  # type: ignore[assignment]
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a thread, or code outside the server
        return None
    coro_frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    client = _client_in(coro_frame) if coro_frame is not None else None
    return None if client is None else str(client.session.id)


#: The connection's methods a handler runs under (eagerly, or in a host task).
_CONNECTION_FRAMES: Final = frozenset({"_work_eagerly", "_work", "_after_wait"})


def _client_in(frame: FrameType) -> Client | None:
    """The ``Client`` a frame holds as ``client``, or as its connection's (``self.client``)."""
    code = frame.f_code
    if "client" in code.co_varnames:
        client = frame.f_locals.get("client")
        if isinstance(client, Client):
            return client
    if code.co_name in _CONNECTION_FRAMES:
        client = getattr(frame.f_locals.get("self"), "client", None)
        if isinstance(client, Client):
            return client
    return None


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
