"""Prometheus metrics (``Server(metrics_port=9100)``, the ``prometheus`` extra).

What ``/metrics`` shows (DESIGN §7), summed over the server's worker processes:

- ``asyncapy_packets_total{handler,outcome}``: packets handled, by the handler(s) that
  ran (``-``: none; ``a,b``: one per group) and the outcome (``OK`` or the error code sent)
- ``asyncapy_packet_duration_seconds{handler}``: histogram of the time from a packet's
  decoding to its last reply queued
- ``asyncapy_connections``: open connections (gauge)
- ``asyncapy_connections_refused_total{reason}``: ERR_SERVER_BUSY, ERR_SESSION_LIMIT_REACHED
- ``asyncapy_bytes_received_total``, ``asyncapy_bytes_sent_total``

Counting costs a few dict operations per packet on plain per-process counters
(``ProcessMetrics``), with no lock: prometheus-client is used only to render what a
scrape reads. With one process the scrape reads the live counters. With ``workers``
each worker writes a snapshot of its counters to a directory the parent made every
``SNAPSHOT_EVERY`` seconds (and when it stops), and the parent, which serves
``/metrics``, sums the snapshots: a scrape shows each worker as it was at most that
long ago. Counters of a worker that exited stay in the sums, as Prometheus expects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

logger = logging.getLogger("asyncapy")

#: Upper bounds of the duration histogram, in seconds: from 50 µs (a handler that does
#: not wait) to 10 s (one that waits on something slow).
BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: How often a worker writes its snapshot: a scrape of a multi-worker server is at most
#: this stale; writing a few hundred bytes this often costs nothing measurable.
SNAPSHOT_EVERY: Final = 0.5
#: The handler label of a packet no handler ran for (malformed, no handler matched).
NO_HANDLER: Final = "-"

_SUM = len(BUCKETS) + 1  # index of the sum in a histogram row; [0, len(BUCKETS)] are bucket counts


def check_installed() -> None:
    """Raise ValueError with the fix when prometheus-client is missing (at ``Server(...)``)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        from ..model.install import install_hint

        raise ValueError(f"metrics_port needs prometheus-client: {install_hint('prometheus')}") from None


class ProcessMetrics:
    """One process's counters: plain ints, lists and dicts, written by the event loop thread only.

    ``rows[handler, outcome]`` is one histogram row per pair: the count of packets per
    bucket (not cumulative; the last bucket is +Inf), then the sum of their seconds.
    The packet counters are the rows' counts: one dict lookup per packet counts both.
    """

    __slots__ = ("rows", "open_connections", "refused", "traffic")

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[float]] = {}
        #: How many connections are open: ``len`` of the serving context's set, read when scraped.
        self.open_connections: Callable[[], int] = _none_open
        self.refused: dict[str, int] = {}
        #: Bytes (received, sent) by the serving run's connections, read when scraped.
        self.traffic: Callable[[], tuple[int, int]] = _no_traffic

    def packet(self, handler: str, outcome: str, seconds: float) -> None:
        """Count one packet (``asyncapy.observe.Record.end`` does the same inline)."""
        row = self.rows.get((handler, outcome))
        if row is None:
            row = self.new_row(handler, outcome)
        row[bisect_left(BUCKETS, seconds)] += 1
        row[_SUM] += seconds

    def new_row(self, handler: str, outcome: str) -> list[float]:
        """The row of a (handler, outcome) pair seen for the first time."""
        row = self.rows[handler, outcome] = [0.0] * (_SUM + 1)
        return row

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy (each copy is one C call: safe to take from another thread)."""
        received, sent = self.traffic()
        return {
            "rows": [[h, o, list(row)] for (h, o), row in list(self.rows.items())],
            "connections": self.open_connections(),
            "refused": dict(self.refused),
            "bytes_received": received,
            "bytes_sent": sent,
        }


def _none_open() -> int:
    return 0


def _no_traffic() -> tuple[int, int]:
    return 0, 0


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots: ``packets[handler, outcome]``, ``durations[handler]``..."""
    total: dict[str, Any] = {
        "packets": {}, "durations": {}, "connections": 0, "refused": {}, "bytes_received": 0, "bytes_sent": 0,
    }  # fmt: skip
    for snap in snapshots:
        for handler, outcome, row in snap["rows"]:
            key = (handler, outcome)
            total["packets"][key] = total["packets"].get(key, 0) + int(sum(row[:_SUM]))
            into = total["durations"].setdefault(handler, [0.0] * len(row))
            for i, value in enumerate(row):
                into[i] += value
        for reason, count in snap["refused"].items():
            total["refused"][reason] = total["refused"].get(reason, 0) + count
        for name in ("connections", "bytes_received", "bytes_sent"):
            total[name] += snap[name]
    return total


class _Collector:
    """A prometheus-client collector over the summed snapshots of ``source()``."""

    def __init__(self, source: Any) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        total = merge(self._source())
        packets = CounterMetricFamily("asyncapy_packets", "Packets handled, by handler(s) and outcome code.", labels=["handler", "outcome"])
        for (handler, outcome), count in sorted(total["packets"].items()):
            packets.add_metric([handler, outcome], count)
        yield packets
        durations = HistogramMetricFamily(
            "asyncapy_packet_duration_seconds", "Time from a packet's decoding to its last reply queued.", labels=["handler"]
        )
        for handler, row in sorted(total["durations"].items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*map(_bound, BUCKETS), "+Inf"), row[:_SUM]):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([handler], buckets, row[_SUM])
        yield durations
        yield GaugeMetricFamily("asyncapy_connections", "Open connections.", value=total["connections"])
        refused = CounterMetricFamily("asyncapy_connections_refused", "Connections refused, by error code.", labels=["reason"])
        for reason, count in sorted(total["refused"].items()):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily("asyncapy_bytes_received", "Bytes read from clients.", value=total["bytes_received"])
        yield CounterMetricFamily("asyncapy_bytes_sent", "Bytes of replies queued for clients.", value=total["bytes_sent"])


def _bound(value: float) -> str:
    return repr(float(value))


class Exporter:
    """The ``/metrics`` HTTP endpoint (prometheus-client's server, in a daemon thread)."""

    def __init__(self, addr: str, port: int, source: Any) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(source))
        self._httpd, self._thread = start_http_server(port, addr, registry=registry)
        self.port: int = self._httpd.server_port
        logger.info("Metrics on http://%s:%d/metrics", addr, self.port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class SnapshotDir:
    """Where workers leave their snapshots and the parent reads them (one file per worker PID)."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="asyncapy-metrics-")

    def read(self) -> list[dict[str, Any]]:
        snapshots = []
        for name in os.listdir(self.path):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(self.path, name), encoding="utf-8") as file:
                        snapshots.append(json.load(file))
                except (OSError, ValueError):  # replaced or half-written meanwhile: next scrape
                    continue
        return snapshots

    def write(self, metrics: ProcessMetrics) -> None:
        final = os.path.join(self.path, f"{os.getpid()}.json")
        tmp = final + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(metrics.snapshot(), file)
        os.replace(tmp, final)  # a reader sees the old snapshot or the new one, never half

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Reporter:
    """A worker's side: write the snapshot every ``SNAPSHOT_EVERY`` seconds and when stopping."""

    def __init__(self, metrics: ProcessMetrics, directory: SnapshotDir, loop: asyncio.AbstractEventLoop) -> None:
        self._metrics, self._dir, self._loop = metrics, directory, loop
        self._timer: asyncio.TimerHandle | None = None
        self._tick()

    def _tick(self) -> None:
        self._write()
        self._timer = self._loop.call_later(SNAPSHOT_EVERY, self._tick)

    def _write(self) -> None:
        try:
            self._dir.write(self._metrics)
        except OSError as exc:
            logger.warning("Could not write the metrics snapshot: %s", exc)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write()


class ServingMetrics:
    """Metrics for one serving run of one process: counters, and either the endpoint or a reporter."""

    def __init__(self, addr: str, port: int, directory: SnapshotDir | None) -> None:
        self.counters = ProcessMetrics()
        self._exporter: Exporter | None = None
        self._reporter: Reporter | None = None
        if directory is None:
            self._exporter = Exporter(addr, port, lambda: [self.counters.snapshot()])
            self.port = self._exporter.port
        else:
            self._reporter = Reporter(self.counters, directory, asyncio.get_running_loop())
            self.port = port

    def close(self) -> None:
        if self._exporter is not None:
            self._exporter.close()
        if self._reporter is not None:
            self._reporter.close()

