"""Prometheus metrics, one registry per application (so that tests can run several apps).

What is counted where: requests in the access middleware, webhook signature rejections in the
webhook guard, Twilio API calls in the gateway, quality alerts in the poller, and at scrape time
the pool connections in use and how long ago each background loop last succeeded. Jobs are
counted by the job runner (runs by outcome, failed attempts); their due, running, given-up
counts and lag are read from the database when /metrics or /status asks (commpro.jobs.job_stats).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


UNMATCHED = "unmatched"


def route_label(request: web.Request) -> str:
    """The route template a request matched, or "unmatched": never the raw path, which a
    client chooses, so that no request can add a series."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(request: web.Request) -> str:
    """The method, or "OTHER": aiohttp accepts any token as a method, so it is bounded too."""
    return request.method if request.method in _METHODS else "OTHER"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "commpro_http_request_duration_seconds", "HTTP requests by route and status, and their latency",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.signature_rejections = Counter(
            "commpro_webhook_signature_rejections", "Webhooks refused for a missing or wrong Twilio signature",
            ["route"], registry=self.registry)
        self.twilio = Histogram(
            "commpro_twilio_api_duration_seconds", "Twilio API calls by operation and outcome, and their latency",
            ["operation", "outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.quality_alerts = Counter(
            "commpro_quality_alerts", "Quality alerts raised, by kind", ["kind"], registry=self.registry)
        self.job_runs = Counter(
            "commpro_job_runs", "Job runs by kind and outcome (done, later, retry, gave_up, lease_lost)",
            ["kind", "outcome"], registry=self.registry)
        self.job_failures = Counter(
            "commpro_job_failures", "Job attempts that failed, by kind", ["kind"], registry=self.registry)
        self.jobs_due = Gauge("commpro_jobs_due", "Jobs due and not running, by kind", ["kind"],
                              registry=self.registry)
        self.jobs_running = Gauge("commpro_jobs_running", "Jobs running under a lease, by kind", ["kind"],
                                  registry=self.registry)
        self.jobs_failed = Gauge("commpro_jobs_failed", "Jobs given up and not yet purged, by kind", ["kind"],
                                 registry=self.registry)
        self.jobs_lag = Gauge("commpro_jobs_lag_seconds", "How long the oldest due job of each kind has waited",
                              ["kind"], registry=self.registry)
        self.batch_sizes = Histogram(
            "commpro_webhook_batch_size", "Webhooks applied together by one statement (commpro.batcher), by kind",
            ["batch"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_failures = Counter(
            "commpro_webhook_batch_failures", "Batches rolled back, whose items then ran alone, by kind",
            ["batch"], registry=self.registry)
        self.live = _Live()
        self.registry.register(self.live)
        # labels() validates and locks on every call; the series are bounded (method_label,
        # route_label, a status code), so each request's is looked up once and kept.
        self._request_series: dict[tuple[str, str, int], Histogram] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self.requests.labels(method, route, str(status))
        series.observe(seconds)

    def job_succeeded(self, name: str) -> None:
        self.live.last_success[name] = time.monotonic()

    def observe_jobs(self, figures: dict[str, dict[str, float]]) -> None:
        for kind, f in figures.items():
            self.jobs_due.labels(kind).set(f["due"])
            self.jobs_running.labels(kind).set(f["running"])
            self.jobs_failed.labels(kind).set(f["failed"])
            self.jobs_lag.labels(kind).set(f["lagSec"])


class _Live(Collector):
    """Figures read when scraped rather than kept up to date on the hot path."""

    def __init__(self) -> None:
        self.pool = None
        self.last_success: dict[str, float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use = GaugeMetricFamily("commpro_db_pool_connections_in_use", "Database connections checked out")
        if self.pool is not None:
            in_use.add_metric([], self.pool.get_size() - self.pool.get_idle_size())
        yield in_use
        lag = GaugeMetricFamily("commpro_background_lag_seconds",
                                "Seconds since each background loop last completed a round", labels=["task"])
        now = time.monotonic()
        for name, at in sorted(self.last_success.items()):
            lag.add_metric([name], now - at)
        yield lag
