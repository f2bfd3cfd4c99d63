"""Metrics: each server counts in its own registry; queue gauges are computed when scraped."""
from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.metrics import Metrics
from jangotw.model import RecipientStatus


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class MetricsTests(SynchronousTestCase):
    def test_registries_are_separate(self) -> None:
        """Two servers in one process never share a counter, and the global registry stays empty of ours."""
        first, second = Metrics(), Metrics()
        first.message_accepted()
        self.assertEqual(value(first, "jangotw_messages_accepted_total"), 1.0)
        self.assertEqual(value(second, "jangotw_messages_accepted_total"), 0.0)
        self.assertNotIn(b"jangotw_", generate_latest(REGISTRY))

    def test_sessions_open_and_total(self) -> None:
        metrics = Metrics()
        metrics.session_opened()
        metrics.session_opened()
        metrics.session_closed()
        self.assertEqual(value(metrics, "jangotw_smtp_sessions_open"), 1.0)
        self.assertEqual(value(metrics, "jangotw_smtp_sessions_total"), 2.0)

    def test_refusals_by_reason(self) -> None:
        metrics = Metrics()
        metrics.message_refused("5.7.1")
        metrics.message_refused("5.7.1")
        metrics.recipient_refused("5.7.1")
        metrics.auth_failed("LOGIN", "5.7.8")
        self.assertEqual(value(metrics, "jangotw_messages_refused_total", reason="5.7.1"), 2.0)
        self.assertEqual(value(metrics, "jangotw_recipients_refused_total", reason="5.7.1"), 1.0)
        self.assertEqual(value(metrics, "jangotw_auth_failures_total", mechanism="LOGIN", reason="5.7.8"), 1.0)

    def test_every_outcome_series_exists_from_the_start(self) -> None:
        """Dashboards and alerts see 0, not a missing series, before the first delivery."""
        metrics = Metrics()
        for status in RecipientStatus:
            self.assertEqual(value(metrics, "jangotw_deliveries_total", outcome=status.value), 0.0)
        for kind in ("open", "click", "unsubscribe"):
            self.assertEqual(value(metrics, "jangotw_tracking_events_total", kind=kind), 0.0)

    def test_latency_only_for_final_outcomes(self) -> None:
        """A deferral is not the end of a message's journey; delivered and failed are."""
        metrics = Metrics()
        metrics.recipient_outcome(RecipientStatus.DEFERRED, 1.0)
        metrics.recipient_outcome(RecipientStatus.SUPPRESSED, 1.0)
        metrics.recipient_outcome(RecipientStatus.DELIVERED, 0.2)
        metrics.recipient_outcome(RecipientStatus.FAILED, 7200.0)
        self.assertEqual(value(metrics, "jangotw_deliveries_total", outcome="deferred"), 1.0)
        self.assertEqual(value(metrics, "jangotw_delivery_latency_seconds_count"), 2.0)
        self.assertEqual(value(metrics, "jangotw_delivery_latency_seconds_bucket", le="0.25"), 1.0)
        self.assertEqual(value(metrics, "jangotw_delivery_latency_seconds_sum"), 7200.2)

    def test_queue_gauges_computed_at_scrape(self) -> None:
        clock = Clock()
        clock.advance(1000)
        queued = [990.0, 940.0]
        metrics = Metrics()
        metrics.watch_queue(lambda: iter(queued), clock)
        self.assertEqual(value(metrics, "jangotw_queue_messages"), 2.0)
        self.assertEqual(value(metrics, "jangotw_queue_oldest_age_seconds"), 60.0)
        clock.advance(40)
        queued.clear()
        self.assertEqual(value(metrics, "jangotw_queue_messages"), 0.0)
        self.assertEqual(value(metrics, "jangotw_queue_oldest_age_seconds"), 0.0)
