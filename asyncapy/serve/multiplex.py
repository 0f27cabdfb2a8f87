"""AsyncAProto v2 on the server: many requests in flight on one connection (DESIGN §8, docs/protocol.md).

A connection reads its first frame as every connection does (``Connection``); when that
frame is v2, ``upgrade`` hands the transport to a ``Multiplexer`` with
``transport.set_protocol``. The ``Connection`` stays what the server tracks (session,
idle timeout, flow control, shutdown); the multiplexer reads the frames and runs the
requests. Nothing subclasses the connection, and a v1 connection pays nothing for v2.

Each REQUEST is a ``Stream``: its own ``Exchange`` (the pipeline's layers
and answering policies, exactly as on v1, one answer per request) and its own ``Client``
view, whose link is the stream: the first frame written for the request is its REPLY on
its Stream-Id, anything later (a second send) a PUSH on Stream-Id 0, as is every send
of the connection's own client (a background task's). Up to ``max_streams`` requests
run at once, as many more wait, and past that reading pauses (backpressure).

A request's handler is stepped eagerly, as v1's are (``asyncapy.serve._eager``): in
the serving run's spare host task, right in ``data_received``; one that waits keeps
that host task for itself until it ends, so requests that wait run concurrently, each
in a task of its own. Answers written while frames are handled, or within one turn of
the event loop, go out in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any, Final, cast

from ..model.packet import REQUEST_DEADLINE
from ..model.peer import Client
from ..wire.codecs import CODECS
from ..wire.errors import ERR_CANCELLED, ERR_DEADLINE_EXCEEDED, ERR_STREAM_ID_IN_USE
from ..wire.protocol import CANCEL, END, ITEM, PROTOCOL_VERSION_2, PUSH, REPLY, SENT_BY_CLIENT, V2_TAIL, FrameDecoder, FrameError
from ..wire.protocol import v2_header_packer
from ._eager import DONE, Host, enter_task, leave_task, new_stepper, resume_stepper, running_task
from .connection import HOLD_FATAL, HOLD_QUEUE, Connection
from .exchange import Exchange, Link
from .liveness import peer_left

logger = logging.getLogger("asyncapy")

#: How often a v2 connection whose reading is held looks whether its peer left (DESIGN §8: within a second).
PEER_CHECK_EVERY: Final = 1.0
#: The detail of the terminal frame of a request that ended without its handler's answer.
_ENDED: Final = {
    ERR_CANCELLED: "the client cancelled the request",
    ERR_DEADLINE_EXCEEDED: "the request's deadline passed",
}


def upgrade(conn: Connection, data: bytes) -> None:
    """``conn``'s first frame is v2: a ``Multiplexer`` serves it from ``data`` on (``ServingContext.upgrade``)."""
    transport = conn.transport
    if transport is None or conn.exchange is None:
        return
    mux = Multiplexer(conn)
    transport.set_protocol(mux)
    mux.feed(data)


class Stream:
    """One v2 request: the link its exchange and its client view write through."""

    __slots__ = ("mux", "conn", "sid", "encoding", "payload", "deadline", "writes", "done", "reason", "host", "timer", "ex")

    def __init__(self, mux: Multiplexer, sid: int, encoding: int, payload: bytes, deadline: float | None) -> None:
        self.mux = mux
        self.conn = mux.conn
        self.sid = sid
        self.encoding = encoding
        self.payload = payload
        #: The event loop's time at which the request expires (``Packet.deadline``), or None.
        self.deadline = deadline
        #: Frames written for the request (the first is its REPLY).
        self.writes = 0
        #: The request ended: later writes are PUSHes.
        self.done = False
        #: Why the server ended it (ERR_CANCELLED, ERR_DEADLINE_EXCEEDED), or None.
        self.reason: str | None = None
        #: The host task the request's handler waits in (None: not started, or it never waited).
        self.host: Host | None = None
        #: Fires at ``deadline``.
        self.timer: asyncio.TimerHandle | None = None
        #: The request's exchange, made when it starts (None: it waits for its turn).
        self.ex: Exchange | None = None

    @property
    def closing(self) -> bool:
        return self.conn.closing

    @property
    def exchange(self) -> Exchange | None:
        """Where this request is answered (``asyncapy.model.answers.answers_of``)."""
        return self.ex

    def write_payload(self, payload: bytes, encoding: int) -> None:
        if self.done or self.writes:
            self.mux.write(payload, encoding, PUSH, 0)
        else:
            self.mux.write(payload, encoding, REPLY, self.sid)
        self.writes += 1

    def write_item(self, payload: bytes, encoding: int) -> None:
        """One ITEM of the request's streamed answer (DESIGN §9)."""
        if self.done:
            return
        self.mux.write(payload, encoding, ITEM, self.sid)
        self.writes += 1

    def write_end(self, payload: bytes | None, encoding: int) -> None:
        """The END of the request's streamed answer (its terminal frame): empty, or the error map."""
        if self.done:
            return
        self.mux.write(b"" if payload is None else payload, encoding, END, self.sid)
        self.writes += 1
        self.done = True

    def close(self) -> None:
        self.conn.close()

    def drain(self) -> Awaitable[None]:
        return self.conn.drain()

    def cancelled_by_server(self) -> bool:
        """The request was cancelled (CANCEL, deadline, shutdown, peer gone), not by its handler."""
        conn = self.conn
        return self.reason is not None or conn.closing or conn.cancelled_by_server()


class _Replies(Stream):
    """The connection's own exchange writes through this: REPLY frames on ``sid`` (0 but for a refused frame)."""

    __slots__ = ()

    def write_payload(self, payload: bytes, encoding: int) -> None:
        mux = self.mux
        mux.write(payload, encoding, REPLY, self.sid)
        self.writes += 1
        if not mux._handling:  # out now: the connection may close next (a timeout, a refusal)
            mux.conn.flush()


class _Pushes(Stream):
    """The connection's own client (not a request's view) writes through this: PUSH frames."""

    __slots__ = ()

    @property
    def exchange(self) -> Exchange | None:
        return self.mux.conn.exchange

    def write_payload(self, payload: bytes, encoding: int) -> None:
        self.mux.write(payload, encoding, PUSH, 0)
        self.writes += 1


class Multiplexer(asyncio.Protocol):
    """A v2 connection's frames and requests; see the module docstring."""

    __slots__ = (
        "conn", "_loop", "_decoder", "_streams", "_waiting", "_running", "_max", "_pack", "_replies", "_watch",
        "_handling", "_corked", "_stepping", "_ctx", "_limit", "_held", "_base", "_pipeline", "_observer",
    )  # fmt: skip

    def __init__(self, conn: Connection) -> None:
        ctx = conn._ctx
        self.conn = conn
        self._loop = asyncio.get_running_loop()
        self._decoder: FrameDecoder[Any] = FrameDecoder(
            ctx.header_size, ctx.byteorder, ctx.max_packet_size, ctx.encodings, kinds=SENT_BY_CLIENT
        )
        self._streams: dict[int, Stream] = {}
        #: Requests read past ``max_streams`` running, in order (made when one waits: an idle
        #: connection holds no deque).
        self._waiting: deque[Stream] | None = None
        self._running = 0
        self._max = ctx.max_streams
        self._pack = v2_header_packer(ctx.header_size, ctx.byteorder)
        self._replies = _Replies(self, 0, 0, b"", None)
        #: While reading is held: the timer that looks whether the peer is still there.
        self._watch: asyncio.TimerHandle | None = None
        #: True while a batch of frames is being handled: frames read later wait for it (in order).
        self._handling = False
        #: True while a request that waited runs on in its host task: its writes are
        #: flushed when it waits again or ends (``_cork``/``_uncork``).
        self._corked = False
        #: The host task a batch of frames is handled in, eagerly (``_handle``), or None.
        self._stepping: Host | None = None
        self._ctx = ctx
        #: Requests in flight (running or waiting) past which reading pauses.
        self._limit = 2 * ctx.max_streams
        #: Reading is paused for want of room (``_hold``).
        self._held = False
        ex: Exchange = conn.exchange  # type: ignore[assignment]  # upgrade checked it
        self._base = ex
        self._pipeline = ctx.pipeline
        self._observer = ctx.pipeline.observer
        ex.conn = cast(Link, self._replies)  # errors of the connection: REPLY frames
        ex.client._link = _Pushes(self, 0, 0, b"", None)
        conn.serve_requests(self, self._decoder)

    # -- writing -------------------------------------------------------------------------

    def write(self, payload: bytes, encoding: int, kind: int, sid: int) -> None:
        conn = self.conn
        if conn.closing:
            return
        header = self._pack(len(payload) + V2_TAIL, PROTOCOL_VERSION_2, encoding, kind, sid, 0)
        if conn.buffer(header, payload) and not (self._handling or self._corked):
            self._loop.call_soon(conn.flush)  # a task of the application's sent it: out this loop turn

    # -- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn.closing:
            return
        conn.note_read(len(data), self._decoder.in_frame)
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Frames from ``data`` (already counted by the connection)."""
        events = self._decoder.receive(data, self._room())
        if events:
            self._handle(events)  # holds reading when there is no room left
        elif self._room() <= 0:
            self._hold()

    def _room(self) -> int:
        """Frames still to be read now: ``max_streams`` running plus as many waiting."""
        return self._limit - len(self._streams)

    def _handle(self, events: list[Any]) -> None:
        """Handle a batch of frames in order (their answers in one write), then read what was held back."""
        self._handling = True
        try:
            if running_task(self._loop) is not None:  # a task feeds us (a test's): no eager steps
                self._handle_from(events, 0, None)
            else:
                done, count = 0, len(events)
                while done < count:  # in a host task, until a handler waits in it
                    done = self._handle_eagerly(events, done)
        finally:
            self._handling = False
            conn = self.conn
            conn.flush()
            if not self._streams and conn.busy:  # as _drop would have, once per batch
                conn.end_work()
        if self._held or len(self._streams) >= self._limit:
            self._refill()

    def _handle_eagerly(self, events: list[Any], start: int) -> int:
        """Handle ``events[start:]`` in the spare host task's name; where it stopped (a handler waits in it)."""
        ctx = self._ctx
        loop = self._loop
        host = ctx.spare or ctx.hosts.take(loop)
        ctx.spare = self._stepping = host
        task = host.task
        enter_task(loop, task)
        try:
            return host.context.run(self._handle_from, events, start, host)
        finally:
            leave_task(loop, task)
            self._stepping = None

    def _refill(self) -> None:
        """Reading was held and requests finished: take the frames the decoder still holds."""
        conn = self.conn
        if self._held and self._room() > 0 and not conn.closing:
            self._held = False
            conn.release_reading(HOLD_QUEUE)
            events = self._decoder.pull(self._room()) if self._decoder.in_frame else []
            if events:
                self._handle(events)
        if self._room() <= 0:
            self._hold()

    def _handle_from(self, events: list[Any], start: int, host: Host | None) -> int:
        """Handle ``events[start:]`` in order; with ``host``, stop after a request that took it
        (its handler waits) or left a context variable set in it. Returns where it stopped."""
        ctx = self._ctx
        count = len(events)
        index = start
        while index < count:
            self._handle_event(events[index])
            index += 1
            if host is not None:
                if host.context != host.initial:  # not for other requests: it ends once it ran its own
                    if ctx.spare is host:
                        ctx.spare = None
                    host.close()
                    return index
                if ctx.spare is not host:
                    return index
        return count

    def _handle_event(self, event: Any) -> None:
        if type(event) is not tuple:
            self._refused(event)
            return
        encoding, kind, sid, deadline_ms, payload = event
        if kind == CANCEL:
            self._cancel(sid)
            return
        streams = self._streams
        if sid in streams:
            self._connection_error(ERR_STREAM_ID_IN_USE, f"Stream-Id {sid} is in flight", encoding, 0)
            return
        stream = Stream(self, sid, encoding, payload, self._loop.time() + deadline_ms / 1000 if deadline_ms else None)
        if not streams:
            self.conn.begin_work()
        streams[sid] = stream
        if self._running < self._max:
            self._run(stream)
        else:
            waiting = self._waiting
            if waiting is None:
                waiting = self._waiting = deque()
            waiting.append(stream)

    def _refused(self, error: FrameError) -> None:
        """A frame the decoder refused: ERR_HEADER_INVALID on its Stream-Id (0 when that one is in flight)."""
        link = self._replies
        link.sid = 0 if error.stream_id in self._streams else error.stream_id
        try:
            self.conn.exchange.frame_error(error)  # type: ignore[union-attr]
        finally:
            link.sid = 0
        if error.fatal:
            conn = self.conn
            conn.hold_reading(HOLD_FATAL)
            conn.close_after_error()

    def _connection_error(self, code: str, detail: str, encoding: int | None, sid: int) -> None:
        link = self._replies
        link.sid = sid
        try:
            self.conn.exchange.write_error(code, detail, encoding)  # type: ignore[union-attr]
        finally:
            link.sid = 0

    # -- requests ------------------------------------------------------------------------------

    def _run(self, stream: Stream) -> None:
        """Start ``stream``'s request: its layers and its handler now, eagerly; a handler that
        waits goes on in the host task it was stepped in."""
        loop = self._loop
        deadline = stream.deadline
        if deadline is not None:
            if loop.time() >= deadline:  # it expired while waiting: never run
                self._end_unstarted(stream, ERR_DEADLINE_EXCEEDED)
                return
            stream.timer = loop.call_at(deadline, self._expire, stream)
        self._running += 1
        base = self._base  # the request's own exchange, client view and (when observing) record
        if base.encoding_id is None:
            self._first_encoding(stream.encoding)
        view = base.client._view(stream)
        observer = self._observer
        ex = stream.ex = Exchange(
            self._pipeline, stream, view, None if observer is None else observer.record(view)  # type: ignore[arg-type]
        )
        ex.encoding_id = base.encoding_id
        payload, stream.payload = stream.payload, b""
        coro = ex.begin((stream.encoding, payload))
        if coro is None:
            self._finished(stream)
            return
        if deadline is not None:
            coro = _with_deadline(coro, deadline)
        ctx = self._ctx
        host = self._stepping
        if host is None or ctx.spare is not host:  # not in an eager batch, or its host is taken
            self._hand_over(stream, ctx.hosts.take(loop), self._serve(stream, coro, ex))
            return
        stepper = ctx.stepper
        try:
            out = stepper.send(coro)
        except BaseException as exc:  # whatever handler code raises, the request is answered
            ctx.stepper = new_stepper()  # the old one is spent
            self._failed(stream, exc, ex)
            return
        if type(out) is tuple and out[0] is DONE:
            result = out[1]
            if result is not None or ex.record is not None:
                ex.finish(result, stream.encoding)
            self._finished(stream)
            return
        ctx.stepper = new_stepper()  # the host task finishes this one
        self._hand_over(stream, host, self._after_wait(stream, stepper, out, ex))

    def _hand_over(self, stream: Stream, host: Host, worker: Coroutine[Any, Any, None]) -> None:
        """``stream``'s handler waits: it keeps ``host``, whose task runs ``worker``."""
        ctx = self._ctx
        if ctx.spare is host:
            ctx.spare = None
        stream.host = host
        host.rebind(self._uncork, self._cork)  # what the request writes goes out each time it waits
        host.submit(worker)

    def _cork(self) -> None:
        self._corked = True

    def _uncork(self) -> None:
        self._corked = False
        self.conn.flush()

    async def _after_wait(self, stream: Stream, stepper: Any, waiting_on: Any, ex: Exchange) -> None:
        """In the host task: finish a handler that waited, answer it once whatever happens."""
        try:
            result = await resume_stepper(stepper, waiting_on)
        except BaseException as exc:
            self._failed(stream, exc, ex)
        else:
            ex.finish(result, stream.encoding)
            self._finished(stream)
        finally:
            self._release(stream)

    def _first_encoding(self, encoding: int) -> None:
        """The session's encoding is its first request's."""
        base = self._base
        base.encoding_id = encoding
        base.client.encoding = CODECS[encoding].name

    async def _serve(self, stream: Stream, coro: Coroutine[Any, Any, Any], ex: Exchange) -> None:
        """In the host task, from the start: await the handler, answer it once whatever happens."""
        try:
            result = await coro
        except BaseException as exc:  # whatever the handler raises, the request is answered
            self._failed(stream, exc, ex)
        else:
            ex.finish(result, stream.encoding)
            self._finished(stream)
        finally:
            coro.close()  # a task cancelled before it first ran never started the coroutine
            self._release(stream)

    def _failed(self, stream: Stream, exc: BaseException, ex: Exchange) -> None:
        reason = stream.reason
        if reason is not None and isinstance(exc, asyncio.CancelledError):
            ex.error(reason, _ENDED[reason], stream.encoding)
        ex.failed(exc, stream.encoding)  # answers it, unless the server cancelled it (shutdown, peer gone)
        self._drop(stream, True)

    def _release(self, stream: Stream) -> None:
        """The request that waited in its host task ended: the host goes back to the pool."""
        host, stream.host = stream.host, None
        if host is not None:
            self._loop.call_soon(self._ctx.hosts.give_back, host, self._loop)  # once the worker returned

    def _cancel(self, sid: int) -> None:
        """A CANCEL: the request's task is cancelled (a waiting one is answered now); unknown ids ignored."""
        stream = self._streams.get(sid)
        if stream is None or stream.reason is not None:
            return
        if stream.ex is None:
            self._waiting.remove(stream)  # type: ignore[union-attr]  # it waits, so there is a deque
            self._end_unstarted(stream, ERR_CANCELLED)
            return
        stream.reason = ERR_CANCELLED
        if stream.host is not None:
            stream.host.cancel_worker()

    def _expire(self, stream: Stream) -> None:
        stream.timer = None
        host = stream.host
        if host is not None and not stream.done and stream.reason is None:
            stream.reason = ERR_DEADLINE_EXCEEDED
            host.cancel_worker()

    def _end_unstarted(self, stream: Stream, code: str) -> None:
        """A request that ends before its handler started: its REPLY is the error."""
        self._connection_error(code, _ENDED[code], stream.encoding, stream.sid)
        stream.writes += 1
        self._drop(stream, False)

    def _finished(self, stream: Stream) -> None:
        """The request was handled: an empty map when its handler answered nothing (exactly one
        terminal frame), then the next waiting request."""
        if not stream.writes and not self.conn.closing:
            stream.write_payload(CODECS[stream.encoding].encode({}), stream.encoding)
        self._drop(stream, True)

    def _drop(self, stream: Stream, ran: bool) -> None:
        stream.done = True
        timer = stream.timer
        if timer is not None:
            stream.timer = None
            timer.cancel()
        streams = self._streams
        if streams.get(stream.sid) is stream:
            del streams[stream.sid]
        if ran:
            self._running -= 1
        conn = self.conn
        waiting = self._waiting
        while waiting and self._running < self._max and not conn.closing:
            self._run(waiting.popleft())
        if not self._handling:
            if self._held or len(streams) >= self._limit:
                self._refill()
            if not streams and conn.busy:
                conn.end_work()

    # -- the connection's life ---------------------------------------------------------------

    def _hold(self) -> None:
        """No room for more requests: pause reading, and watch the peer while it is paused."""
        conn = self.conn
        self._held = True
        conn.hold_reading(HOLD_QUEUE)
        if self._watch is None and not conn.closing:
            self._watch = self._loop.call_later(PEER_CHECK_EVERY, self._check_peer)

    def _check_peer(self) -> None:
        """Reading is held, so asyncio would not see the peer go: look (once a second) while it is."""
        self._watch = None
        conn = self.conn
        transport = conn.transport
        if conn.closing or transport is None or not conn.holds:
            return
        if peer_left(transport):
            logger.info("(%s) The peer left while its requests ran: they are cancelled", conn.session.id if conn.session else "?")
            transport.abort()  # connection_lost cancels the requests
            return
        self._watch = self._loop.call_later(PEER_CHECK_EVERY, self._check_peer)

    def pause_writing(self) -> None:
        self.conn.pause_writing()
        if self._watch is None and not self.conn.closing:
            self._watch = self._loop.call_later(PEER_CHECK_EVERY, self._check_peer)

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def eof_received(self) -> bool | None:
        """The peer closed its side: it can send no CANCEL any more, so its open streams end
        (their generators close); requests that answer once are still answered."""
        for stream in list(self._streams.values()):
            ex = stream.ex
            if ex is not None and ex.stream and stream.host is not None and stream.reason is None:
                stream.reason = ERR_CANCELLED
                stream.host.cancel_worker()
        return self.conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        self.cancel_all()

    def cancel_all(self) -> None:
        """Cancel every request in flight (the peer left, or shutdown past its deadline)."""
        self._waiting = None
        for stream in list(self._streams.values()):
            if stream.host is not None:
                stream.host.cancel_worker()
            elif stream.ex is None:
                self._drop(stream, False)


async def _with_deadline(coro: Coroutine[Any, Any, Any], deadline: float) -> Any:
    """Run ``coro`` with ``REQUEST_DEADLINE`` set (deadline propagation), then unset it."""
    token = REQUEST_DEADLINE.set(deadline)
    try:
        return await coro
    finally:
        REQUEST_DEADLINE.reset(token)


