"""The asyncio transport: one ``Connection`` per accepted socket.

It moves bytes between the socket and the sans-IO ``FrameDecoder``, keeps the packets
of its connection in order (one at a time per connection, connections run
concurrently), applies the connection rules of DESIGN §1 and hands each decoded
packet to the compiled plan: ``plan.start`` for a simple plan (the handler's coroutine,
stepped right in ``data_received``), else one ``plan.dispatch`` call. Handlers that wait
go on in the connection's host task (``_eager``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

from ._eager import DONE, Host, HostPool, enter_task, leave_task, new_stepper, resume_stepper, running_task
from .codecs import CODEC_IDS, CODECS, DecodeError, EncodeError, get_codec
from .errors import (
    ERR_INTERNAL,
    ERR_NO_HANDLER,
    ERR_REQUEST_MALFORMED,
    ERR_SERVER_BUSY,
    ERR_SESSION_LIMIT_REACHED,
    ERR_TIMED_OUT,
    ApiError,
    StopPropagation,
    error_payload,
)
from .liveness import peer_left
from .logs import clean
from .packet import Packet, received_packet
from .peer import REPLY_ENCODERS, Client, Session, reply_encoder
from .protocol import FRAME_TAIL, PROTOCOL_VERSION, Batch, Byteorder, FrameDecoder, FrameError, RawFrame, header_packer
from .routing import Miss, Plan
from .sessions import SessionRegistry
from .state import SharedSessions

logger = logging.getLogger("asyncapy")

#: 64 packets: one socket read of small pipelined packets fills it at once, so a
#: well-behaved client never waits on it, and 64 x max_packet_size bounds what one
#: greedy connection can queue.
DEFAULT_MAX_PENDING: Final = 64
#: ``timeout`` is enforced by a sweep over the connections this often per timeout
#: period (so a timeout fires at most an eighth of it late), and at least once a second.
SWEEPS_PER_TIMEOUT: Final = 8
MAX_SWEEP_INTERVAL: Final = 1.0
#: A cancelled handler gets this long to run its ``finally`` blocks; one that ignores
#: cancellation is left behind so that the connection can move on.
HANDLER_CANCEL_GRACE: Final = 1.0
#: After an error that closes the connection (ERR_TIMED_OUT, a fatal frame error), the
#: server half-closes and reads (and drops) what the peer still sends for at most this
#: long: closing a socket with unread input makes the kernel send a reset, which can
#: destroy the error reply before the peer reads it.
LINGER_AFTER_ERROR: Final = 1.0
#: ERR_INTERNAL's detail: what failed is in the log, never in the reply.
_INTERNAL_DETAIL: Final = "the handler failed; the error is in the server's log"

# Why reading is paused; reading resumes when no reason is left.
_HOLD_QUEUE: Final = "queue"  # max_pending packets wait to be handled
_HOLD_WRITE: Final = "write"  # the peer does not read its replies
_HOLD_FATAL: Final = "fatal"  # a fatal frame error: the connection is closing

#: Replies queued while handlers run are flushed early past this many bytes, so a
#: handler that sends a lot without ever waiting still hands it to the transport
#: (whose high-water mark then makes ``drain`` wait).
_FLUSH_AT: Final = 64 * 1024


class _HandlerTimedOut(Exception):
    """The handlers of one packet ran past ``handler_timeout``."""


@dataclass(eq=False)
class ServingContext:
    """What every connection of one running server shares."""

    plan: Plan
    sessions: SessionRegistry
    header_size: int
    byteorder: Byteorder
    max_packet_size: int
    timeout: float
    max_connections: int
    default_encoding: int
    connections: set[Connection] = field(default_factory=set)
    debug: bool = False
    max_pending: int = DEFAULT_MAX_PENDING
    handler_timeout: float | None = None
    #: False: error replies are exactly ``{"status": "failure", "error": CODE}`` (AsyncAPY 0.5).
    error_details: bool = True
    #: The access log / metrics' observer (``asyncapy.observe``); None: nothing observed.
    observer: Any = None
    #: ``session_limit`` across servers (``shared_state``): admits each new session (``asyncapy.proxied``).
    admission: SharedSessions | None = None
    # Worked out once here rather than once per connection:
    pack_header: Callable[[int, int, int], bytes] = field(init=False)
    encodings: frozenset[int] = field(init=False)
    default_encoding_name: str = field(init=False)
    #: No debug logging, no handler_timeout and a simple plan: handlers are called directly.
    direct: bool = field(init=False)
    #: The one timer that enforces ``timeout`` for every connection (see ``_sweep``).
    sweeper: asyncio.TimerHandle | None = field(init=False, default=None)
    sweep_every: float = field(init=False)
    _done: asyncio.Future[None] | None = field(init=False, default=None)
    #: Host tasks of closed connections, for new ones (see ``HostPool``).
    hosts: HostPool = field(init=False, default_factory=HostPool)

    def __post_init__(self) -> None:
        self.pack_header = header_packer(self.header_size, self.byteorder)
        self.encodings = frozenset(CODECS)
        self.default_encoding_name = get_codec(self.default_encoding).name
        self.direct = self.plan.simple and self.handler_timeout is None and not self.debug
        self.sweep_every = min(self.timeout / SWEEPS_PER_TIMEOUT, MAX_SWEEP_INTERVAL)

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
        "_clock", "_corked", "_ctx", "_decoder", "_direct", "_drain_waiters", "_encoding_id", "_eof",
        "_holds", "_host", "_idle_waiters", "_loop", "_mark", "_max_pending", "_out", "_out_size",
        "_pack_header", "_pending", "_plan_start", "_ready", "_registered", "_seen", "_stepper",
        "_transport", "_working", "_write_paused", "client", "closing", "session", "__weakref__",
    )  # fmt: skip

    def __init__(self, ctx: ServingContext) -> None:
        self._ctx = ctx
        self._loop = loop = asyncio.get_running_loop()
        self._clock = _clock_of(loop)
        self._pack_header = ctx.pack_header
        self._max_pending = ctx.max_pending
        self._direct = ctx.direct
        self._plan_start = ctx.plan.start
        self._ready = ctx.done_future(loop)
        self._stepper: Generator[Any, Any, None] | None = None  # made on the first packet
        self._decoder = FrameDecoder(ctx.header_size, ctx.byteorder, ctx.max_packet_size, ctx.encodings)
        self._pending: deque[RawFrame | FrameError] = deque()
        self._working = False
        self._host: Host | None = None
        self._corked = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._transport: asyncio.Transport | None = None
        self._mark = 0.0
        self._seen = 0.0
        self._holds: set[str] = set()
        #: True once the connection is closing: later sends are ignored (read by ``Client``).
        self.closing = False
        self._eof = False
        self._registered = False
        self._encoding_id: int | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.client: Client | None = None
        self.session: Session | None = None

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        host, port = str(peer[0]), int(peer[1])
        ctx = self._ctx
        self.session = session = Session(host, port)
        self.client = Client(host, port, session, self, ctx.sessions, ctx.default_encoding_name)
        if ctx.max_connections and len(ctx.connections) >= ctx.max_connections:
            self._refuse(ERR_SERVER_BUSY, f"the server is at its limit of {ctx.max_connections} connections")
            return
        opened = ctx.sessions.open(session, self) or (_let_departed_go(ctx, host) and ctx.sessions.open(session, self))
        if not opened:
            self._refuse(ERR_SESSION_LIMIT_REACHED, f"{host} is at its limit of {ctx.sessions.limit} sessions")
            return
        self._registered = True
        ctx.connections.add(self)
        if logger.isEnabledFor(logging.INFO):  # session.id makes a UUID: only when it is logged
            logger.info("(%s) New session started from %s:%d", session.id, host, port)
        self._mark = self._clock()
        if ctx.timeout and ctx.sweeper is None:
            ctx.sweeper = self._loop.call_later(ctx.sweep_every, _sweep, ctx, self._loop)

    def data_received(self, data: bytes) -> None:
        """Decode the read and handle its packets now, or queue them while handling is under way.

        Frames beyond ``max_pending`` stay undecoded in the decoder (at most one socket
        read) and reading is held until the queue drains. Handling starts eagerly (see
        ``_work_eagerly``); the replies it queues go out in one write.
        """
        if self.closing:
            return
        self._seen = now = self._clock()
        decoder = self._decoder
        if not decoder.in_frame:
            self._mark = now  # a packet must be whole within `timeout` of its first byte
        pending = self._pending
        events = decoder.receive(data, self._max_pending - len(pending))
        if events:
            last = events[-1]
            if type(last) is FrameError and last.fatal:
                self._hold_reading(_HOLD_FATAL)
            if not self._working:
                self._start(events)
                return
            pending.extend(events)
        if len(pending) >= self._max_pending:
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
        if self._registered:
            self._registered = False
            assert self.session is not None
            self._ctx.sessions.close(self.session)
            self._ctx.connections.discard(self)
            if logger.isEnabledFor(logging.INFO):
                logger.info("(%s) The connection was closed", self.session.id)
        self._wake_drainers()
        if self.client is not None:
            self.client._detach()  # freed by reference counting, not left to the cycle collector

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
        header = self._pack_header(len(payload) + FRAME_TAIL, PROTOCOL_VERSION, encoding)
        if self._corked:
            out = self._out
            out.append(header)
            out.append(payload)
            self._out_size += len(payload)
            if self._out_size > _FLUSH_AT:
                self._flush()
            return
        if self._transport is not None:
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
            return self._ready
        waiter = self._loop.create_future()
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

    def cancel_work(self) -> None:
        """Cancel the running handler (shutdown past its deadline)."""
        if self._working and self._host is not None:
            self._host.cancel_worker()

    def abort(self) -> None:
        """Drop the connection now, unsent replies included (a peer that never reads)."""
        self.closing = True
        if self._transport is not None:
            self._transport.abort()

    # -- handling packets, in order: eagerly, replies of a burst in one write ------

    def _cork(self) -> None:
        self._corked = True

    def _uncork(self) -> None:
        """The handlers finished or wait: write what they queued, in one call."""
        self._corked = False
        self._flush()

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._out_size = 0
        if self._transport is not None and not self.closing:
            self._transport.write(b"".join(out))

    def _work_eagerly(self, events: Batch) -> None:
        """Handle ``events`` without a task, stepping each handler once; hand over on a wait.

        The queue is empty when this starts; what is left of ``events`` when a handler
        waits (or reading is held) is queued for the host task, in order.
        """
        stepper = self._stepper
        if stepper is None:
            stepper = self._stepper = new_stepper()
        while events:
            rest = iter(events)
            for event in rest:
                if self._holds:  # rare: reading is held; only the async worker can wait for relief
                    self._pending.append(event)
                    self._hand_over(rest, self._work())
                    return
                if type(event) is not tuple:
                    self._handle_frame_error(event)  # type: ignore[arg-type]
                    continue
                coro = self._begin(event)
                if coro is None:
                    continue
                try:
                    out = stepper.send(coro)
                except (Exception, asyncio.CancelledError) as exc:
                    stepper = self._stepper = new_stepper()  # the old one is spent
                    self._failed(exc, event[0])
                    continue
                if type(out) is tuple and out[0] is DONE:
                    if out[1] is not None:
                        self._finish(out[1], event[0])
                    continue
                self._stepper = new_stepper()  # the host task finishes this one
                self._hand_over(rest, self._after_wait(stepper, out, event[0]))
                return
            events = self._pull_more()
        self._working = False  # as _done(), within the read that started it
        self._mark = self._seen
        if self._idle_waiters or self._eof:
            self._done()

    def _hand_over(self, rest: Iterator[RawFrame | FrameError], worker: Coroutine[Any, Any, None]) -> None:
        """Queue the events not handled yet and let the host task go on with ``worker``."""
        pending = self._pending
        pending.extend(rest)
        if len(pending) >= self._max_pending:
            self._hold_reading(_HOLD_QUEUE)
        self._host.submit(worker)  # type: ignore[union-attr]

    async def _after_wait(self, stepper: Generator[Any, Any, None], waiting_on: Any, encoding: int) -> None:
        """In the host task: finish the handler that waited, then the rest of the queue."""
        try:
            result = await resume_stepper(stepper, waiting_on)
        except Exception as exc:
            self._failed(exc, encoding)
        except BaseException:
            self._done()
            raise
        else:
            if result is not None:
                self._finish(result, encoding)
        await self._work()

    async def _work(self) -> None:
        """In the host task: handle the queue, waiting for each handler and for relief of held reading."""
        pending = self._pending
        try:
            while True:
                if not pending:
                    pending.extend(self._pull_more())
                    if not pending:
                        break
                event = pending.popleft()
                if type(event) is tuple:
                    coro = self._begin(event)
                    if coro is not None:
                        try:
                            result = await coro
                        except Exception as exc:
                            self._failed(exc, event[0])
                        else:
                            if result is not None:
                                self._finish(result, event[0])
                else:
                    self._handle_frame_error(event)  # type: ignore[arg-type]
                if self._holds:  # rare: reading is paused, see _relieve
                    await self._relieve()
        finally:
            self._done()

    def _done(self) -> None:
        """Every queued packet is handled."""
        self._working = False
        self._mark = self._clock()
        if self._idle_waiters:
            self._wake_idle()
        if self._eof:
            self.close()

    def _begin(self, frame: RawFrame) -> Coroutine[Any, Any, Any] | None:
        """Decode and route ``frame``: the coroutine that handles it, or None when it was answered.

        The coroutine is the chosen handler itself for a simple plan (it returns the
        reply), else ``plan.dispatch`` (it sends replies and returns a ``Miss`` or None).
        """
        client: Client = self.client  # type: ignore[assignment]  # set by connection_made
        encoding, raw = frame
        codec = CODECS[encoding]
        if self._encoding_id is None:
            self._encoding_id = encoding
            client.encoding = codec.name
        try:
            payload = codec.decode(raw)
        except DecodeError as exc:
            self._send_error(ERR_REQUEST_MALFORMED, str(exc), encoding)
            return None
        if type(payload) is not dict:
            self._send_error(ERR_REQUEST_MALFORMED, f"the payload must be a map, not {_kind(payload)}", encoding)
            return None
        packet = received_packet(payload, codec.name, client, raw)
        if self._direct:
            try:
                started = self._plan_start(client, packet)
            except Exception as exc:  # a filter or validator of the application raised (not a miss)
                self._failed(exc, encoding)
                return None
            if type(started) is Miss:
                self._send_error(ERR_NO_HANDLER, started.detail, encoding, started.errors)
                return None
            return started  # type: ignore[return-value]
        ctx = self._ctx
        if ctx.debug:
            self._log_packet(frame, codec.name)
        if ctx.handler_timeout is not None:
            return self._dispatch_bounded(client, packet, ctx.handler_timeout)
        return ctx.plan.dispatch(client, packet)

    def _finish(self, result: Any, encoding: int) -> None:
        """A handler returned ``result``: send it if it is a reply; report a dispatch's miss."""
        kind = type(result)
        if kind is Miss:
            self._send_error(ERR_NO_HANDLER, result.detail, encoding, result.errors)
            return
        name = self.client.encoding  # type: ignore[union-attr]
        try:
            try:
                encode = REPLY_ENCODERS[name][kind]
            except KeyError:
                encode = reply_encoder(kind, name)  # a first reply of this type (or an unknown encoding)
            if encode is None or self.closing:
                return
            # A reply the codec cannot carry, or too long for header_size, is the handler's failure.
            self.write_payload(encode(result), CODEC_IDS[name])
        except Exception as exc:
            self._failed(exc, encoding)

    def _failed(self, exc: BaseException, encoding: int) -> None:
        """A handler raised ``exc``: StopPropagation is no error; anything else is ERR_INTERNAL."""
        if isinstance(exc, StopPropagation):
            return
        if isinstance(exc, ApiError):  # the application's own error reply
            self._send_error(exc.code, exc.detail, encoding)
            return
        if isinstance(exc, _HandlerTimedOut):
            self._handler_timed_out(encoding)
            return
        assert self.session is not None
        if isinstance(exc, asyncio.CancelledError):
            logger.info("(%s) A handler was cancelled", self.session.id)
            return
        if isinstance(exc, EncodeError):  # a reply its encoding cannot carry: the reason says it all
            logger.error("(%s) A reply could not be sent: %s", self.session.id, clean(exc))
        else:
            logger.error("(%s) A handler raised while handling a packet", self.session.id, exc_info=exc)
        self._send_error(ERR_INTERNAL, _INTERNAL_DETAIL, encoding)

    async def _dispatch_bounded(self, client: Client, packet: Packet[Any], timeout: float) -> Any:
        """``plan.dispatch`` in a task cancelled after ``timeout`` (a handler's own TimeoutError stays ERR_INTERNAL)."""
        task = self._loop.create_task(self._ctx.plan.dispatch(client, packet))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=HANDLER_CANCEL_GRACE)
            task.add_done_callback(_ignore_result)
            raise _HandlerTimedOut
        return task.result()

    def _handler_timed_out(self, encoding: int) -> None:
        """The connection stays open: its framing is intact and the hung handler is cancelled."""
        assert self.session is not None
        timeout = self._ctx.handler_timeout
        logger.warning("(%s) A handler ran past handler_timeout (%s s) and was cancelled", self.session.id, timeout)
        self._send_error(ERR_TIMED_OUT, f"the handler did not finish within {timeout} seconds", encoding)

    def _handle_frame_error(self, error: FrameError) -> None:
        self._send_error(error.code, error.detail, error.encoding)
        if error.fatal:
            self.close_after_error()

    def _send_error(self, code: str, detail: Any, encoding: int | None, errors: Any = None) -> None:
        if encoding is None:
            encoding = self._encoding_id if self._encoding_id is not None else self._ctx.default_encoding
        codec = CODECS[encoding]
        if self._ctx.debug:
            assert self.session is not None
            logger.debug("(%s) Replying %s: %s", self.session.id, code, clean(detail))  # maybe the client's text
        if not self._ctx.error_details:
            detail = errors = None
        try:
            self.write_payload(codec.encode(error_payload(code, detail, errors)), encoding)
        except (OverflowError, struct.error):  # the detail is too long for header_size: the bare error fits
            self.write_payload(codec.encode(error_payload(code)), encoding)
        except EncodeError as exc:  # an ApiError's detail the encoding cannot carry: the app's failure
            logger.error("(%s) A reply could not be sent: %s", self.session.id if self.session else "-", clean(exc))
            self.write_payload(codec.encode(error_payload(ERR_INTERNAL, _INTERNAL_DETAIL)), encoding)

    # -- helpers --------------------------------------------------------------

    def _refuse(self, code: str, detail: str) -> None:
        logger.info("Refused a connection from %s: %s", self.client.address if self.client else "?", code)
        self._send_error(code, detail, None)
        self.close()

    def _timed_out(self) -> None:
        """No complete packet within ``timeout`` (checked by ``_sweep``): answer and close."""
        timeout = self._ctx.timeout
        assert self.session is not None
        logger.info("(%s) Timed out after %s seconds without a complete packet", self.session.id, timeout)
        self._send_error(ERR_TIMED_OUT, f"no complete packet within {timeout} seconds", None)
        if self._write_paused:
            self.abort()  # the peer does not read: close() would wait forever to flush
        else:
            self.close_after_error()

    # -- flow control: bounded memory per connection --------------------------------

    def _start(self, events: Batch) -> None:
        """Handle ``events`` eagerly in the host task's name, then write their replies at once."""
        pending = self._pending
        if pending:  # left by a cancelled worker (shutdown): they go first
            pending.extend(events)
            events = list(pending)
            pending.clear()
        host = self._host
        if host is None:
            host = self._host = self._ctx.hosts.take(self._loop, self._uncork, self._cork)
        self._working = True
        self._corked = True
        loop = self._loop
        if running_task(loop) is not None:  # a task runs (a test's): no eager start
            self._hand_over(iter(events), self._work())
            return
        task = host.task
        enter_task(loop, task)
        try:
            host.context.run(self._work_eagerly, events)
        finally:
            leave_task(loop, task)
        self._corked = False
        out = self._out
        if out:  # as _flush(), reusing the list
            if not self.closing:
                self._transport.write(b"".join(out))  # type: ignore[union-attr]  # set before any data
            out.clear()
            self._out_size = 0

    async def _relieve(self) -> None:
        """Between packets while reading is held: wait for the peer to read, refill the queue."""
        if self._write_paused:
            await self.drain()
        pending = self._pending
        if _HOLD_QUEUE in self._holds and len(pending) <= self._max_pending // 2:
            pending.extend(self._pull_more())
            if len(pending) < self._max_pending:
                self._release_reading(_HOLD_QUEUE)

    def _pull_more(self) -> Batch:
        """Frames the decoder still holds: a read can bring more than the queue takes."""
        decoder = self._decoder
        if not decoder.in_frame:
            return []
        events = decoder.pull(self._max_pending - len(self._pending))
        if events:
            last = events[-1]
            if type(last) is FrameError and last.fatal:
                self._hold_reading(_HOLD_FATAL)
        return events

    def _hold_reading(self, reason: str) -> None:
        self._holds.add(reason)
        self._pause_reading()

    def _release_reading(self, reason: str) -> None:
        holds = self._holds
        holds.discard(reason)
        transport = self._transport
        if holds or self.closing or transport is None or transport.is_reading():
            return
        transport.resume_reading()
        self._mark = self._clock()  # time spent paused by us does not count against the peer

    def _pause_reading(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _log_packet(self, frame: RawFrame, encoding: str) -> None:
        assert self.session is not None
        logger.debug(
            "(%s) Packet of %d bytes, Content-Encoding is %s", self.session.id, len(frame[1]), encoding
        )


def _sweep(ctx: ServingContext, loop: asyncio.AbstractEventLoop) -> None:
    """Time out the connections that have had no complete packet for ``ctx.timeout`` seconds.

    One timer per server instead of one per connection: a connection costs no timer
    of its own to arm, re-arm and cancel (a heap push of Python comparisons each), and
    a timeout fires at most ``sweep_every`` late. A connection's clock runs from its
    last handled packet or from the first byte of a packet still incomplete; it is
    stopped while its packets are being handled.
    """
    ctx.sweeper = None
    if not ctx.connections:
        return  # the next connection starts the sweeps again
    deadline = _clock_of(loop)() - ctx.timeout
    for conn in [c for c in ctx.connections if c._mark <= deadline and not c._working and not c.closing]:
        conn._timed_out()
    ctx.sweeper = loop.call_later(ctx.sweep_every, _sweep, ctx, loop)


def _let_departed_go(ctx: ServingContext, address: str) -> bool:
    """Before refusing ``address`` a session: free the sessions whose peer already left (see ``liveness``).

    Only idle connections are let go (a running handler still owns its session);
    they are closed now rather than when their EOF is read. True if any was freed.
    """
    freed = False
    for conn in ctx.sessions.owners_of(address):  # at most session_limit of them
        if isinstance(conn, Connection) and not conn._working and conn._transport is not None and peer_left(conn._transport):
            conn._registered = False
            ctx.sessions.close(conn.session)  # type: ignore[arg-type]  # set with the client
            ctx.connections.discard(conn)
            conn.close()
            freed = True
    return freed


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or the ``time.monotonic`` it calls when that is all it does (one call less)."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """Retrieve a cancelled handler's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _kind(value: object) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
