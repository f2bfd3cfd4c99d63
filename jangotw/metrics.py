# -*- test-case-name: tests.test_metrics -*-
"""Prometheus metrics: one registry per server, counted where things happen.

The components that see an event count it on the one L{Metrics} they are
handed: the SMTP factory (sessions), the session (accepted and refused
messages, refused recipients, failed AUTH), the queue manager (recipient
outcomes, delivery latency) and the tracking server (opens, clicks,
unsubscribes). Queue size and age are read from the queue manager at scrape
time. The registry is the server's own, never prometheus-client's global one,
so two servers in one process (tests) never share a counter.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

from attrs import define, field
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.internet.interfaces import IReactorTime

from .model import RecipientStatus

__all__ = ["Metrics", "LATENCY_BUCKETS", "TRACKING_KINDS"]

#: Seconds from acceptance to a final outcome: sub-second direct delivery up to the 5-day queue lifetime.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                   86400.0, 432000.0)
TRACKING_KINDS = ("open", "click", "unsubscribe")
_FINAL = (RecipientStatus.DELIVERED, RecipientStatus.FAILED)


@define(eq=False)  # the registry keys collectors by identity
class _QueueCollector:
    """Queue size and the age of its oldest message, computed when Prometheus scrapes."""

    received_times: Callable[[], Iterable[float]]  # acceptance time of every queued message
    clock: IReactorTime

    def collect(self) -> Iterator[Metric]:
        times = list(self.received_times())
        oldest = self.clock.seconds() - min(times) if times else 0.0
        yield GaugeMetricFamily("jangotw_queue_messages", "Messages in the queue (spooled, not yet done).",
                                value=len(times))
        yield GaugeMetricFamily("jangotw_queue_oldest_age_seconds",
                                "Seconds since the oldest queued message was accepted (0 when empty).",
                                value=max(0.0, oldest))


@define
class Metrics:
    """Every metric jangotw exports, in C{registry}; one instance per server, injected."""

    registry: CollectorRegistry = field(factory=CollectorRegistry)
    _sessions_open: Gauge = field(init=False)
    _sessions: Counter = field(init=False)
    _connections_refused: Counter = field(init=False)
    _accepted: Counter = field(init=False)
    _refused: Counter = field(init=False)
    _recipients_refused: Counter = field(init=False)
    _auth_failures: Counter = field(init=False)
    _deliveries: Counter = field(init=False)
    _latency: Histogram = field(init=False)
    _tracking: Counter = field(init=False)

    def __attrs_post_init__(self) -> None:
        registry = self.registry
        self._sessions_open = Gauge("jangotw_smtp_sessions_open", "SMTP sessions open now.", registry=registry)
        self._sessions = Counter("jangotw_smtp_sessions", "SMTP sessions opened.", registry=registry)
        self._connections_refused = Counter("jangotw_smtp_connections_refused",
                                            "Connections refused at the connection limits (421 4.7.0).",
                                            registry=registry)
        self._accepted = Counter("jangotw_messages_accepted", "Messages accepted (250 at the end of DATA).",
                                 registry=registry)
        self._refused = Counter("jangotw_messages_refused",
                                "Messages refused at the end of DATA, by enhanced status code.",
                                ["reason"], registry=registry)
        self._recipients_refused = Counter("jangotw_recipients_refused",
                                           "RCPT commands refused by policy, by enhanced status code.",
                                           ["reason"], registry=registry)
        self._auth_failures = Counter("jangotw_auth_failures",
                                      "Failed SMTP AUTH attempts, by mechanism and enhanced status code "
                                      "(5.7.8 bad credentials, 4.7.0 throttled or directory unavailable).",
                                      ["mechanism", "reason"], registry=registry)
        self._deliveries = Counter("jangotw_deliveries",
                                   "Recipient outcomes: delivered, deferred (will retry), failed, suppressed.",
                                   ["outcome"], registry=registry)
        self._latency = Histogram("jangotw_delivery_latency_seconds",
                                  "Seconds from acceptance to a recipient's final outcome (delivered or failed).",
                                  buckets=LATENCY_BUCKETS, registry=registry)
        self._tracking = Counter("jangotw_tracking_events", "Tracking events recorded, by kind.",
                                 ["kind"], registry=registry)
        for status in RecipientStatus:  # every series exists from the start, at 0
            self._deliveries.labels(outcome=status.value)
        for kind in TRACKING_KINDS:
            self._tracking.labels(kind=kind)

    def watch_queue(self, received_times: Callable[[], Iterable[float]], clock: IReactorTime) -> None:
        """Export queue size and oldest age, from C{received_times()} at each scrape (call once)."""
        self.registry.register(_QueueCollector(received_times, clock))

    def session_opened(self) -> None:
        self._sessions.inc()
        self._sessions_open.inc()

    def session_closed(self) -> None:
        self._sessions_open.dec()

    def connection_refused(self) -> None:
        self._connections_refused.inc()

    def message_accepted(self) -> None:
        self._accepted.inc()

    def message_refused(self, enhanced: str) -> None:
        self._refused.labels(reason=enhanced).inc()

    def recipient_refused(self, enhanced: str) -> None:
        self._recipients_refused.labels(reason=enhanced).inc()

    def auth_failed(self, mechanism: str, enhanced: str) -> None:
        self._auth_failures.labels(mechanism=mechanism, reason=enhanced).inc()

    def recipient_outcome(self, status: RecipientStatus, since_accepted: float) -> None:
        """One recipient's result; a final one (delivered, failed) also records its latency."""
        self._deliveries.labels(outcome=status.value).inc()
        if status in _FINAL:
            self._latency.observe(max(0.0, since_accepted))

    def tracking_event(self, kind: str) -> None:
        self._tracking.labels(kind=kind).inc()
