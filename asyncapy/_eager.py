"""Run a connection's handlers eagerly, and only give them to a task when they wait.

A task per burst of packets costs an event-loop round trip before the first handler
runs, and a coroutine chain per packet costs a frame per level. Most handlers never
wait (``client.send`` only queues bytes), so the connection calls them straight from
``data_received`` and steps each handler coroutine once with ``coro.send(None)``;
when one does suspend, it is handed to the connection's *host task*, which resumes it
where it stopped and carries on with the rest of the queue.

While handlers run eagerly the host task is entered as the current task and its
context is the active one, so ``asyncio.current_task()``, ``asyncio.timeout()`` and
context variables behave in a handler as they do in a task: the host task is the task
that runs the rest of a handler that waits. Python 3.12's eager tasks would give the
same with a Task per packet; one parked task per connection is cheaper and works on
3.11+ (on 3.10 the host task runs every burst, one loop iteration later: correct,
slower).
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
#: The running task of each loop: asyncio's own table (one dict lookup, where
#: ``asyncio.current_task`` is a Python function on 3.11), when this Python has it.
_CURRENT_TASKS: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(tasks, "_current_tasks", None)

Worker = Coroutine[Any, Any, None]

#: Eager starts need ``create_task(context=...)`` (Python 3.11): the eager part and the
#: host task must share one context. Before 3.11 every burst starts in the host task.
_EAGER: Final = sys.version_info >= (3, 11)


class Host:
    """One connection's host task: parked until a worker coroutine needs a task.

    ``on_suspend`` runs each time a worker in the host task waits or ends (flush the
    replies so far), ``on_resume`` each time it runs again.
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
        self._inbox: asyncio.Future[Worker] = loop.create_future()
        if _EAGER:
            self._context = contextvars.copy_context()
            self._task = loop.create_task(self._serve(), context=self._context)  # type: ignore[call-arg,unused-ignore]
        else:
            self._task = loop.create_task(self._serve())

    def run_eagerly(self, fn: Callable[[], None]) -> bool:
        """Call ``fn`` now as if from the host task; False (not called) when that cannot be done.

        It cannot when another task is running (a test driving the connection from its
        own task) or before Python 3.11; the caller then ``submit``s a worker instead.
        """
        loop = self._loop
        running = tasks.current_task(loop) if _CURRENT_TASKS is None else _CURRENT_TASKS.get(loop)
        if running is not None or not _EAGER:
            return False
        _enter_task(loop, self._task)
        try:
            self._context.run(fn)
        finally:
            _leave_task(loop, self._task)
        return True

    def submit(self, worker: Worker) -> None:
        """Have the host task run ``worker`` (it runs one at a time; the caller ensures that)."""
        self._inbox.set_result(worker)

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
            worker = await self._inbox
            self._inbox = self._loop.create_future()
            self._busy = True
            self._on_resume()
            try:
                await _drive(worker, self._on_suspend, self._on_resume)
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
def _drive(coro: Worker, on_suspend: Callable[[], None], on_resume: Callable[[], None]) -> Generator[Any, Any, None]:
    """``await coro``, calling ``on_suspend``/``on_resume`` around each of its waits."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration:
            return
        on_suspend()
        try:
            value, error = (yield yielded), None
        except BaseException as exc:  # cancellation and errors go to the worker, as in a task
            value, error = None, exc
        on_resume()


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Await a coroutine that already ran up to its first wait, which yielded ``yielded``."""
    while True:
        try:
            value = yield yielded
        except BaseException as exc:  # cancellation and errors go to the coroutine, as in a task
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value
