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
same with a Task per packet; one parked task per connection is cheaper. Python 3.10
cannot create a task in a given context, so there the host task runs each step of a
worker inside ``host.context`` itself (``_drive``): the same behaviour, one
``Context.run`` more per wait.
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

#: Make a task the current one (and stop): what a task's own step does around a coroutine step.
enter_task = tasks._enter_task
leave_task = tasks._leave_task
#: On 3.11 ``asyncio.current_task`` is a Python function over this table, so the table
#: is read directly; from 3.12 ``current_task`` is C and is used as it is.
_CURRENT_TASKS: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = (
    getattr(tasks, "_current_tasks", None) if sys.version_info < (3, 12) else None
)

Worker = Coroutine[Any, Any, None]

#: The eager part and the host task share one context: from 3.11 the host task is
#: created in it (``create_task(context=...)``); on 3.10 ``_drive`` enters it around
#: every step of a worker.
_TASK_CONTEXT: Final = sys.version_info >= (3, 11)

#: ``running_task(loop)``: the task running on ``loop``, or None; eager handling is
#: possible only when it is None. One C call.
running_task: Callable[[asyncio.AbstractEventLoop], Any]
if _CURRENT_TASKS is not None:
    running_task = _CURRENT_TASKS.get
else:
    running_task = tasks.current_task


class Host:
    """One connection's host task: parked until a worker coroutine needs a task.

    ``on_suspend`` runs each time a worker in the host task waits or ends (flush the
    replies so far), ``on_resume`` each time it runs again. ``task`` and ``context``
    are what eager handling enters: when ``running_task(loop)`` is None, the caller
    runs its code between ``enter_task(loop, host.task)`` and ``leave_task`` inside
    ``host.context.run(...)``; otherwise it ``submit``s a worker.
    """

    __slots__ = ("_loop", "context", "initial", "_inbox", "task", "_on_suspend", "_on_resume", "_busy", "_closed")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_suspend: Callable[[], None], on_resume: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._on_suspend = on_suspend
        self._on_resume = on_resume
        self._busy = False  # the host task is running a worker
        self._closed = False
        self._inbox: asyncio.Future[Worker | None] = loop.create_future()
        self.context = contextvars.copy_context()
        self.initial = self.context.copy()  # what the context holds before any handler ran
        if _TASK_CONTEXT:
            self.task = loop.create_task(self._serve(), context=self.context)  # type: ignore[call-arg,unused-ignore]
        else:
            self.task = loop.create_task(self._serve())

    def reusable(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Parked, never cancelled, and no handler left a context variable set: as good as new."""
        task = self.task
        return (
            not self._busy
            and not self._closed
            and not self._inbox.done()
            and not task.done()
            and task.get_loop() is loop
            and _cancelling(task) == 0
            and self.context == self.initial
        )

    def rebind(self, on_suspend: Callable[[], None], on_resume: Callable[[], None]) -> None:
        """Serve another connection (only while parked)."""
        self._on_suspend = on_suspend
        self._on_resume = on_resume

    def submit(self, worker: Worker) -> None:
        """Have the host task run ``worker`` (it runs one at a time; the caller ensures that)."""
        self._inbox.set_result(worker)

    def close(self) -> None:
        """End the host task once it runs no worker (a running one ends by itself)."""
        self._closed = True
        if not self._busy and not self._inbox.done():
            self._inbox.set_result(None)  # "no more work": the task returns (cheaper than cancel)

    def cancel_worker(self) -> None:
        """Cancel the worker that waits in the host task, as ``task.cancel()`` would."""
        if self._busy:
            self.task.cancel()

    async def _serve(self) -> None:
        while not self._closed or self._inbox.done():
            worker = await self._inbox
            if worker is None:
                return
            self._inbox = self._loop.create_future()
            self._busy = True
            self._on_resume()
            try:
                await _drive(worker, self._on_suspend, self._on_resume, None if _TASK_CONTEXT else self.context)
            except asyncio.CancelledError:
                # cancel_worker(): the worker has ended; this task serves the next ones.
                uncancel = getattr(self.task, "uncancel", None)
                if uncancel is not None:
                    uncancel()
            except Exception:
                logger.exception("A connection worker failed")
            finally:
                self._busy = False
                self._on_suspend()


def _cancelling(task: asyncio.Task[Any]) -> int:
    """``task.cancelling()`` (3.11+); on 3.10 a cancelled host task sees it as its inbox cancelled."""
    cancelling = getattr(task, "cancelling", None)
    return 0 if cancelling is None else int(cancelling())


@types.coroutine
def _drive(
    coro: Worker,
    on_suspend: Callable[[], None],
    on_resume: Callable[[], None],
    context: contextvars.Context | None = None,
) -> Generator[Any, Any, None]:
    """``await coro``, calling ``on_suspend``/``on_resume`` around each of its waits.

    With ``context`` (Python 3.10), each step of ``coro`` runs inside it.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            if context is None:
                yielded = coro.send(value) if error is None else coro.throw(error)
            else:
                yielded = context.run(coro.send, value) if error is None else context.run(coro.throw, error)
        except StopIteration:
            return
        on_suspend()
        try:
            value, error = (yield yielded), None
        except BaseException as exc:  # cancellation and errors go to the worker, as in a task
            value, error = None, exc
        on_resume()


#: Marks what a stepper yields when a coroutine has returned: ``(DONE, result)``.
DONE: Final = object()


@types.coroutine
def _stepper() -> Generator[Any, Any, None]:
    coro = yield None
    while True:
        # ``yield from`` takes a returning coroutine's value without raising
        # StopIteration, which ``coro.send`` would (an exception per packet).
        coro = yield (DONE, (yield from coro))


def new_stepper() -> Generator[Any, Any, None]:
    """A stepper: ``stepper.send(coro)`` runs ``coro`` until it returns or waits.

    It returns ``(DONE, result)`` when ``coro`` returned, else what ``coro`` waits on;
    then ``resume_stepper`` finishes it in a task, and the stepper can be used again.
    When ``coro`` raises, ``send`` raises and the stepper is spent.
    """
    stepper = _stepper()
    stepper.send(None)
    return stepper


@types.coroutine
def resume_stepper(stepper: Generator[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Await the coroutine a stepper runs, which waits on ``waiting_on``; its result."""
    while True:
        try:
            value = yield waiting_on
        except BaseException as exc:  # cancellation and errors go to the coroutine, as in a task
            waiting_on = stepper.throw(exc)
        else:
            waiting_on = stepper.send(value)
        if type(waiting_on) is tuple and waiting_on[0] is DONE:
            return waiting_on[1]


#: Idle host tasks a server keeps for new connections.
HOST_POOL_SIZE: Final = 128


class HostPool:
    """Host tasks of closed connections, lent to new ones.

    A task costs more to create, park and end than a whole echo request, and a client
    that connects per request (as AsyncAPY's did) would pay that every time. A host
    is lent again only when it is as good as new (``Host.reusable``): parked, never
    cancelled, its context as it was. What stays shared is the task's identity:
    ``asyncio.current_task()`` in a handler is a task that served other connections
    before, one at a time, never two at once.
    """

    __slots__ = ("_idle", "_closed")

    def __init__(self) -> None:
        self._idle: list[Host] = []
        self._closed = False

    def take(self, loop: asyncio.AbstractEventLoop) -> Host:
        """An idle host (bind it with ``rebind`` before it runs a worker), or a new one."""
        idle = self._idle
        while idle:
            host = idle.pop()
            if host.reusable(loop):  # still parked: the loop may have ended it meanwhile
                return host
        return Host(loop, _nothing, _nothing)

    def give_back(self, host: Host, loop: asyncio.AbstractEventLoop) -> None:
        """A connection closed: keep its host for the next one, or end it."""
        if not self._closed and len(self._idle) < HOST_POOL_SIZE and host.reusable(loop):
            host.rebind(_nothing, _nothing)
            self._idle.append(host)
        else:
            host.close()

    def close(self) -> None:
        """End every idle host, and the hosts given back from now on (the server stops)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for host in idle:
            host.close()


def _nothing() -> None:
    pass
