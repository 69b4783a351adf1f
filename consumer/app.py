"""Wire the service from its settings: the one place that builds real adapters.

Tests build the same graph with in-memory twins through the keyword arguments.
Besides the uploads loop, every replica runs the known-fakes side
(`consumer.known_fakes`): a reader of the bank topic into the bank the
detector matches against, and its share of the moderators' rulings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from consumer.broker import EventSink, KafkaEventSink, KafkaUploadSource, UploadSource
from consumer.cache import InMemoryVerdictCache, RedisVerdictCache, VerdictCache
from consumer.decisions import DecisionOutcome
from consumer.health import HealthServer
from consumer.known_fakes import KnownFakesRuntime, build_known_fakes
from consumer.media import FetchPolicy, MediaFetcher, UriFetcher
from consumer.metrics import Metrics
from consumer.processing import KnownFakesView, UploadProcessor
from consumer.service import RunState, Service
from consumer.settings import DetectorSettings, Settings
from detector.artifact import LoadedModel, load
from detector.bank import Bank
from detector.config import CpuInferenceConfig
from detector.derived import CalibrationSource, directory_calibration
from detector.hashing import hashing_fingerprint
from detector.isolation import ExtractFn, IsolatedExtractor, default_extract
from detector.pipeline import build_detector

log = structlog.get_logger("deepscreen")


@dataclass
class App:
    service: Service
    metrics: Metrics
    health: HealthServer | None
    known_fakes: KnownFakesRuntime


def fetch_policy(settings: Settings) -> FetchPolicy:
    return settings.media.fetch_policy()


def build_cache(settings: Settings, metrics: Metrics) -> VerdictCache:
    redis = settings.redis
    if not redis.url:
        log.info("cache_in_process", reason="DEEPSCREEN_REDIS__URL is empty")
        return InMemoryVerdictCache(
            max_entries=redis.memory_max_entries,
            verdict_ttl_s=redis.verdict_ttl_s,
            claim_ttl_s=redis.claim_ttl_s,
            metrics=metrics,
        )
    return RedisVerdictCache(
        redis.url,
        password=redis.password.get_secret_value() if redis.password else None,
        prefix=redis.key_prefix,
        verdict_ttl_s=redis.verdict_ttl_s,
        claim_ttl_s=redis.claim_ttl_s,
        socket_timeout_s=redis.socket_timeout_s,
        retry_after_s=redis.retry_after_s,
        metrics=metrics,
    )


def calibration_source(settings: DetectorSettings, loaded: LoadedModel) -> CalibrationSource | None:
    """Face clips of the operator's videos for an int8 form, read only if one must be made."""
    if settings.calibration_videos is None:
        return None
    return directory_calibration(
        settings.calibration_videos,
        loaded.metadata,
        max_clips=CpuInferenceConfig.calibration_clips,
    )


def build_app(
    settings: Settings,
    *,
    serve_http: bool = True,
    sink: EventSink | None = None,
    source: UploadSource | None = None,
    fetcher: MediaFetcher | None = None,
    cache: VerdictCache | None = None,
    extract: ExtractFn = default_extract,
    on_decision: Callable[[DecisionOutcome], None] | None = None,
) -> App:
    """The service and its HTTP endpoints, ready to `run()`; the model is loaded here.

    The bank reader and the decisions loop start here, on threads of their own.
    """
    metrics = Metrics()
    state = RunState()  # shared by the loop, the workers and the health checks
    detector_settings = settings.detector
    loaded = load(detector_settings.model_path, detector_settings.device)
    log.info(
        "model_loaded",
        name=loaded.info.name,
        version=loaded.info.version,
        sha256=loaded.info.sha256,
        trained=loaded.info.trained,
        device=str(loaded.device),
    )
    if not loaded.info.trained:
        log.warning("model_untrained", effect="scores mean nothing; for tests and demos only")
    detector_config = settings.detector_config()
    extractor = IsolatedExtractor(
        detector_config,
        workers=detector_settings.extraction_workers,
        memory_limit_mb=detector_settings.extraction_memory_mb,
        extract=extract,
        on_crash=metrics.decoder_crashes.inc,
    )
    bank = Bank(detector_config.known_fakes.rule)  # filled from the bank topic
    detector = build_detector(
        loaded,
        detector_config,
        batch_size=detector_settings.batch_size,
        batch_wait_s=detector_settings.batch_wait_ms / 1000,
        precision=detector_settings.precision,
        cpu=detector_settings.cpu_inference(),
        calibration=calibration_source(detector_settings, loaded),
        extractor=extractor,
        credentials=extractor,
        on_batch=metrics.batch_size.observe,
        known_fakes=bank,
    )
    log.info("model_backend", backend=detector.scorer.info.backend)
    cache = cache or build_cache(settings, metrics)
    sink = sink or KafkaEventSink(settings.kafka)
    fetcher = fetcher or UriFetcher(fetch_policy(settings))
    known_fakes = build_known_fakes(
        settings,
        bank=bank,
        cache=cache,
        fetcher=fetcher,
        hash_content=detector.hash_whole,
        sink=sink,
        on_outcome=on_decision,
    ).start()
    processor = UploadProcessor(
        settings,
        screen=detector.screen_timed,
        model_sha256=loaded.info.sha256,
        policy=detector_config.policy_fingerprint(),
        fetcher=fetcher,
        cache=cache,
        sink=sink,
        metrics=metrics,
        stopping=state,
        known_fakes=KnownFakesView(
            hashing=hashing_fingerprint(detector_config.known_fakes.hashing),
            refresh=detector.refresh,
            wait_caught_up=known_fakes.wait_bank,
            catch_up_wait_s=settings.known_fakes.catch_up_wait_s,
        ),
    )
    health: HealthServer | None = None
    closers: list[tuple[str, Callable[[], None]]] = [
        # Before the detector: a ruling being handled may be hashing in its decoders.
        ("known fakes", known_fakes.close),
        ("scorer, then decoders", detector.close),
        ("cache", cache.close),
    ]
    service = Service(
        settings,
        source=source or KafkaUploadSource(settings.kafka),
        sink=sink,
        processor=processor,
        metrics=metrics,
        state=state,
        closers=closers,
    )
    if serve_http:
        health = HealthServer(
            settings.http.host,
            settings.http.port,
            metrics,
            live=lambda: {
                "process": True,
                # Kafka drops a member that has not polled within this; so do we.
                "polling": state.alive(settings.kafka.max_poll_interval_ms / 1000),
                **known_fakes.live_checks(settings.kafka.max_poll_interval_ms / 1000),
            },
            ready=lambda: {
                "model_loaded": True,
                "consuming": state.ready,
                "broker_reachable": state.broker_reachable,
                "no_partition_blocked": state.blocked_partitions == 0,
                "no_partition_stuck": state.stuck_partitions == 0,
                "publishing": sink.publishing(),
                **known_fakes.ready_checks(),  # bank_caught_up, bank_reader_alive
            },
        ).start()
        closers.append(("http", health.close))
    return App(service, metrics, health, known_fakes)
