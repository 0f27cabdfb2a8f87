"""The deployment of examples/deploy, for real: redis-server, two asyncapy instances, haproxy.

The client is bound to 127.0.0.2, so what the instances see through the balancer is
the client's address only if the PROXY header carried it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncapy.client import Client
from asyncapy.shared.state import SHARED_STATE_UNAVAILABLE
from examples.deploy.stack import MissingTool, Peer, Stack, find_tool, free_port, running_stack

from .procs import ROOT, server_process
from .services import redis_process

#: Packets sent on each connection while Redis is killed (bounded in count and time).
DURING_OUTAGE = 200
SESSION_LIMIT = 4
RATE = "5/minute"
UNAVAILABLE = {"status": "failure", "error": "ERR_INTERNAL", "detail": SHARED_STATE_UNAVAILABLE}
#: HAProxy probes each instance this often; a stopping instance drains for DRAIN seconds:
#: well over the two failed probes (``fall 2``) it takes to be taken out.
CHECK_INTER = "200ms"
DRAIN = 2.0
#: Bounds of the drain test: requests per client thread, and seconds of traffic in all.
DRAIN_REQUESTS = 3000
DRAIN_SECONDS = 30.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    try:
        find_tool("redis-server", "redis-server")
        find_tool("haproxy", "haproxy")
    except MissingTool as exc:
        pytest.fail(f"{exc} (scripts/system-packages.txt lists every such tool)", pytrace=False)
    with running_stack(tmp_path, session_limit=SESSION_LIMIT, rate=RATE, check_inter=CHECK_INTER, drain=DRAIN) as running:
        yield running


def _one_per_instance(stack: Stack) -> list[Peer]:
    """A connection to each instance (the balancer alternates, but its turn is not ours to know)."""
    found: dict[object, Peer] = {}
    for _ in range(10):
        peer = Peer(stack.front_port)
        instance = peer.request({"kind": "whoami"})["instance"]
        if instance in found:
            peer.close()
        else:
            found[instance] = peer
        if len(found) == 2:
            return list(found.values())
    raise AssertionError(f"ten connections never reached both instances: {list(found)}")


def test_the_handler_sees_the_client_on_both_instances(stack: Stack) -> None:
    replies = []
    for _ in range(4):
        with Peer(stack.front_port) as peer:
            replies.append(peer.request({"kind": "whoami"}))
    assert {r["address"] for r in replies} == {"127.0.0.2"}
    assert {r["instance"] for r in replies} == set(stack.app_ports)  # round robin: both served
    assert "New session started from 127.0.0.2" in stack.log("app1") + stack.log("app2")


def test_ip_filter_through_the_proxy(stack: Stack) -> None:
    with Peer(stack.front_port, local="127.0.0.2") as admin:
        assert admin.request({"kind": "admin", "op": "create_key"})["kind"] == "key"
    with Peer(stack.front_port, local="127.0.0.1") as outsider:
        reply = outsider.request({"kind": "admin", "op": "create_key"})
    assert reply["error"] == "ERR_NO_HANDLER" and "127.0.0.2/32" in reply["detail"]


def test_session_limit_across_both_instances(stack: Stack) -> None:
    peers = _one_per_instance(stack)  # one session on each instance
    peers += [Peer(stack.front_port) for _ in range(SESSION_LIMIT - 2)]
    try:
        for peer in peers:
            assert peer.request({"kind": "whoami"})["address"] == "127.0.0.2"
        for _ in range(2):  # whichever instance gets it
            with Peer(stack.front_port) as extra:
                reply = extra.request({"kind": "whoami"})
            assert reply["error"] == "ERR_SESSION_LIMIT_REACHED"
        with Peer(stack.front_port, local="127.0.0.1") as other:  # another address is not limited by it
            assert other.request({"kind": "whoami"})["address"] == "127.0.0.1"
        peers.pop().close()
        for _ in range(100):  # the closed session is forgotten in Redis right after the close
            with Peer(stack.front_port) as again:
                reply = again.request({"kind": "whoami"})
            if reply.get("kind") == "you":
                break
        assert reply.get("kind") == "you"
    finally:
        for peer in peers:
            peer.close()


def test_rate_limit_across_both_instances(stack: Stack) -> None:
    a, b = _one_per_instance(stack)
    with a, b:
        replies = [(a, b)[n % 2].request({"kind": "limited"}) for n in range(7)]
    assert [r.get("kind") for r in replies[:5]] == ["ok"] * 5
    assert {r["instance"] for r in replies[:5]} == set(stack.app_ports)
    assert [r["error"] for r in replies[5:]] == ["ERR_RATE_LIMITED"] * 2
    assert "retry in" in replies[5]["detail"]


def test_key_made_on_one_instance_works_on_the_other_until_revoked(stack: Stack) -> None:
    a, b = _one_per_instance(stack)
    with a, b:
        key = a.request({"kind": "admin", "op": "create_key"})["key"]
        assert a.request({"kind": "private", "api_key": key})["kind"] == "secret"
        assert b.request({"kind": "private", "api_key": key})["kind"] == "secret"
        assert b.request({"kind": "admin", "op": "revoke_key", "key": key})["revoked"] is True
        for peer in (a, b):
            assert peer.request({"kind": "private", "api_key": key})["error"] == "ERR_NO_HANDLER"


def test_killing_redis_loses_no_reply_that_did_not_need_it(stack: Stack) -> None:
    peers = _one_per_instance(stack)
    try:
        key = peers[0].request({"kind": "admin", "op": "create_key"})["key"]
        replies: list[list[dict[str, object]]] = [[], []]
        started = threading.Barrier(3)

        def hammer(n: int) -> None:
            started.wait()
            for _ in range(DURING_OUTAGE):
                replies[n].append(peers[n].request({"kind": "whoami"}))

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        started.wait()
        stack.kill_redis()  # while both connections are busy
        for thread in threads:
            thread.join(60)
        for got in replies:
            assert len(got) == DURING_OUTAGE and all(r.get("kind") == "you" for r in got)
        for peer in peers:  # what needs Redis says so; the connection stays open
            assert peer.request({"kind": "limited"}) == UNAVAILABLE
            assert peer.request({"kind": "private", "api_key": key}) == UNAVAILABLE
            assert peer.request({"kind": "whoami"})["kind"] == "you"
        with Peer(stack.front_port) as newcomer:  # admission to the shared session_limit needs it too
            assert newcomer.request({"kind": "whoami"}) == UNAVAILABLE
        stack.start_redis()  # back (empty)
        for peer in peers:
            assert peer.request({"kind": "limited"})["kind"] == "ok"
        with Peer(stack.front_port) as newcomer:
            assert newcomer.request({"kind": "whoami"})["kind"] == "you"
    finally:
        for peer in peers:
            peer.close()


def test_session_limit_across_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workers 2``: each worker would admit one session on its own; together they admit one."""
    with redis_process() as redis:
        port = free_port()
        monkeypatch.setenv("ASYNCAPY_REDIS_URL", redis.url)
        monkeypatch.setenv("ASYNCAPY_SESSION_LIMIT", "1")
        monkeypatch.setenv("ASYNCAPY_PROXY_PROTOCOL", "0")
        args = ["-m", "asyncapy", "run", "examples.deploy.app:server", "--port", str(port), "--workers", "2"]
        with server_process(args, port):
            workers = set()
            for _ in range(40):  # the kernel spreads connections over both workers
                with Peer(port, local="127.0.0.1") as peer:
                    workers.add(peer.request({"kind": "whoami"}).get("worker"))
                if len(workers - {None}) == 2:
                    break
            assert len(workers - {None}) == 2
            peers = [Peer(port, local="127.0.0.1") for _ in range(8)]
            try:
                replies = [peer.request({"kind": "whoami"}) for peer in peers]
            finally:
                for peer in peers:
                    peer.close()
            assert sum(1 for r in replies if r.get("kind") == "you") == 1
            assert all(r["error"] == "ERR_SESSION_LIMIT_REACHED" for r in replies if r.get("kind") != "you")


def test_haproxy_checks_the_health_packet(stack: Stack) -> None:
    """The probe bytes of haproxy.cfg are the health packet, and both instances answer them SERVING."""
    from asyncapy.serve.health import health_frame

    config = (ROOT / "examples" / "deploy" / "haproxy.cfg").read_text()
    assert f"tcp-check send-binary {health_frame().hex()}" in config
    serving = health_frame("SERVING")
    assert f"tcp-check expect min-recv {len(serving)} binary {serving.hex()}" in config
    for port in stack.app_ports:  # the probe through a PROXY header, as HAProxy sends it
        out = subprocess.run(
            [sys.executable, "-m", "asyncapy", "probe", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 1  # no PROXY header: the instance closes the connection unanswered
    assert "is DOWN" not in stack.log("haproxy")  # HAProxy's own probes pass
    with Peer(stack.front_port) as peer:
        assert peer.request({"kind": "whoami"})["kind"] == "you"


def test_a_stopping_instance_is_drained_without_a_lost_request(stack: Stack) -> None:
    """SIGTERM one instance under load: HAProxy sees NOT_SERVING and takes it out while it still
    serves; every request is answered, by one instance or the other; it exits 0."""
    stop = threading.Event()
    results: list[list[tuple[float, dict[str, object]]]] = [[] for _ in range(4)]
    failures: list[str] = []

    def one_per_connection(n: int) -> None:
        for _ in range(DRAIN_REQUESTS):
            if stop.is_set():
                return
            try:
                with Peer(stack.front_port) as peer:
                    results[n].append((time.monotonic(), peer.request({"kind": "whoami"})))
            except OSError as exc:
                failures.append(repr(exc))
            time.sleep(0.01)

    def persistent(n: int) -> None:
        """One client connection, requests 0.4 s apart: the stopping instance closes it while it is quiet."""
        with Client("127.0.0.1", stack.front_port, timeout=10) as client:
            for _ in range(DRAIN_REQUESTS):
                if stop.is_set():
                    return
                results[n].append((time.monotonic(), client.request({"kind": "whoami"})))
                time.sleep(0.4)

    threads = [threading.Thread(target=one_per_connection, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=persistent, args=(3,)))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # both instances serve
        app1 = stack.terminate("app1")
        stopping = time.monotonic()
        assert app1.wait(timeout=DRAIN_SECONDS) == 0
        ended = time.monotonic()
        time.sleep(1.0)  # and the other one goes on alone
    finally:
        stop.set()
        for thread in threads:
            thread.join(DRAIN_SECONDS)
    assert time.monotonic() - started < DRAIN_SECONDS * 2
    replies = [(when, reply) for got in results for when, reply in got]
    assert failures == [] and all(reply.get("kind") == "you" for _, reply in replies), (failures, replies[-5:])
    app1_port, app2_port = stack.app_ports
    served_by_app1 = [when for when, reply in replies if reply["instance"] == app1_port]
    assert any(when < stopping for when in served_by_app1)  # it served before it was told to stop
    assert all(when < ended for when in served_by_app1)
    assert sum(1 for when, reply in replies if when > ended and reply["instance"] == app2_port) > 10
    assert len(results[3]) >= 4  # the persistent client went on, reconnecting to the other instance
    log = stack.log("app1")
    assert "Draining: health probes answer NOT_SERVING" in log
    assert "asyncapy_instances/app1 is DOWN" in stack.log("haproxy")  # taken out by its probe, not by a refusal
    down_reason = [line for line in stack.log("haproxy").splitlines() if "app1 is DOWN" in line][0]
    assert "Layer7 invalid response" in down_reason, down_reason  # NOT_SERVING, while it still accepted
