"""Prometheus metrics of the hub, served at /metrics in the text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_in = Counter(
            "adshub_messages_in_total", "Inbound messages published, per channel", ["channel"], registry=registry
        )
        self.messages_out = Counter(
            "adshub_messages_out_total",
            "Outbound messages by delivery result",
            ["channel", "status"],
            registry=registry,
        )
        self.registration_latency = Histogram(
            "adshub_registration_latency_seconds",
            "From receiving a message to registering its request",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.delivery_failures = Counter(
            "adshub_delivery_failures_total", "Failed delivery attempts", ["channel", "kind"], registry=registry
        )
        self.manager_alerts = Counter(
            "adshub_manager_alerts_total",
            "Managers told of a broken clock while nobody was on shift",
            ["channel"],
            registry=registry,
        )
        self.clock_breaches = Counter(
            "adshub_clock_breaches_total", "Regulatory clocks that ran out", ["clock"], registry=registry
        )
        self.clock_warnings = Counter(
            "adshub_clock_warnings_total", "Warnings before a clock runs out", ["clock"], registry=registry
        )
        self.dead_letters = Counter(
            "adshub_dead_letters_total", "Messages moved to the dead-letter queue", ["source"], registry=registry
        )
        self.transient_retries = Counter(
            "adshub_transient_retries_total",
            "Messages returned to the queue after a transient failure",
            registry=registry,
        )
        self.duplicates = Counter(
            "adshub_duplicates_suppressed_total",
            "Messages seen again and not processed twice, per stage (router: inbound, delivery: replies)",
            ["stage"],
            registry=registry,
        )
        self.replies_resent = Counter(
            "adshub_replies_resent_total",
            "Replies published again for a redelivered message whose replies were not yet recorded as delivered",
            registry=registry,
        )
        self.queue_depth = Gauge("adshub_queue_depth", "Messages waiting in a queue", ["queue"], registry=registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS = Metrics(REGISTRY)
