"""Is the peer of a connection still there? Asked before refusing it a session.

A load balancer's health check connects and closes at once; the server may accept
the next client before it has read that EOF, and would count a client that already
left against ``session_limit``. Before refusing, the server looks at the sockets it
counts: one whose peer closed (EOF waiting, nothing unread) or reset is let go.
"""

from __future__ import annotations

import asyncio
import socket

#: Peek without blocking (the descriptor is non-blocking anyway; where the flag exists it is cheap insurance).
_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


def peer_left(transport: asyncio.BaseTransport) -> bool:
    """True when the peer closed or reset the connection and sent nothing not yet read.

    A peer that half-closed after sending a request still has that request unread:
    it is there (it waits for the reply). One ``recv(MSG_PEEK)`` system call.
    """
    if transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    fileno = sock.fileno() if sock is not None else -1
    if fileno < 0:
        return False  # not a socket we can look at: assume the peer is there
    probe = socket.socket(fileno=fileno)
    try:
        return probe.recv(1, _PEEK_FLAGS) == b""
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: the peer is there and quiet
    except OSError:
        return True  # reset
    finally:
        probe.detach()  # the descriptor stays the transport's
