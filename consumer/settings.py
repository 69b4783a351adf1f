"""The service's configuration: one frozen object, read once at start-up.

Every setting comes from the environment (`DEEPSCREEN_` prefix, `__` between
levels: `DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS`) or, for secrets, from files in
a mounted secrets directory (`DEEPSCREEN_SECRETS_DIR`, default
`/run/secrets/deepscreen`; one file per setting, named like the variable, e.g.
`DEEPSCREEN_KAFKA__SASL_PASSWORD`). These names are part of the product's
interface: the Helm chart and the README use them.
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

from detector.config import (
    PACKAGED_MODEL,
    DetectorConfig,
    FaceConfig,
    MediaLimits,
    SamplingConfig,
)

DEFAULT_SECRETS_DIR = Path("/run/secrets/deepscreen")
GiB = 1024**3


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
    socket_timeout_s: float = Field(default=0.25, gt=0)
    retry_after_s: float = Field(default=5.0, gt=0, description="pause after Redis failed")


class MediaSettings(_Section):
    file_roots: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_private_addresses: bool = False
    max_bytes: int = Field(default=2 * GiB, ge=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=300.0, gt=0)
    max_redirects: int = Field(default=3, ge=0, le=10)
    temp_dir: Path | None = None


class DetectorSettings(_Section):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_path: Path = PACKAGED_MODEL
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(default=32, ge=1, le=1024)
    batch_wait_ms: float = Field(default=20.0, ge=0)
    windows: int = Field(default=8, ge=1, le=32)
    extraction_workers: int = Field(default=2, ge=1, le=64, description="decoder processes")
    extraction_memory_mb: int = Field(default=4096, ge=256, description="per decoder process")
    max_pixels: int = Field(default=3840 * 2160, ge=1)
    max_duration_s: float = Field(default=3 * 3600.0, gt=0)
    max_frames: int = Field(default=3 * 3600 * 60, ge=1)
    decode_timeout_s: float = Field(default=300.0, gt=0)

    def detector_config(self, max_bytes: int) -> DetectorConfig:
        return DetectorConfig(
            limits=MediaLimits(
                max_bytes=max_bytes,
                max_pixels=self.max_pixels,
                max_duration_s=self.max_duration_s,
                max_frames=self.max_frames,
                decode_timeout_s=self.decode_timeout_s,
            ),
            sampling=SamplingConfig(windows=self.windows),
            faces=FaceConfig(),
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
    retry: RetrySettings = RetrySettings()
    http: HttpSettings = HttpSettings()
    drain_seconds: float = Field(default=30.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

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
