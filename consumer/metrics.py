"""Prometheus metrics of the service, on a registry of its own.

A registry per service instance (not the global one) keeps tests that start
several services in one process from colliding, and is what `/metrics` serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.provenance import Provenance, ProvenanceState

PROCESSING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CREDENTIALS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.uploads = Counter("deepscreen_uploads_consumed", "Upload events consumed", registry=r)
        self.verdicts = Counter(
            "deepscreen_verdicts", "Verdicts published, by outcome", ["outcome"], registry=r
        )
        self.flags = Counter(
            "deepscreen_flags", "Flags published, by the signal that set the action", ["signal"],
            registry=r,
        )  # fmt: skip
        self.credentials = Counter(
            "deepscreen_credentials",
            "Content credentials read, by state (absent, valid, invalid, unreadable)",
            ["state"],
            registry=r,
        )
        self.credentials_errors = Counter(
            "deepscreen_credentials_errors",
            "Content credentials that could not be read, by reason",
            ["reason"],
            registry=r,
        )
        self.credentials_read = Histogram(
            "deepscreen_credentials_read_seconds",
            "Time to read and validate an upload's content credentials",
            buckets=CREDENTIALS_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "deepscreen_dead_letters", "Events dead-lettered, by reason", ["reason"], registry=r
        )
        self.retries = Counter(
            "deepscreen_fetch_retries", "Retried media fetches, by reason", ["reason"], registry=r
        )
        self.cache_hits = Counter("deepscreen_cache_hits", "Verdicts served from cache", registry=r)
        self.cache_misses = Counter("deepscreen_cache_misses", "Cache lookups missed", registry=r)
        self.cache_errors = Counter(
            "deepscreen_cache_errors", "Redis operations that failed or timed out", registry=r
        )
        self.cache_up = Gauge("deepscreen_cache_up", "1 while Redis answers", registry=r)
        self.cache_corrupt = Counter(
            "deepscreen_cache_corrupt_entries",
            "Cached verdicts that no longer parse: treated as misses and replaced",
            registry=r,
        )
        self.processing = Histogram(
            "deepscreen_processing_seconds",
            "Time from taking an upload to publishing its outcome",
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        self.clips = Counter(
            "deepscreen_clips_scored", "Face clips scored by the model", registry=r
        )
        self.batch_size = Histogram(
            "deepscreen_batch_clips", "Clips per model batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.in_flight = Gauge("deepscreen_in_flight", "Uploads being screened", registry=r)
        self.lag = Gauge(
            "deepscreen_consumer_lag",
            "Messages behind the end of each assigned partition",
            ["partition"],
            registry=r,
        )
        self.decoder_crashes = Counter(
            "deepscreen_decoder_crashes", "Decoder worker processes that died", registry=r
        )
        self.records_skipped = Counter(
            "deepscreen_records_skipped",
            "Offsets the Kafka client could not read, skipped past (each logged), by reason",
            ["reason"],
            registry=r,
        )
        self.unpublishable = Counter(
            "deepscreen_unpublishable_outcomes",
            "Uploads whose outcome and dead letter could not be published (left uncommitted)",
            registry=r,
        )
        self.stuck_partitions = Gauge(
            "deepscreen_stuck_partitions",
            "Assigned partitions whose commits wait on one upload for over kafka.stuck_after_s",
            registry=r,
        )
        self.blocked_partitions = Gauge(
            "deepscreen_blocked_partitions",
            "Assigned partitions whose commits are held behind an unpublishable offset",
            registry=r,
        )

    def observe_provenance(self, provenance: Provenance | None) -> None:
        """Count one read of content credentials (none on a cache hit: nothing was read)."""
        if provenance is None:
            return
        self.credentials.labels(provenance.state.value).inc()
        self.credentials_read.observe(provenance.read_ms / 1000)
        if provenance.state is ProvenanceState.UNREADABLE and provenance.reason is not None:
            self.credentials_errors.labels(provenance.reason.value).inc()
