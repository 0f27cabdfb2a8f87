"""Serve from several processes on one port: ``Server(workers=N)``.

The parent forks N workers and waits. With SO_REUSEPORT (Linux, the BSDs) every worker
binds its own listening socket and the kernel spreads new connections over them;
elsewhere the parent binds one socket before forking and the workers share it.
SIGINT or SIGTERM to the parent is passed on as SIGTERM to every worker, which stops
cleanly; a second signal kills the ones still running. Everything a ``Server`` keeps
in memory (sessions, session limits, API keys) is per worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger("asyncapy")

HAS_REUSEPORT = hasattr(socket, "SO_REUSEPORT") and sys.platform != "win32"
#: A worker's exit status when it could not start serving (its lifespan failed): the
#: parent stops the other workers and exits with status 1.
STARTUP_FAILED = 3


def bind_socket(addr: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``addr:port`` (port 0: the OS picks one)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((addr, port))
    return sock


def run_workers(
    count: int,
    serve: Callable[[socket.socket | None], None],
    addr: str,
    port: int,
    started: Callable[[], None] | None = None,
) -> int:
    """Fork ``count`` workers that each call ``serve(shared_socket_or_None)``; wait for them all.

    Returns the port served (useful with port 0). ``serve`` runs in the worker and
    binds with ``reuse_port=True`` when it gets None. ``started`` runs in the parent
    once every worker is forked (threads are safe to start there then).
    """
    # Bound but never listening, this socket reserves the port (port 0 included) without
    # taking connections: only listening sockets of a SO_REUSEPORT group get them.
    sock = bind_socket(addr, port, HAS_REUSEPORT)
    if not HAS_REUSEPORT:
        sock.listen(1024)
    port = sock.getsockname()[1]
    children: list[int] = []
    try:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                _worker_main(serve, None if HAS_REUSEPORT else sock)
            children.append(pid)
        logger.info("Started %d workers on port %d: %s", count, port, " ".join(map(str, children)))
        if started is not None:
            started()
        failed = _wait_all(children)
    finally:
        sock.close()
    if failed:
        raise SystemExit(1)
    return port


def _worker_main(serve: Callable[[socket.socket | None], None], sock: socket.socket | None) -> None:
    """The body of a forked worker: never returns into the parent's code."""
    status = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent()
        serve(sock)
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # the worker said why (a failed lifespan: STARTUP_FAILED)
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        logger.exception("A worker failed")
        status = 1
    finally:
        logging.shutdown()
        os._exit(status)


def _die_with_parent() -> None:
    """On Linux, get SIGTERM if the parent dies without stopping us (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_all(children: list[int]) -> bool:
    """Wait for every worker; pass SIGINT/SIGTERM on to them (SIGKILL on the second).

    A worker that could not start (``STARTUP_FAILED``) stops the others; True then.
    """
    signals = 0
    alive = set(children)
    startup_failed = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signals == 1 else signal.SIGKILL)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while alive:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid in alive:
                alive.discard(pid)
                code = os.waitstatus_to_exitcode(status)
                if code == STARTUP_FAILED and not startup_failed:
                    startup_failed = True
                    logger.error("Worker %d could not start serving; stopping the others", pid)
                    forward(signal.SIGTERM, None)
                elif status and not signals:
                    logger.warning("Worker %d exited with status %d", pid, code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return startup_failed
