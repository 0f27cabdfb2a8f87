"""The v2 client core back to back with the server side's decoder: Stream-Ids, matching,
pushes, deadlines, CANCEL, and the fallback to v1 (AsyncAPY's own error reply included)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from asyncapy import Client, Packet
from asyncapy.client.clientmux import (
    MAX_PUSHED,
    ConnectionFailure,
    End,
    FellBack,
    Item,
    MuxCore,
    MuxEvent,
    Pushed,
    Reply,
    deadline_ms,
    is_header_invalid,
    propagated_timeout,
)
from asyncapy.wire.codecs import get_codec
from asyncapy.wire.errors import ClientTimeout, HeaderInvalid, PayloadTooLarge, ProtocolError
from asyncapy.wire.protocol import (
    CANCEL,
    MAX_DEADLINE_MS,
    MAX_STREAM_ID,
    REQUEST,
    SENT_BY_CLIENT,
    Frame,
    FrameDecoder,
    FrameError,
    V2Frame,
    encode_end,
    encode_frame,
    encode_item,
    encode_push,
    encode_reply,
)

from ..conftest import make_server, running

#: What AsyncAPY 0.5.0 (``asyncapy/server.py``, ``_invalid_header``) writes for a packet
#: whose Protocol-Version is not 22: ``json.dumps`` of the bare error (its default
#: separators), framed with the default header; then it closes the connection.
ASYNCAPY_HEADER_INVALID = b'\x00\x00\x006\x16\x00{"status": "failure", "error": "ERR_HEADER_INVALID"}'


class ServerSide:
    """The server's half without I/O: its decoder reads what the client core wrote."""

    def __init__(self, header_size: int = 4) -> None:
        self.decoder = FrameDecoder(header_size, "big", kinds=SENT_BY_CLIENT)
        self.v1 = FrameDecoder(header_size, "big")

    def read(self, data: bytes, version: int = 23) -> list[Any]:
        decoder = self.decoder if version == 23 else self.v1
        events: list[Any] = []
        for raw in decoder.receive(data, 1000):
            assert not isinstance(raw, FrameError), raw
            events.append(V2Frame(*raw) if len(raw) == 5 else Frame(*raw))
        return events


def requests(server: ServerSide, core: MuxCore) -> list[V2Frame]:
    frames = server.read(core.data_to_send())
    assert all(isinstance(f, V2Frame) and f.kind == REQUEST for f in frames)
    return frames


def json_of(frame: Frame | V2Frame) -> Any:
    return json.loads(frame.payload)


def reply(stream_id: int, obj: Any) -> bytes:
    return encode_reply(stream_id, get_codec("json").encode(obj), 0)


def started_v2(**kwargs: Any) -> tuple[MuxCore, ServerSide]:
    """A core whose server answered its first request in v2 (the version is known)."""
    core, server = MuxCore(**kwargs), ServerSide()
    sid = core.send_request({"hello": 1})
    assert [f.stream_id for f in requests(server, core)] == [sid]
    assert core.receive_data(reply(sid, {"hi": 1})) == [Reply(sid, Frame(0, b'{"hi":1}'))]
    assert core.version == 23
    return core, server


# -- Stream-Ids -------------------------------------------------------------------------------


def test_stream_ids_are_non_zero_and_distinct() -> None:
    core, server = started_v2()
    ids = [core.send_request({"n": n}) for n in range(5)]
    assert ids == [2, 3, 4, 5, 6]
    assert [f.stream_id for f in requests(server, core)] == ids


def test_stream_ids_wrap_to_one_and_skip_those_in_flight() -> None:
    core, server = started_v2(first_stream_id=MAX_STREAM_ID - 1)  # the probe took MAX - 1
    first = core.send_request({"n": 0})
    assert first == MAX_STREAM_ID
    core.receive_data(reply(MAX_STREAM_ID, {}))  # answered: MAX is free again, but the counter moved on
    kept = core.send_request({"n": 1})
    assert kept == 1  # wrapped past 0
    core.send_request({"n": 2})  # 2
    core.receive_data(reply(2, {}))
    # Drive the counter round: ids 3.. up to MAX are taken and freed, 1 stays in flight.
    core._next_id = MAX_STREAM_ID  # noqa: SLF001 - the wrap, without 2**32 requests
    assert core.send_request({"n": 3}) == MAX_STREAM_ID
    assert core.send_request({"n": 4}) == 2  # 1 is still in flight: skipped
    assert [f.stream_id for f in requests(server, core)] == [MAX_STREAM_ID, 1, 2, MAX_STREAM_ID, 2]


def test_a_cancelled_request_keeps_its_id_until_its_terminal_frame() -> None:
    core, server = started_v2()
    sid = core.send_request({"slow": 1})
    requests(server, core)
    assert core.cancel(sid)
    [cancel] = server.read(core.data_to_send())
    assert (cancel.kind, cancel.stream_id, cancel.payload) == (CANCEL, sid, b"")
    core._next_id = sid  # noqa: SLF001 - ask for that very id next
    assert core.send_request({"next": 1}) == sid + 1
    err = {"status": "failure", "error": "ERR_CANCELLED"}
    assert core.receive_data(reply(sid, err)) == []  # the caller is gone: dropped
    core._next_id = sid  # noqa: SLF001
    assert core.send_request({"again": 1}) == sid  # free once its terminal frame came


# -- matching ---------------------------------------------------------------------------------


def test_replies_out_of_order_reach_their_requests() -> None:
    core, server = started_v2()
    ids = [core.send_request({"n": n}) for n in range(3)]
    frames = requests(server, core)
    assert [json_of(f) for f in frames] == [{"n": 0}, {"n": 1}, {"n": 2}]
    wire = b"".join(reply(f.stream_id, {"echo": json_of(f)["n"]}) for f in reversed(frames))
    events = []
    for byte in wire:  # one byte at a time
        events += core.receive_data(bytes([byte]))
    assert [(e.stream_id, core.decode(e.frame)) for e in events if isinstance(e, Reply)] == [
        (ids[2], {"echo": 2}),
        (ids[1], {"echo": 1}),
        (ids[0], {"echo": 0}),
    ]
    assert core.in_flight() == []


def test_items_end_and_errors_on_stream_zero() -> None:
    core, _ = started_v2()
    sid = core.send_request({"watch": "ACME"})
    core.data_to_send()
    wire = (
        encode_item(sid, b'{"p":1}', 0)
        + encode_item(sid, b'{"p":2}', 0)
        + encode_end(sid)
        + encode_reply(0, b'{"status":"failure","error":"ERR_STREAM_ID_IN_USE","detail":"9"}', 0)
    )
    assert core.receive_data(wire) == [
        Item(sid, Frame(0, b'{"p":1}')),
        Item(sid, Frame(0, b'{"p":2}')),
        End(sid, None),
        ConnectionFailure(Frame(0, b'{"status":"failure","error":"ERR_STREAM_ID_IN_USE","detail":"9"}')),
    ]
    sid = core.send_request({"watch": "X"})
    failed = b'{"status":"failure","error":"ERR_INTERNAL"}'
    assert core.receive_data(encode_end(sid, failed, 0)) == [End(sid, Frame(0, failed))]


def test_frames_for_unknown_stream_ids_are_counted_and_ignored() -> None:
    core, _ = started_v2()
    assert core.receive_data(reply(77, {}) + encode_item(78, b"{}", 0)) == []
    assert core.unmatched == 2


def test_pushes_go_to_the_pushed_queue_and_it_is_bounded() -> None:
    core, _ = started_v2()
    assert core.receive_data(encode_push(b'{"news":1}', 0)) == [Pushed(Frame(0, b'{"news":1}'))]
    assert list(core.pushed) == [Frame(0, b'{"news":1}')]
    core.receive_data(encode_push(b"{}", 0) * MAX_PUSHED)
    assert len(core.pushed) == MAX_PUSHED and core.pushed_dropped == 1
    assert core.pushed[0] == Frame(0, b"{}")


def test_a_v1_packet_on_a_v2_connection_is_a_protocol_error() -> None:
    core, _ = started_v2()
    with pytest.raises(HeaderInvalid, match="Protocol-Version 22 on a connection that speaks 23"):
        core.receive_data(encode_frame(b"{}", 0))


def test_a_too_large_frame_from_the_server_is_refused() -> None:
    core = MuxCore(max_packet_size=100)
    with pytest.raises(PayloadTooLarge):
        core.receive_data((101).to_bytes(4, "big"))


# -- deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "ms"),
    [(None, 0), (1.5, 1500), (0.0001, 1), (0.0015, 2), (30, 30_000), (1e9, MAX_DEADLINE_MS)],
)
def test_timeout_becomes_deadline_ms(timeout: float | None, ms: int) -> None:
    assert deadline_ms(timeout) == ms
    core, server = started_v2()
    core.send_request({"t": 1}, timeout=timeout)
    [frame] = requests(server, core)
    assert frame.deadline_ms == ms


@pytest.mark.parametrize("bad", [0, -1, math.nan])
def test_a_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        deadline_ms(bad)


def test_the_remaining_deadline_of_the_request_being_handled_is_propagated() -> None:
    assert propagated_timeout(10.0, None, 100.0) == 10.0  # no deadline to propagate
    assert propagated_timeout(None, None, 100.0) is None
    assert propagated_timeout(10.0, 102.5, 100.0) == 2.5  # the caller gives up first
    assert propagated_timeout(1.0, 102.5, 100.0) == 1.0  # this client gives up first
    assert propagated_timeout(None, 100.25, 100.0) == 0.25
    assert deadline_ms(propagated_timeout(60, 100.25, 100.0)) == 250
    with pytest.raises(ClientTimeout, match="passed before this request was sent"):
        propagated_timeout(10.0, 99.0, 100.0)


# -- the version: probe, v2, fallback to v1 -------------------------------------------------


def test_only_the_first_request_goes_out_before_the_server_answered() -> None:
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0})
    second = core.send_request({"n": 1})
    third = core.send_request({"n": 2})
    assert [f.stream_id for f in requests(server, core)] == [first]
    assert core.data_to_send() == b""
    assert core.receive_data(reply(first, {"ok": 0})) == [Reply(first, Frame(0, b'{"ok":0}'))]
    assert [f.stream_id for f in requests(server, core)] == [second, third]


def test_cancelling_the_probe_waits_for_the_version_before_cancel() -> None:
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0})
    second = core.send_request({"n": 1})
    requests(server, core)
    assert core.cancel(first)
    assert core.data_to_send() == b""  # a v1-only server would take a CANCEL for a request
    assert core.receive_data(encode_push(b"{}", 0)) == [Pushed(Frame(0, b"{}"))]  # v2: now it can go
    sent = server.read(core.data_to_send())
    assert [(f.kind, f.stream_id) for f in sent] == [(CANCEL, first), (REQUEST, second)]


def test_a_request_not_sent_yet_is_forgotten_when_cancelled() -> None:
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0})
    second = core.send_request({"n": 1})
    requests(server, core)
    assert core.cancel(second)
    core.receive_data(reply(first, {}))
    assert core.data_to_send() == b""  # no REQUEST, no CANCEL
    assert core.detach_unsent() == []


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(ASYNCAPY_HEADER_INVALID, id="AsyncAPY-0.5"),
        pytest.param(encode_frame(b'{"status":"failure","error":"ERR_HEADER_INVALID"}', 0), id="asyncapy-error_details-false"),
        pytest.param(
            encode_frame(b'{"status":"failure","error":"ERR_HEADER_INVALID","detail":"unknown Protocol-Version 23 (expected 22)"}', 0),
            id="asyncapy-v1",
        ),
        pytest.param(encode_frame(get_codec("ziproto").encode({"status": "failure", "error": "ERR_HEADER_INVALID"}), 1), id="ziproto"),
    ],
)
def test_a_v1_header_invalid_answer_falls_back_to_v1(answer: bytes) -> None:
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0}, timeout=5)
    second = core.send_request({"n": 1})
    requests(server, core)
    events: list[MuxEvent] = []
    for byte in answer:
        events += core.receive_data(bytes([byte]))
    assert events == [FellBack(first)] and core.version == 22
    # The same request again, now as a v1 packet; the next one waits for its answer.
    assert server.read(core.data_to_send(), version=22) == [Frame(0, b'{"n":0}')]
    assert core.receive_data(encode_frame(b'{"ok":0}', 0)) == [Reply(first, Frame(0, b'{"ok":0}'))]
    assert server.read(core.data_to_send(), version=22) == [Frame(0, b'{"n":1}')]
    assert core.in_flight() == [second]
    assert core.receive_data(encode_frame(b'{"ok":1}', 0)) == [Reply(second, Frame(0, b'{"ok":1}'))]
    # On v1 a packet nobody asked for is a push; nothing can cancel a request the server has.
    assert core.receive_data(encode_frame(b'{"news":1}', 0)) == [Pushed(Frame(0, b'{"news":1}'))]
    third = core.send_request({"n": 2})
    core.data_to_send()
    assert core.cancel(third) is False  # the connection is out of step: the shell drops it


def test_another_v1_answer_to_the_probe_is_its_reply() -> None:
    """A v1 server refusing the connection (ERR_SERVER_BUSY) answers the probe; no fallback."""
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0})
    second = core.send_request({"n": 1})
    requests(server, core)
    busy = encode_frame(b'{"status":"failure","error":"ERR_SERVER_BUSY"}', 0)
    assert core.receive_data(busy) == [Reply(first, Frame(0, busy[6:]))]
    assert core.version == 22
    core.receive_data(b"")  # the server closes: the second request never went out
    assert core.eof and core.in_flight() == []
    [pending] = core.detach_unsent()
    assert (pending.stream_id, pending.payload) == (second, b'{"n":1}')
    assert core.data_to_send() == b""


def test_a_request_that_never_went_out_moves_to_another_connection() -> None:
    core, server = MuxCore(), ServerSide()
    core.send_request({"n": 0}, timeout=2)
    core.send_request({"n": 1}, timeout=3)
    requests(server, core)
    core.receive_data(b"")
    [pending] = core.detach_unsent()
    assert get_codec("json").decode(pending.payload) == {"n": 1} and pending.deadline_ms == 3000
    assert core.in_flight() == [1]
    fresh, server = MuxCore(protocol=1), ServerSide()
    sid = fresh.resend(pending)
    assert server.read(fresh.data_to_send(), version=22) == [Frame(0, b'{"n":1}')]
    assert fresh.receive_data(encode_frame(b"{}", 0)) == [Reply(sid, Frame(0, b"{}"))]


def test_protocol_one_speaks_v1_from_the_start() -> None:
    core, server = MuxCore(protocol=1, header_size=2), ServerSide(header_size=2)
    core.send_request({"n": 0})
    core.send_request({"n": 1})
    assert core.version == 22
    assert server.read(core.data_to_send(), version=22) == [Frame(0, b'{"n":0}')]  # one at a time
    with pytest.raises(ValueError, match="protocol must be 1 or 2"):
        MuxCore(protocol=3)


def test_header_invalid_is_recognised_whatever_its_details() -> None:
    assert is_header_invalid(Frame(0, ASYNCAPY_HEADER_INVALID[6:]))
    assert not is_header_invalid(Frame(0, b'{"status":"failure","error":"ERR_NO_HANDLER"}'))
    assert not is_header_invalid(Frame(0, b"not json"))
    assert not is_header_invalid(Frame(0, b"[1, 2]"))
    assert not is_header_invalid(Frame(7, b"{}"))


# -- over a real socket, against this server as it is today (v1 only) ----------------------


async def test_this_server_answers_the_probe_in_v2_without_a_fallback() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            core = MuxCore()
            first = core.send_request({"n": 0}, timeout=5)
            second = core.send_request({"n": 1})
            replies: dict[int, Any] = {}
            fell_back: list[int] = []
            for _ in range(10):  # bounded: probe, fallback, two answers
                writer.write(core.data_to_send())
                data = await asyncio.wait_for(reader.read(65536), 10)
                assert data, "the server closed the connection"
                for event in core.receive_data(data):
                    if isinstance(event, FellBack):
                        fell_back.append(event.stream_id)
                    elif isinstance(event, Reply):
                        replies[event.stream_id] = core.decode(event.frame)
                if len(replies) == 2:
                    break
            assert fell_back == [] and core.version == 23  # the server speaks v2 (the fallback: ServerSide tests)
            assert replies == {first: {"n": 0}, second: {"n": 1}}
        finally:
            writer.close()
            await writer.wait_closed()


def test_a_probe_cancelled_before_it_was_written_hands_the_probe_to_the_next() -> None:
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0})
    second = core.send_request({"n": 1})
    assert core.cancel(first)  # its frame was queued, never handed out: forgotten
    assert [f.stream_id for f in requests(server, core)] == [second]  # the next probes instead
    assert core.receive_data(reply(second, {})) == [Reply(second, Frame(0, b"{}"))]


def test_a_v1_request_cancelled_before_it_was_written_lets_the_next_go() -> None:
    core, server = MuxCore(protocol=1), ServerSide()
    first = core.send_request({"n": 0})
    second = core.send_request({"n": 1})
    assert core.cancel(first)  # never written: the connection stays in step
    assert server.read(core.data_to_send(), version=22) == [Frame(0, b'{"n":1}')]
    assert core.receive_data(encode_frame(b"{}", 0)) == [Reply(second, Frame(0, b"{}"))]


def test_what_was_queued_but_never_handed_out_moves_in_order() -> None:
    core = MuxCore(protocol=1)
    ids = [core.send_request({"n": n}) for n in range(3)]
    core.receive_data(b"")
    assert [p.stream_id for p in core.detach_unsent()] == ids and core.in_flight() == []


def test_a_request_cancelled_after_the_fallback_before_it_went_out_again_frees_the_turn() -> None:
    core, server = MuxCore(), ServerSide()
    first = core.send_request({"n": 0})
    requests(server, core)
    assert core.receive_data(ASYNCAPY_HEADER_INVALID) == [FellBack(first)]
    assert core.cancel(first)  # its v1 frame was not handed out yet: forgotten, in step
    assert core.data_to_send() == b""
    second = core.send_request({"n": 1})
    assert server.read(core.data_to_send(), version=22) == [Frame(0, b'{"n":1}')]
    assert core.receive_data(encode_frame(b"{}", 0)) == [Reply(second, Frame(0, b"{}"))]


# -- streamed answers (ITEMs then END, DESIGN §9) ----------------------------------------------


def test_a_streams_items_wait_in_order_then_its_end() -> None:
    core, server = started_v2()
    sid = core.open_stream({"watch": "ACME"})
    assert [f.stream_id for f in requests(server, core)] == [sid]
    assert core.next_in_stream(sid) is None  # nothing yet: read more
    core.receive_data(encode_item(sid, b'{"p":1}', 0) + encode_item(sid, b'{"p":2}', 0))
    assert core.next_in_stream(sid) == Item(sid, Frame(0, b'{"p":1}'))
    core.receive_data(encode_end(sid))
    assert core.next_in_stream(sid) == Item(sid, Frame(0, b'{"p":2}'))
    assert core.next_in_stream(sid) == End(sid, None)
    with pytest.raises(KeyError):  # its end was taken: forgotten
        core.next_in_stream(sid)
    assert core.in_flight() == []


def test_an_end_with_an_error_or_a_reply_ends_a_stream() -> None:
    core, _ = started_v2()
    failed = b'{"status":"failure","error":"ERR_MARKET_CLOSED"}'
    first, second = core.open_stream({"n": 1}), core.open_stream({"n": 2})
    core.data_to_send()
    core.receive_data(encode_item(first, b'{"p":1}', 0) + encode_end(first, failed, 0) + reply(second, {"one": 1}))
    assert core.next_in_stream(first) == Item(first, Frame(0, b'{"p":1}'))
    assert core.next_in_stream(first) == End(first, Frame(0, failed))
    assert core.next_in_stream(second) == Reply(second, Frame(0, b'{"one":1}'))


def test_streams_interleave_by_stream_id() -> None:
    core, _ = started_v2()
    a, b = core.open_stream({"n": "a"}), core.open_stream({"n": "b"})
    core.data_to_send()
    core.receive_data(
        encode_item(b, b'{"b":1}', 0) + encode_item(a, b'{"a":1}', 0) + encode_end(b) + encode_item(a, b'{"a":2}', 0)
    )
    assert [core.next_in_stream(a), core.next_in_stream(a), core.next_in_stream(a)] == [
        Item(a, Frame(0, b'{"a":1}')), Item(a, Frame(0, b'{"a":2}')), None,
    ]  # fmt: skip
    assert [core.next_in_stream(b), core.next_in_stream(b)] == [Item(b, Frame(0, b'{"b":1}')), End(b, None)]


def test_a_stream_that_holds_too_many_items_pauses_reading_until_some_are_taken() -> None:
    from asyncapy.client.clientmux import MAX_STREAM_ITEMS

    core, _ = started_v2()
    sid = core.open_stream({"n": 1})
    core.data_to_send()
    core.receive_data(b"".join(encode_item(sid, b"{}", 0) for _ in range(MAX_STREAM_ITEMS - 1)))
    assert not core.reading_paused
    core.receive_data(encode_item(sid, b"{}", 0))
    assert core.reading_paused
    assert isinstance(core.next_in_stream(sid), Item)
    assert not core.reading_paused


def test_closing_a_running_stream_cancels_it_and_drops_its_items() -> None:
    core, server = started_v2()
    sid = core.open_stream({"n": 1})
    requests(server, core)
    core.receive_data(encode_item(sid, b'{"p":1}', 0))
    assert core.close_stream(sid) is True
    [cancel] = server.read(core.data_to_send())
    assert (cancel.kind, cancel.stream_id) == (CANCEL, sid)
    # Items still in flight are dropped; the terminal frame frees the Stream-Id.
    assert core.receive_data(encode_item(sid, b'{"p":2}', 0) + encode_end(sid, b'{"status":"failure","error":"ERR_CANCELLED"}', 0)) == []
    assert core.in_flight() == [] and not core.reading_paused


def test_closing_a_stream_that_ended_sends_nothing() -> None:
    core, _ = started_v2()
    sid = core.open_stream({"n": 1})
    core.data_to_send()
    core.receive_data(encode_item(sid, b"{}", 0) + encode_end(sid))
    assert core.close_stream(sid) is True
    assert core.data_to_send() == b""


def test_a_stream_probe_answered_in_v1_is_refused_not_sent_again() -> None:
    core, server = MuxCore(), ServerSide()
    probe = core.open_stream({"watch": 1})
    waiting_stream = core.open_stream({"watch": 2})
    plain = core.send_request({"n": 1})
    requests(server, core)
    events = core.receive_data(encode_frame(b'{"status":"failure","error":"ERR_HEADER_INVALID"}', 0))
    assert FellBack(probe) in events and FellBack(waiting_stream) in events
    assert core.stream_refused(probe) and core.stream_refused(waiting_stream)
    # The plain request goes out in v1; the streams never do.
    assert server.read(core.data_to_send(), version=22) == [Frame(0, b'{"n":1}')]
    assert core.in_flight() == [plain]
    with pytest.raises(ProtocolError):  # v1 is known now: no stream can start
        core.open_stream({"watch": 3})
