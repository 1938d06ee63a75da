"""Prometheus metrics of `ovdet serve` (prometheus_client, one registry per app so that several
apps in one process, as in tests, do not share counters).

    ovdet_http_requests_total{route, status}            counter
    ovdet_http_request_duration_seconds{route, status}  histogram
    ovdet_batch_size{kind}                              histogram: images per model pass
    ovdet_batch_duration_seconds{kind}                  histogram: seconds per model pass
    ovdet_queue_depth                                   gauge: requests waiting for the model
    ovdet_model_ready                                   gauge: 1 once the model is loaded
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ovdet_http_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("ovdet_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ovdet_batch_size", "Images per model pass (detect: one image-tower pass "
                                    "for requests with any vocabularies)", ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("ovdet_batch_duration_seconds", "Seconds per model pass", ["kind"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("ovdet_queue_depth", "Requests waiting for the model", registry=r)
        self.ready = Gauge("ovdet_model_ready", "1 once the model is loaded and serving", registry=r)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
