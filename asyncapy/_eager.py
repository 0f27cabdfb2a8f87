"""Run a connection's worker coroutine eagerly, and only give it to a task when it waits.

A task per burst of packets costs an event-loop round trip before the first handler
runs. Most handlers never wait (``client.send`` only queues bytes), so the worker is
driven with ``coro.send(None)`` straight from ``data_received``; when it does suspend,
the suspended coroutine is handed to the connection's *host task*, which resumes it.

While the worker runs eagerly the host task is entered as the current task and its
context is the active one, so ``asyncio.current_task()``, ``asyncio.timeout()`` and
context variables behave in a handler as they do in a task: the host task is the task
that runs the rest of the coroutine. Python 3.12's eager tasks would give the same
with a Task per burst; one parked task per connection is cheaper and works on 3.11+
(on 3.10 the host task runs every burst, one loop iteration later: correct, slower).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import types
from asyncio import tasks
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final

logger = logging.getLogger("asyncapy")

_enter_task = tasks._enter_task
_leave_task = tasks._leave_task

Worker = Coroutine[Any, Any, None]

#: Eager starts need ``create_task(context=...)`` (Python 3.11): the eager part and the
#: host task must share one context. Before 3.11 every burst starts in the host task.
_EAGER: Final = sys.version_info >= (3, 11)


class Host:
    """One connection's host task: parked until a worker coroutine needs a task.

    ``on_suspend`` runs each time the worker waits or ends (flush the replies so far),
    ``on_resume`` each time it runs again.
    """

    __slots__ = ("_loop", "_context", "_inbox", "_task", "_on_suspend", "_on_resume", "_busy", "_closed")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_suspend: Callable[[], None], on_resume: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._on_suspend = on_suspend
        self._on_resume = on_resume
        self._busy = False  # the host task is running a worker
        self._closed = False
        self._inbox: asyncio.Future[tuple[Worker, Any]] = loop.create_future()
        if _EAGER:
            self._context = contextvars.copy_context()
            self._task = loop.create_task(self._serve(), context=self._context)  # type: ignore[call-arg,unused-ignore]
        else:
            self._task = loop.create_task(self._serve())

    def run(self, coro: Worker) -> bool:
        """Run ``coro`` until it finishes (True) or waits (False: the host task goes on with it)."""
        loop = self._loop
        if not _EAGER or tasks.current_task(loop) is not None:  # inside a task: no eager start
            self._inbox.set_result((coro, None))
            return False
        _enter_task(loop, self._task)
        try:
            yielded = self._context.run(coro.send, None)
        except StopIteration:
            return True
        finally:
            _leave_task(loop, self._task)
        self._inbox.set_result((coro, yielded))
        return False

    def close(self) -> None:
        """End the host task once it runs no worker (a running one ends by itself)."""
        self._closed = True
        if not self._busy and not self._inbox.done():
            self._task.cancel()

    def cancel_worker(self) -> None:
        """Cancel the worker that waits in the host task, as ``task.cancel()`` would."""
        if self._busy:
            self._task.cancel()

    async def _serve(self) -> None:
        while not self._closed or self._inbox.done():
            coro, yielded = await self._inbox
            self._inbox = self._loop.create_future()
            self._busy = True
            try:
                await _resume(coro, yielded, self._on_suspend, self._on_resume)
            except asyncio.CancelledError:
                # cancel_worker(): the worker has ended; this task serves the next ones.
                uncancel = getattr(self._task, "uncancel", None)
                if uncancel is not None:
                    uncancel()
            except Exception:
                logger.exception("A connection worker failed")
            finally:
                self._busy = False
                self._on_suspend()


@types.coroutine
def _resume(
    coro: Worker, yielded: Any, on_suspend: Callable[[], None], on_resume: Callable[[], None]
) -> Generator[Any, Any, None]:
    """``yield from`` a coroutine that already ran up to its first wait."""
    while True:
        on_suspend()
        try:
            value = yield yielded
        except BaseException as exc:  # cancellation and errors go to the worker, as in a task
            on_resume()
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            on_resume()
            try:
                yielded = coro.send(value)
            except StopIteration:
                return
