"""The service's configuration: one frozen object, read once at start-up.

Every setting comes from the environment (`DEEPSCREEN_` prefix, `__` between
levels: `DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS`) or, for secrets, from files in
a mounted secrets directory (`DEEPSCREEN_SECRETS_DIR`, default
`/run/secrets/deepscreen`; one file per setting, named like the variable, e.g.
`DEEPSCREEN_KAFKA__SASL_PASSWORD`). These names are part of the product's
interface: the Helm chart and the README use them.

A default the settings share with the code they configure is written once,
there: the detector's limits, sampling and face defaults in `detector.config`,
the fetch's in `consumer.media.FetchPolicy`. The fields here take their defaults
from those, and `Settings.detector_config()` and `MediaSettings.fetch_policy()`
build those objects back from the settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from consumer.media import FetchPolicy
from detector.config import (
    PACKAGED_MODEL,
    ActionPolicy,
    BatchingConfig,
    CpuBackendChoice,
    CpuInferenceConfig,
    CredentialsConfig,
    DetectorConfig,
    FaceConfig,
    ImageLimits,
    IsolationConfig,
    KnownFakesConfig,
    MediaLimits,
    SamplingConfig,
)
from schemas.verdict import Action

DEFAULT_SECRETS_DIR = Path("/run/secrets/deepscreen")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "deepscreen"
    client_id: str = "deepscreen"
    uploads_topic: str = "media.uploads"
    flags_topic: str = "moderation.flags"
    verdicts_topic: str = Field(default="", description="empty: verdicts are not published")
    dlq_topic: str = "media.uploads.dlq"
    # Moderators' rulings come in on `decisions_topic` (read by the `{group_id}-decisions`
    # group; a malformed one goes to `dlq_topic`); the bank they build is `bank_topic`,
    # keyed by entry, which every replica reads whole at start, then tails.
    decisions_topic: str = "moderation.decisions"
    bank_topic: str = Field(default="deepscreen.bank", min_length=1)
    event_source: str = "urn:deepscreen"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    max_poll_records: int = Field(default=16, ge=1, le=1000)
    # Must exceed the worst-case time between polls; the loop polls continuously
    # (paused partitions included), so this only bites if the loop itself stalls.
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_in_flight: int = Field(default=8, ge=1, le=1024, description="videos screened at once")
    commit_interval_s: float = Field(default=1.0, gt=0)
    # A partition whose commits wait this long on one upload in flight is reported stuck
    # (/readyz, `deepscreen_stuck_partitions`): longer than fetching, its retries and
    # decoding can take together.
    stuck_after_s: float = Field(default=1800.0, gt=0)
    # The producer: how long a send waits for the broker's acknowledgement, how long
    # it waits to batch, and how often the client itself retries a failed request.
    producer_ack_timeout_s: float = Field(default=30.0, gt=0)
    # 25 ms, not 5: in a burst of cache hits the producer's thread sent about one request a
    # record and took a quarter of the service's CPU (profiled); a flag is 20 ms later at most.
    producer_linger_ms: int = Field(default=25, ge=0)
    # Bytes a partition's batch may hold before it is sent without waiting out the linger
    # (kafka-python's `batch_size`). Its 16 KiB default holds about six flags, so a burst
    # of cache hits sent a request every six records, not every linger.
    producer_batch_bytes: int = Field(default=256 * 1024, ge=1024)
    producer_retries: int = Field(default=5, ge=0)
    # An outcome the producer failed to publish is sent again after this backoff,
    # doubling up to the max, until the broker takes it or the service stops.
    publish_backoff_initial_s: float = Field(default=0.5, gt=0)
    publish_backoff_max_s: float = Field(default=30.0, gt=0)
    flush_timeout_s: float = Field(default=30.0, gt=0, description="producer flush before a commit")
    # The largest request the producer sends (kafka-python's `max_request_size`); a dead
    # letter is cut to fit it (`schemas.dead_letter`). Keep it within the broker's
    # `message.max.bytes` (Kafka's default is 1 MiB plus a little).
    producer_max_request_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    # A publish error the client marks as unable to succeed (not `retriable`) is tried
    # this often; then the outcome is dead-lettered as `publish_failed`.
    publish_max_attempts: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _batch_fits_a_request(self) -> KafkaSettings:
        if self.producer_batch_bytes > self.producer_max_request_bytes:
            raise ValueError("producer_batch_bytes must not exceed producer_max_request_bytes")
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError("SASL needs sasl_mechanism, sasl_username and sasl_password")
        return self


class RedisSettings(_Section):
    url: str = Field(default="", description="empty: no shared cache (in-process only)")
    password: SecretStr | None = None
    key_prefix: str = "deepscreen:v1"
    verdict_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    claim_ttl_s: int = Field(default=900, ge=10, description="a claim outlives one screening")
    claim_wait_s: float = Field(default=60.0, ge=0, description="wait for another replica")
    claim_poll_s: float = Field(default=0.25, gt=0, description="how often that wait looks")
    socket_timeout_s: float = Field(default=0.25, gt=0)
    retry_after_s: float = Field(default=5.0, gt=0, description="pause after Redis failed")
    memory_max_entries: int = Field(
        default=10_000, ge=1, description="no Redis URL: verdicts kept in process (LRU, TTL)"
    )


class MediaSettings(_Section):
    """The `FetchPolicy` (its defaults); `max_bytes` also bounds the detector's probe."""

    file_roots: tuple[Path, ...] = FetchPolicy.file_roots
    allowed_hosts: tuple[str, ...] = FetchPolicy.allowed_hosts
    allow_private_addresses: bool = FetchPolicy.allow_private_addresses
    allow_hard_links: bool = FetchPolicy.allow_hard_links
    max_bytes: int = Field(default=MediaLimits.max_bytes, ge=1)
    connect_timeout_s: float = Field(default=FetchPolicy.connect_timeout_s, gt=0)
    read_timeout_s: float = Field(default=FetchPolicy.read_timeout_s, gt=0)
    total_timeout_s: float = Field(default=FetchPolicy.total_timeout_s, gt=0)
    max_redirects: int = Field(default=FetchPolicy.max_redirects, ge=0, le=10)
    temp_dir: Path | None = FetchPolicy.temp_dir

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            file_roots=self.file_roots,
            allowed_hosts=self.allowed_hosts,
            allow_private_addresses=self.allow_private_addresses,
            allow_hard_links=self.allow_hard_links,
            max_bytes=self.max_bytes,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            total_timeout_s=self.total_timeout_s,
            max_redirects=self.max_redirects,
            temp_dir=self.temp_dir,
        )


class FaceSettings(_Section):
    """`FaceConfig` (what each field means, and its default) as `DEEPSCREEN_DETECTOR__FACES__*`."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_selection: int = Field(default=FaceConfig.model_selection, ge=0, le=1)
    min_confidence: float = Field(default=FaceConfig.min_confidence, ge=0, le=1)
    detect_max_side: int = Field(default=FaceConfig.detect_max_side, ge=1)
    link_iou: float = Field(default=FaceConfig.link_iou, gt=0, le=1)
    max_gap: int = Field(default=FaceConfig.max_gap, ge=0)
    min_coverage: float = Field(default=FaceConfig.min_coverage, ge=0, le=1)
    min_face_px: int = Field(default=FaceConfig.min_face_px, ge=1)
    crop_scale: float = Field(default=FaceConfig.crop_scale, ge=1)
    window_link_iou: float = Field(default=FaceConfig.window_link_iou, gt=0, le=1)
    detect_every: int = Field(default=FaceConfig.detect_every, ge=1, le=20)

    def face_config(self) -> FaceConfig:
        return FaceConfig(**self.model_dump())


class DetectorSettings(_Section):
    """The model and its batching, and the `DetectorConfig` (its defaults) but for `max_bytes`."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_path: Path = PACKAGED_MODEL
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # The model on the CPU (`detector.backends`); derived forms are cached under `derived_dir`
    # by the artifact's sha256; int8 forms are calibrated on face clips of `calibration_videos`.
    cpu_backend: CpuBackendChoice = CpuInferenceConfig.backend
    derived_dir: Path = Field(default_factory=lambda: CpuInferenceConfig().derived_dir)
    calibration_videos: Path | None = Field(
        default=None, description="a directory of videos like the uploads (int8 backends)"
    )
    # `auto` with neither an int8 form nor `calibration_videos`: fp32 until the first face
    # clips screened have calibrated the int8 form (kept in `derived_dir` for next time).
    cpu_self_calibrate: bool = CpuInferenceConfig.self_calibrate
    # A batch runs on the CPU this many clips at a time (activation memory grows with it).
    cpu_clips_per_run: int = Field(default=CpuInferenceConfig.clips_per_run, ge=1, le=1024)
    batch_size: int = Field(default=BatchingConfig.batch_size, ge=1, le=1024)
    batch_wait_ms: float = Field(default=BatchingConfig.wait_s * 1000, ge=0)
    windows: int = Field(default=SamplingConfig.windows, ge=1, le=SamplingConfig.max_windows)
    extraction_workers: int = Field(
        default=IsolationConfig.workers, ge=1, le=64, description="decoder processes"
    )
    extraction_memory_mb: int = Field(
        default=IsolationConfig.memory_limit_mb, ge=256, description="per decoder process"
    )
    max_pixels: int = Field(default=MediaLimits.max_pixels, ge=1)
    max_duration_s: float = Field(default=MediaLimits.max_duration_s, gt=0)
    max_frames: int = Field(default=MediaLimits.max_frames, ge=1)
    decode_timeout_s: float = Field(default=MediaLimits.decode_timeout_s, gt=0)
    max_image_bytes: int = Field(default=ImageLimits.max_bytes, ge=1)
    max_image_pixels: int = Field(default=ImageLimits.max_pixels, ge=1)
    review_action: Action = Field(
        default=ActionPolicy.model_review, description="score at or above the review threshold"
    )
    block_action: Action = Field(
        default=ActionPolicy.model_block, description="score at or above the block threshold"
    )
    faces: FaceSettings = FaceSettings()

    def cpu_inference(self) -> CpuInferenceConfig:
        return CpuInferenceConfig(
            backend=self.cpu_backend,
            derived_dir=self.derived_dir,
            self_calibrate=self.cpu_self_calibrate,
            clips_per_run=self.cpu_clips_per_run,
        )


class ProvenanceSettings(_Section):
    """Content credentials (C2PA): the trust list, the bounds of a read, and their actions."""

    enabled: bool = CredentialsConfig.enabled
    trust_anchors: Path | None = Field(
        default=None, description="PEM file of trust anchors (the C2PA conformance trust list)"
    )
    read_timeout_s: float = Field(default=CredentialsConfig.read_timeout_s, gt=0)
    max_manifest_mb: int = Field(default=CredentialsConfig.max_manifest_mb, ge=1, le=1024)
    declared_ai_action: Action = ActionPolicy.declared_ai
    declared_composite_action: Action = ActionPolicy.declared_composite
    invalid_action: Action = Field(
        default=ActionPolicy.invalid_credentials,
        description="an invalid manifest (content changed after signing) alone asks for this",
    )

    def credentials_config(self) -> CredentialsConfig:
        """The reader's configuration; reads the trust-anchor file (a start-up failure if bad)."""
        pem = None
        if self.trust_anchors is not None:
            try:
                pem = self.trust_anchors.read_text(encoding="ascii")
            except UnicodeDecodeError as error:  # DER, or not a certificate at all
                raise ValueError(f"{self.trust_anchors} is not PEM text ({error})") from error
            if "-----BEGIN CERTIFICATE-----" not in pem:
                raise ValueError(f"{self.trust_anchors} holds no PEM certificate")
        return CredentialsConfig(
            enabled=self.enabled,
            trust_anchors_pem=pem,
            read_timeout_s=self.read_timeout_s,
            max_manifest_mb=self.max_manifest_mb,
        )


class KnownFakesSettings(_Section):
    """The known-fakes signal (`KnownFakesConfig`, its defaults): uploads hashed and looked up."""

    enabled: bool = KnownFakesConfig.enabled
    action: Action = Field(
        default=ActionPolicy.known_fake,
        description="a match on a confirmed_fake entry asks for this; block: pending review",
    )
    catch_up_wait_s: float = Field(
        default=300.0,
        ge=0,
        description="at start, uploads wait at most this for the bank topic to be read; "
        "then they are screened against the entries read so far",
    )


class RetrySettings(_Section):
    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff_initial_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)


class HttpSettings(_Section):
    host: str = "0.0.0.0"  # a pod's probes and scrapes come from outside
    port: int = Field(default=8080, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DEEPSCREEN_",
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_dir_missing="ok",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    media: MediaSettings = MediaSettings()
    detector: DetectorSettings = DetectorSettings()
    provenance: ProvenanceSettings = ProvenanceSettings()
    known_fakes: KnownFakesSettings = KnownFakesSettings()
    retry: RetrySettings = RetrySettings()
    http: HttpSettings = HttpSettings()
    drain_seconds: float = Field(default=30.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    def detector_config(self) -> DetectorConfig:
        """The detector's configuration, from the detector, media and provenance sections."""
        detector, provenance = self.detector, self.provenance
        return DetectorConfig(
            limits=MediaLimits(
                max_bytes=self.media.max_bytes,
                max_pixels=detector.max_pixels,
                max_duration_s=detector.max_duration_s,
                max_frames=detector.max_frames,
                decode_timeout_s=detector.decode_timeout_s,
            ),
            sampling=SamplingConfig(windows=detector.windows),
            faces=detector.faces.face_config(),
            images=ImageLimits(
                max_bytes=min(detector.max_image_bytes, self.media.max_bytes),
                max_pixels=detector.max_image_pixels,
            ),
            credentials=provenance.credentials_config(),
            actions=ActionPolicy(
                declared_ai=provenance.declared_ai_action,
                declared_composite=provenance.declared_composite_action,
                invalid_credentials=provenance.invalid_action,
                model_review=detector.review_action,
                model_block=detector.block_action,
                known_fake=self.known_fakes.action,
            ),
            known_fakes=KnownFakesConfig(enabled=self.known_fakes.enabled),
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Secret files may set nested fields (DEEPSCREEN_KAFKA__SASL_PASSWORD).
        return init_settings, env_settings, NestedSecretsSettingsSource(file_secret_settings)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the secrets directory; `overrides` win (tests)."""
    secrets_dir = Path(os.environ.get("DEEPSCREEN_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    return Settings(_secrets_dir=secrets_dir if secrets_dir.is_dir() else None, **overrides)
