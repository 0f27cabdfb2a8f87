"""The asyncio transport: one ``Connection`` per accepted socket.

It moves bytes between the socket and the sans-IO ``FrameDecoder``, keeps the packets
of its connection in order (one at a time per connection, connections run
concurrently), bounds what a peer can make it hold, and times out idle peers. What the
bytes mean is its ``Exchange``'s (``asyncapy.exchange``): the connection hands it each
frame and runs the coroutine it gets back (stepped right in ``data_received``; handlers
that wait go on in the connection's host task, ``_eager``), then hands it the result.
It knows none of the pipeline's layers (``asyncapy.pipeline``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from ._eager import DONE, Host, HostPool, enter_task, leave_task, new_stepper, resume_stepper, running_task
from ..wire.codecs import CODECS
from ..wire.errors import ERR_TIMED_OUT
from .exchange import Exchange
from .gate import Gate
from ..model.peer import Client, Session
from .pipeline import Pipeline
from ..wire.protocol import FRAME_TAIL, PROTOCOL_VERSION, PROTOCOL_VERSION_2, V2_TAIL, Batch, Byteorder, FrameDecoder, FrameError, RawFrame, header_packer

logger = logging.getLogger("asyncapy")

#: 64 packets: one socket read of small pipelined packets fills it at once, so a
#: well-behaved client never waits on it, and 64 x max_packet_size bounds what one
#: greedy connection can queue.
DEFAULT_MAX_PENDING: Final = 64
#: AsyncAProto v2 requests of one connection running at once (``asyncapy.serve.multiplex``).
DEFAULT_MAX_STREAMS: Final = 100
#: ``timeout`` is enforced by a sweep over the connections this often per timeout
#: period (so a timeout fires at most an eighth of it late), and at least once a second.
SWEEPS_PER_TIMEOUT: Final = 8
MAX_SWEEP_INTERVAL: Final = 1.0
#: After an error that closes the connection (ERR_TIMED_OUT, a fatal frame error), the
#: server half-closes and reads (and drops) what the peer still sends for at most this
#: long: closing a socket with unread input makes the kernel send a reset, which can
#: destroy the error reply before the peer reads it.
LINGER_AFTER_ERROR: Final = 1.0
#: ERR_INTERNAL's detail: what failed is in the log, never in the reply.
_INTERNAL_DETAIL: Final = "the handler failed; the error is in the server's log"

# Why reading is paused; reading resumes when no reason is left.
#: An idle connection's queue (``Connection._queue`` makes a list when events wait).
_NO_PENDING: Final[tuple[()]] = ()

# Bits of ``Connection._holds`` (an int: an idle connection holds no set).
_HOLD_QUEUE: Final = 1  # max_pending packets wait to be handled
_HOLD_WRITE: Final = 2  # the peer does not read its replies
_HOLD_FATAL: Final = 4  # a fatal frame error: the connection is closing
HOLD_QUEUE: Final = _HOLD_QUEUE
HOLD_FATAL: Final = _HOLD_FATAL

#: Replies queued while handlers run are flushed early past this many bytes, so a
#: handler that sends a lot without ever waiting still hands it to the transport
#: (whose high-water mark then makes ``drain`` wait).
_FLUSH_AT: Final = 64 * 1024


@dataclass(eq=False)
class ServingContext:
    """What every connection of one running server shares."""

    pipeline: Pipeline
    header_size: int
    byteorder: Byteorder
    max_packet_size: int
    timeout: float
    connections: set[Connection] = field(default_factory=set)
    max_pending: int = DEFAULT_MAX_PENDING
    max_streams: int = DEFAULT_MAX_STREAMS
    #: Serves a connection whose first frame is AsyncAProto v2 (``asyncapy.serve.multiplex.upgrade``),
    #: given the connection and the bytes read so far; None: every connection speaks v1 only.
    upgrade: Callable[[Connection, bytes], None] | None = None
    #: Bytes read from and written to the connections closed so far (``traffic``).
    bytes_in: int = 0
    bytes_out: int = 0
    # Worked out once here rather than once per connection:
    pack_header: Callable[[int, int, int], bytes] = field(init=False)
    encodings: frozenset[int] = field(init=False)
    #: The one timer that enforces ``timeout`` for every connection (see ``_sweep``).
    sweeper: asyncio.TimerHandle | None = field(init=False, default=None)
    sweep_every: float = field(init=False)
    _done: asyncio.Future[None] | None = field(init=False, default=None)
    #: Host tasks of closed connections, for new ones (see ``HostPool``).
    hosts: HostPool = field(init=False, default_factory=HostPool)
    #: The host that eager bursts borrow when their connection holds none (``Connection._start``).
    spare: Host | None = field(init=False, default=None)
    #: Steps handlers eagerly, for every connection: one burst runs at a time.
    stepper: Generator[Any, Any, None] = field(init=False, default_factory=new_stepper)

    def __post_init__(self) -> None:
        self.pack_header = header_packer(self.header_size, self.byteorder)
        self.encodings = frozenset(CODECS)
        self.sweep_every = min(self.timeout / SWEEPS_PER_TIMEOUT, MAX_SWEEP_INTERVAL) if self.timeout else MAX_SWEEP_INTERVAL

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """What the listener makes per accepted socket: a ``Connection``, or the gate in front of one."""
        pipeline = self.pipeline
        if not pipeline.gated:
            return lambda: Connection(self)
        make = lambda: Connection(self)  # noqa: E731
        trusted, admission, timeout = pipeline.trusted_proxies, pipeline.admission, self.timeout
        return lambda: Gate(make, trusted, admission, timeout)

    def close_hosts(self) -> None:
        """End the idle host tasks, the spare's too (the serving run ends)."""
        self.hosts.close()
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.close()

    def traffic(self) -> tuple[int, int]:
        """Bytes read and written by every connection so far (open ones included)."""
        received, sent = self.bytes_in, self.bytes_out
        for conn in self.connections:
            received += conn.bytes_in
            sent += conn.bytes_out
        return received, sent

    def done_future(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future of ``loop`` that is already done: what ``drain`` returns when it need not wait."""
        done = self._done
        if done is None or done.get_loop() is not loop:
            done = self._done = loop.create_future()
            done.set_result(None)
        return done


class Connection(asyncio.Protocol):
    """One client connection; see the module docstring."""

    # Slots: every packet reads and writes a dozen of these (slot access is the fastest).
    __slots__ = (
        "_cancelled", "_clock", "_corked", "_ctx", "_decoder", "_drain_waiters", "_eof", "_ex", "_holds", "_host",
        "_idle_waiters", "_loop", "_mark", "_out", "_out_size", "_pack_header", "_pending",
        "_requests", "_seen", "_transport", "_working", "_write_paused", "bytes_in", "writes",
        "bytes_out", "closing", "__weakref__",
    )  # fmt: skip

    def __init__(self, ctx: ServingContext) -> None:
        self._ctx = ctx
        self._loop = loop = asyncio.get_running_loop()
        self._clock = _clock_of(loop)
        self._pack_header = ctx.pack_header
        ctx.done_future(loop)  # made once for the run's loop: what drain returns when it need not wait
        self._decoder: FrameDecoder | _FirstRead = (
            FrameDecoder(ctx.header_size, ctx.byteorder, ctx.max_packet_size, ctx.encodings)
            if ctx.upgrade is None
            else _FirstRead(self)
        )
        #: A v2 connection's requests (``asyncapy.serve.multiplex``), which serve it once it upgraded.
        self._requests: Requests | None = None
        # A list (made when events wait, see ``_queue``), not a deque: it holds at most
        # max_pending events, and an idle connection holds none (an empty deque is 760 bytes).
        self._pending: list[RawFrame | FrameError] | tuple[()] = _NO_PENDING
        self._working = False
        self._host: Host | None = None
        self._corked = False
        self._out: list[bytes] | None = None  # replies queued while corked (made per burst)
        self._out_size = 0
        self._idle_waiters: list[asyncio.Future[None]] | None = None  # made when someone waits
        self._transport: asyncio.Transport | None = None
        self._mark = 0.0
        self._seen = 0.0
        self._holds = 0
        #: True once the connection is closing: later sends are ignored (read by ``Client``).
        self.closing = False
        self._eof = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._ex: Exchange | None = None
        #: The server cancelled the running handler (shutdown): its CancelledError is no handler failure.
        self._cancelled = False
        #: Bytes read and written (``ServingContext.traffic``), and the frames written for the
        #: packet being handled (its exchange resets ``writes`` as the packet begins).
        self.bytes_in = 0
        self.bytes_out = 0
        self.writes = 0

    @property
    def client(self) -> Client | None:
        """The peer as handlers see it (None before the connection opened or once refused)."""
        return None if self._ex is None else self._ex.client

    @property
    def session(self) -> Session | None:
        return None if self._ex is None else self._ex.client.session

    @property
    def exchange(self) -> Exchange | None:
        """Where this connection's packets are answered (``asyncapy.model.answers``)."""
        return self._ex

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.open(cast(asyncio.Transport, transport), str(peer[0]), int(peer[1]))

    def open(self, transport: asyncio.Transport, host: str, port: int, refusal: tuple[str, str] | None = None,
             member: str | None = None) -> None:  # fmt: skip
        """Serve the client at ``host:port`` on ``transport`` (from ``connection_made``, or from the gate)."""
        self._transport = transport
        ctx = self._ctx
        self._ex = ctx.pipeline.open(self, host, port, len(ctx.connections), refusal, member)
        if self._ex is None:  # refused: its error reply is written
            self.close()
            return
        ctx.connections.add(self)
        self._mark = self._clock()
        if ctx.sweeper is None:
            ctx.sweeper = self._loop.call_later(ctx.sweep_every, _sweep, ctx, self._loop)

    def data_received(self, data: bytes) -> None:
        """Decode the read and handle its packets now, or queue them while handling is under way.

        Frames beyond ``max_pending`` stay undecoded in the decoder (at most one socket
        read) and reading is held until the queue drains. Handling starts eagerly (see
        ``_work_eagerly``); the replies it queues go out in one write.
        """
        if self.closing:
            return
        self.bytes_in += len(data)
        self._seen = now = self._clock()
        decoder = self._decoder
        if not decoder.in_frame:
            self._mark = now  # a packet must be whole within `timeout` of its first byte
        pending = self._pending
        events = decoder.receive(data, self._ctx.max_pending - len(pending))
        if events:
            last = events[-1]
            if type(last) is FrameError and last.fatal:
                self._hold_reading(_HOLD_FATAL)
            if not self._working:
                self._start(events)
                return
            pending = self._queue()
            pending.extend(events)
        if len(pending) >= self._ctx.max_pending:
            self._hold_reading(_HOLD_QUEUE)

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._working:
            return True  # keep the write side open until the pending replies are out
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._host is not None:
            self._ctx.hosts.give_back(self._host, self._loop)
            self._host = None
        self._unregister()
        self._wake_drainers()
        if self._ex is not None:
            self._ex.lost()

    def _unregister(self) -> None:
        ctx = self._ctx
        if self in ctx.connections:
            ctx.connections.discard(self)
            ctx.bytes_in += self.bytes_in
            ctx.bytes_out += self.bytes_out
            self.bytes_in = self.bytes_out = 0

    def let_go(self) -> None:
        """Close an idle connection whose peer already left, and end its session now (``Pipeline.open``)."""
        self._unregister()
        if self._ex is not None:
            self._ex.lost()
        self.close()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._hold_reading(_HOLD_WRITE)  # a peer that does not read must not make us buffer

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()
        self._release_reading(_HOLD_WRITE)

    # -- the link a Client writes through ------------------------------------

    def write_payload(self, payload: bytes, encoding: int) -> None:
        if self.closing:
            return
        size = len(payload)
        header = self._pack_header(size + FRAME_TAIL, PROTOCOL_VERSION, encoding)
        self.writes += 1
        if self._corked:
            out = self._out
            if out is None:
                out = self._out = []
            out.append(header)
            out.append(payload)
            self._out_size += size
            if self._out_size > _FLUSH_AT:
                self._flush()
            return
        if self._transport is not None:
            self.bytes_out += len(header) + size
            self._transport.writelines((header, payload))

    def close(self) -> None:
        """Close after the buffered replies are written; later sends are ignored."""
        if self.closing:
            return
        self._flush()
        self.closing = True
        if self._transport is not None:
            self._transport.close()

    def close_after_error(self) -> None:
        """Close after an error reply so that the peer reads it rather than a reset.

        Half-closes (the reply, then EOF), drops whatever the peer still sends, and closes
        at its EOF or after ``LINGER_AFTER_ERROR`` seconds. TLS and a peer that does not
        read get a plain ``close``/``abort`` as before.
        """
        transport = self._transport
        if self.closing or transport is None or self._write_paused or not transport.can_write_eof():
            self.close()
            return
        self._flush()
        self.closing = True  # data_received drops the peer's input from now on
        try:
            transport.write_eof()
        except OSError:  # the peer is already gone (reset): nothing to linger for
            transport.abort()
            return
        self._loop.call_later(LINGER_AFTER_ERROR, transport.close)
        if not transport.is_reading():
            transport.resume_reading()

    def drain(self) -> Awaitable[None]:
        """Wait while the socket's write buffer is above its high-water mark.

        Not a coroutine function: every ``client.send`` awaits it and it almost never
        waits, so the common case returns a future that is already done (awaiting it
        runs no Python code) instead of a new coroutine.
        """
        if not self._write_paused or self.closing:
            return self._ctx._done  # type: ignore[return-value]  # made by __init__
        waiter = self._loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        return waiter

    @property
    def busy(self) -> bool:
        """True while packets are being handled or wait to be."""
        return self._working

    async def wait_idle(self) -> None:
        """Return once every packet received so far has been handled."""
        while self._working:
            waiter = self._loop.create_future()
            if self._idle_waiters is None:
                self._idle_waiters = []
            self._idle_waiters.append(waiter)
            await waiter

    @property
    def pending(self) -> int:
        """Packets (and frame errors) decoded and waiting to be handled."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes held for this connection: undecoded input plus unsent replies."""
        out = self._transport.get_write_buffer_size() if self._transport is not None else 0
        return self._decoder.buffered + out

    def quiet_for(self) -> float:
        """Seconds since the last byte arrived or the last packet was handled; 0 while handling."""
        if self._working:
            return 0.0
        return self._clock() - max(self._seen, self._mark)

    def _shed(self) -> None:
        """Quiet for a while: give the host task back to the pool.

        Only a connection whose handler waited (or set a context variable) holds a
        host between packets (``_start``); this lets it go once it is quiet.
        """
        host, self._host = self._host, None
        if host is not None:
            self._ctx.hosts.give_back(host, self._loop)

    def cancel_work(self) -> None:
        """Cancel the running handler (shutdown past its deadline)."""
        if self._requests is not None:
            self._cancelled = True
            self._requests.cancel_all()
        elif self._working and self._host is not None:
            self._cancelled = True
            self._host.cancel_worker()

    def cancelled_by_server(self) -> bool:
        """True when the server cancelled the running handler (``cancel_work``), not the handler itself."""
        return self._cancelled

    def abort(self) -> None:
        """Drop the connection now, unsent replies included (a peer that never reads)."""
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    # -- what a v2 connection's requests (``asyncapy.serve.multiplex``) tell the connection ------

    def serve_requests(self, requests: Requests, decoder: FrameDecoder[Any]) -> None:
        """From now on ``requests`` read and answer this connection's frames (it spoke v2)."""
        self._requests = requests
        self._decoder = decoder

    def buffer(self, header: bytes, payload: bytes) -> bool:
        """Queue a frame for the next ``flush`` (or ``close``); True when the queue was empty."""
        out = self._out
        if out is None:
            self._out = [header, payload]
            self._out_size = len(payload)
            return True
        out.append(header)
        out.append(payload)
        self._out_size += len(payload)
        if self._out_size > _FLUSH_AT:  # past 64 KiB: to the transport, whose high-water mark makes drain wait
            self._flush()
        return False

    def note_read(self, size: int, in_frame: bool) -> None:
        """``size`` bytes were read; ``in_frame``: a frame had begun before them (timeouts, traffic)."""
        self.bytes_in += size
        self._seen = now = self._clock()
        if not in_frame:
            self._mark = now

    def begin_work(self) -> None:
        """Requests are in flight: the idle timeout stops, ``busy`` is True."""
        self._working = True

    def end_work(self) -> None:
        """No request is in flight any more (``_done``)."""
        self._done()

    def hold_reading(self, reason: int) -> None:
        self._hold_reading(reason)

    def release_reading(self, reason: int) -> None:
        self._release_reading(reason)

    @property
    def holds(self) -> int:
        """Why reading is paused (``HOLD_*`` bits); 0 when it is not."""
        return self._holds

    # -- handling packets, in order: eagerly, replies of a burst in one write ------

    def _cork(self) -> None:
        self._corked = True

    def _uncork(self) -> None:
        """The handlers finished or wait: write what they queued, in one call."""
        self._corked = False
        self._flush()

    def _flush(self) -> None:
        """Write what was queued (``buffer``, or replies while corked), in one call."""
        out = self._out
        if not out:
            return
        self._out = None
        self._out_size = 0
        if self._transport is not None and not self.closing:
            data = b"".join(out)
            self.bytes_out += len(data)
            self._transport.write(data)

    #: What ``buffer`` queued, out in one write (the multiplexer's name for ``_flush``).
    flush = _flush

    def _work_eagerly(self, events: Batch) -> None:
        """Handle ``events`` without a task, stepping each handler once; hand over on a wait.

        The queue is empty when this starts; what is left of ``events`` when a handler
        waits (or reading is held) is queued for the host task, in order.
        """
        ctx = self._ctx
        stepper = ctx.stepper
        ex: Exchange = self._ex  # type: ignore[assignment]  # set by open, before any data
        while events:
            rest = iter(events)
            for event in rest:
                if self._holds:  # rare: reading is held; only the async worker can wait for relief
                    self._queue().append(event)
                    self._hand_over(rest, self._work())
                    return
                if type(event) is not tuple:
                    self._frame_error(event)  # type: ignore[arg-type]
                    continue
                coro = ex.begin(event)
                if coro is None:
                    continue
                try:
                    out = stepper.send(coro)
                except BaseException as exc:  # whatever handler code raises, the packet is answered
                    stepper = ctx.stepper = new_stepper()  # the old one is spent
                    ex.failed(exc, event[0])
                    continue
                if type(out) is tuple and out[0] is DONE:
                    if out[1] is not None or ex.record is not None:
                        ex.finish(out[1], event[0])
                    continue
                ctx.stepper = new_stepper()  # the host task finishes this one
                self._hand_over(rest, self._after_wait(stepper, out, event[0]))
                return
            events = self._pull_more()
        self._working = False  # as _done(), within the read that started it
        self._mark = self._seen
        if self._idle_waiters or self._eof:
            self._done()

    def _hand_over(self, rest: Iterator[RawFrame | FrameError], worker: Coroutine[Any, Any, None]) -> None:
        """Queue the events not handled yet and let the host task go on with ``worker``."""
        pending = self._queue()
        pending.extend(rest)
        if len(pending) >= self._ctx.max_pending:
            self._hold_reading(_HOLD_QUEUE)
        host = self._host or self._claim()
        host.rebind(self._uncork, self._cork)  # the host task runs this connection's worker
        host.submit(worker)

    def _borrow(self) -> Host:
        """The serving run's spare host (made on the first burst, or after one was claimed)."""
        ctx = self._ctx
        host = ctx.spare = ctx.hosts.take(self._loop)
        return host

    def _claim(self) -> Host:
        """Keep the spare host this burst borrowed: a handler waits in it, or set its context."""
        ctx = self._ctx
        host: Host = ctx.spare  # type: ignore[assignment]  # _start borrowed it
        ctx.spare = None
        self._host = host
        return host

    async def _after_wait(self, stepper: Generator[Any, Any, None], waiting_on: Any, encoding: int) -> None:
        """In the host task: finish the handler that waited, then the rest of the queue."""
        ex: Exchange = self._ex  # type: ignore[assignment]
        try:
            result = await resume_stepper(stepper, waiting_on)
        except BaseException as exc:
            ex.failed(exc, encoding)
            if self._stop_on(exc):
                self._done()
                raise
        else:
            ex.finish(result, encoding)
        await self._work()

    async def _work(self) -> None:
        """In the host task: handle the queue, waiting for each handler and for relief of held reading."""
        pending = self._queue()
        ex: Exchange = self._ex  # type: ignore[assignment]
        try:
            while True:
                if not pending:
                    pending.extend(self._pull_more())
                    if not pending:
                        break
                event = pending.pop(0)
                if type(event) is tuple:
                    coro = ex.begin(event)
                    if coro is not None:
                        try:
                            result = await coro
                        except BaseException as exc:
                            ex.failed(exc, event[0])
                            if self._stop_on(exc):
                                raise
                        else:
                            ex.finish(result, event[0])
                else:
                    self._frame_error(event)  # type: ignore[arg-type]
                if self._holds:  # rare: reading is paused, see _relieve
                    await self._relieve()
        finally:
            self._done()

    def _stop_on(self, exc: BaseException) -> bool:
        """The server cancelled this connection's work (shutdown): stop handling its queue.

        Any other exception was the handler's (a ``CancelledError`` it raised itself, even
        ``SystemExit``): answered, and the next packet is handled.
        """
        return self._cancelled and isinstance(exc, asyncio.CancelledError)

    def _queue(self) -> list[RawFrame | FrameError]:
        """The queue of events waiting to be handled, made when the first one waits."""
        pending = self._pending
        if type(pending) is tuple:
            pending = self._pending = []
        return pending  # type: ignore[return-value]

    def _done(self) -> None:
        """Every queued packet is handled."""
        if not self._pending:
            self._pending = _NO_PENDING
        self._working = False
        self._mark = self._clock()
        if self._idle_waiters:
            self._wake_idle()
        if self._eof:
            self.close()

    def _frame_error(self, error: FrameError) -> None:
        self._ex.frame_error(error)  # type: ignore[union-attr]
        if error.fatal:
            self.close_after_error()

    def _timed_out(self) -> None:
        """No complete packet within ``timeout`` (checked by ``_sweep``): answer and close."""
        timeout = self._ctx.timeout
        ex: Exchange = self._ex  # type: ignore[assignment]  # only registered connections time out
        logger.info("(%s) Timed out after %s seconds without a complete packet", ex.client.session.id, timeout)
        ex.connection_error(ERR_TIMED_OUT, f"no complete packet within {timeout} seconds")
        if self._write_paused:
            self.abort()  # the peer does not read: close() would wait forever to flush
        else:
            self.close_after_error()

    # -- flow control: bounded memory per connection --------------------------------

    def _start(self, events: Batch) -> None:
        """Handle ``events`` eagerly in the host task's name, then write their replies at once."""
        pending = self._pending
        if pending:  # left by a cancelled worker (shutdown): they go first
            events = [*pending, *events]
            self._pending = _NO_PENDING
        loop = self._loop
        # A connection holds a host only while a handler of it waits (or after one set a
        # context variable); otherwise the burst borrows the serving run's spare host.
        host = self._host or self._ctx.spare or self._borrow()
        self._working = True
        self._corked = True
        if running_task(loop) is not None:  # a task runs (a test's): no eager start
            self._hand_over(iter(events), self._work())
            return
        task = host.task
        enter_task(loop, task)
        try:
            host.context.run(self._work_eagerly, events)
        finally:
            leave_task(loop, task)
        if self._host is None and host.context != host.initial:
            self._claim()  # a handler set a context variable: it lives for this connection
        self._corked = False
        out = self._out
        if out:  # as _flush()
            self._out = None  # an idle connection holds no buffer
            self._out_size = 0
            if not self.closing:
                data = b"".join(out)
                self.bytes_out += len(data)
                self._transport.write(data)  # type: ignore[union-attr]  # set before any data

    async def _relieve(self) -> None:
        """Between packets while reading is held: wait for the peer to read, refill the queue."""
        if self._write_paused:
            await self.drain()
        pending = self._queue()
        if self._holds & _HOLD_QUEUE and len(pending) <= self._ctx.max_pending // 2:
            pending.extend(self._pull_more())
            if len(pending) < self._ctx.max_pending:
                self._release_reading(_HOLD_QUEUE)

    def _pull_more(self) -> Batch:
        """Frames the decoder still holds: a read can bring more than the queue takes."""
        decoder = self._decoder
        if not decoder.in_frame:
            return []
        events = decoder.pull(self._ctx.max_pending - len(self._pending))
        if events:
            last = events[-1]
            if type(last) is FrameError and last.fatal:
                self._hold_reading(_HOLD_FATAL)
        return events

    def _hold_reading(self, reason: int) -> None:
        self._holds |= reason
        self._pause_reading()

    def _release_reading(self, reason: int) -> None:
        self._holds = holds = self._holds & ~reason
        transport = self._transport
        if holds or self.closing or transport is None or transport.is_reading():
            return
        transport.resume_reading()
        self._mark = self._clock()  # time spent paused by us does not count against the peer

    def _pause_reading(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        if waiters is None:
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, None
        if waiters is None:
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Requests(Protocol):
    """A v2 connection's requests in flight (``asyncapy.serve.multiplex.Multiplexer``)."""

    def cancel_all(self) -> None:
        """Shutdown past its deadline: cancel every request in flight."""


class _FirstRead:
    """A connection's decoder until its first frame says which version it speaks.

    Holds back at most ``header_size`` bytes (until the Protocol-Version byte arrived).
    Then a v1 frame (or one of a version nobody speaks, answered as v1 always answered
    it) gets the connection its v1 decoder, which reads on from here; a v2 frame with
    room for its header goes to ``ServingContext.upgrade``. Nothing per packet.
    """

    __slots__ = ("conn", "held")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.held = b""

    @property
    def in_frame(self) -> bool:
        return bool(self.held)

    @property
    def buffered(self) -> int:
        return len(self.held)

    def pull(self, limit: int) -> Batch:
        return []

    def receive(self, data: bytes, limit: int) -> Batch:
        conn = self.conn
        ctx = conn._ctx
        if self.held:
            data = self.held + data
        hs = ctx.header_size
        if len(data) <= hs and (len(data) < hs or int.from_bytes(data, ctx.byteorder) <= ctx.max_packet_size):
            self.held = data  # the Protocol-Version byte has not arrived yet
            return []
        self.held = b""
        if len(data) > hs and data[hs] == PROTOCOL_VERSION_2 and int.from_bytes(data[:hs], ctx.byteorder) >= V2_TAIL:
            ctx.upgrade(conn, data)  # type: ignore[misc]  # set, or there would be no _FirstRead
            return []  # the multiplexer's decoder reads it (no v1 decoder made for nothing)
        decoder = conn._decoder = FrameDecoder(ctx.header_size, ctx.byteorder, ctx.max_packet_size, ctx.encodings)
        return decoder.receive(data, limit)


def _sweep(ctx: ServingContext, loop: asyncio.AbstractEventLoop) -> None:
    """Time out the connections that have had no complete packet for ``ctx.timeout`` seconds,
    and let the connections quiet for a sweep give back their host task (``_shed``).

    One timer per server instead of one per connection: a connection costs no timer
    of its own to arm, re-arm and cancel (a heap push of Python comparisons each), and
    a timeout fires at most ``sweep_every`` late. A connection's clock runs from its
    last handled packet or from the first byte of a packet still incomplete; it is
    stopped while its packets are being handled.
    """
    ctx.sweeper = None
    if not ctx.connections:
        return  # the next connection starts the sweeps again
    now = _clock_of(loop)()
    deadline = now - ctx.timeout if ctx.timeout else -1.0
    quiet = now - ctx.sweep_every
    late: list[Connection] = []
    for conn in ctx.connections:
        if conn._working or conn.closing:
            continue
        if conn._mark <= deadline:
            late.append(conn)
        elif conn._host is not None and conn._mark <= quiet:
            conn._shed()
    for conn in late:
        conn._timed_out()
    ctx.sweeper = loop.call_later(ctx.sweep_every, _sweep, ctx, loop)


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or the ``time.monotonic`` it calls when that is all it does (one call less)."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time
