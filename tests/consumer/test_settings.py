from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.media import FetchPolicy
from consumer.settings import FaceSettings, Settings, load_settings
from detector.config import PACKAGED_MODEL, DetectorConfig, FaceConfig
from tests.support.timings import TIMING_VARIABLES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("DEEPSCREEN_")]:
        monkeypatch.delenv(name)


def test_defaults_need_no_configuration() -> None:
    settings = load_settings()
    assert settings.kafka.uploads_topic == "media.uploads"
    assert settings.kafka.flags_topic == "moderation.flags"
    assert settings.kafka.dlq_topic == "media.uploads.dlq"
    assert settings.kafka.verdicts_topic == ""  # verdicts are not published unless asked
    assert settings.detector.model_path == PACKAGED_MODEL
    assert settings.media.file_roots == () and settings.media.allowed_hosts == ()


def test_the_documented_environment_names_set_nested_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS": "kafka-0:9092,kafka-1:9092",
        "DEEPSCREEN_KAFKA__GROUP_ID": "screeners",
        "DEEPSCREEN_KAFKA__UPLOADS_TOPIC": "uploads",
        "DEEPSCREEN_KAFKA__FLAGS_TOPIC": "flags",
        "DEEPSCREEN_KAFKA__VERDICTS_TOPIC": "audit",
        "DEEPSCREEN_KAFKA__DLQ_TOPIC": "uploads.dlq",
        "DEEPSCREEN_REDIS__URL": "redis://cache:6379/2",
        "DEEPSCREEN_MEDIA__FILE_ROOTS": '["/media", "/mnt/uploads"]',
        "DEEPSCREEN_MEDIA__ALLOWED_HOSTS": '["cdn.example.com", "*.media.example.com"]',
        "DEEPSCREEN_DETECTOR__MODEL_PATH": "/models/m.pt",
        "DEEPSCREEN_DETECTOR__DEVICE": "cuda:0",
        "DEEPSCREEN_DETECTOR__BATCH_SIZE": "64",
        "DEEPSCREEN_HTTP__PORT": "9100",
        "DEEPSCREEN_DRAIN_SECONDS": "45",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert settings.kafka.group_id == "screeners"
    assert (settings.kafka.verdicts_topic, settings.kafka.dlq_topic) == ("audit", "uploads.dlq")
    assert settings.redis.url == "redis://cache:6379/2"
    assert settings.media.file_roots == (Path("/media"), Path("/mnt/uploads"))
    assert settings.media.allowed_hosts == ("cdn.example.com", "*.media.example.com")
    assert settings.detector.model_path == Path("/models/m.pt")
    assert (settings.detector.device, settings.detector.batch_size) == ("cuda:0", 64)
    assert (settings.http.port, settings.drain_seconds) == (9100, 45.0)


def test_secrets_are_read_from_a_mounted_directory_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "DEEPSCREEN_KAFKA__SASL_PASSWORD").write_text("hunter2")
    (tmp_path / "DEEPSCREEN_REDIS__PASSWORD").write_text("r3d1s")
    monkeypatch.setenv("DEEPSCREEN_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("DEEPSCREEN_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DEEPSCREEN_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DEEPSCREEN_KAFKA__SASL_USERNAME", "deepscreen")
    settings = load_settings()
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "r3d1s"
    assert "hunter2" not in repr(settings) and "r3d1s" not in str(settings)


def test_sasl_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSCREEN_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="SASL needs"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEEPSCREEN_KAFKA__NO_SUCH_SETTING", "1"),
        ("DEEPSCREEN_DETECTOR__DEVICE", "tpu"),
        ("DEEPSCREEN_KAFKA__MAX_IN_FLIGHT", "0"),
        ("DEEPSCREEN_HTTP__PORT", "70000"),
        ("DEEPSCREEN_DETECTOR__FACES__MIN_CONFIDENCE", "1.5"),
        ("DEEPSCREEN_DETECTOR__FACES__MIN_FACE_PX", "0"),
        ("DEEPSCREEN_DETECTOR__FACES__CROP_SCALE", "0.5"),
        ("DEEPSCREEN_DETECTOR__FACES__NO_SUCH_SETTING", "1"),
        ("DEEPSCREEN_KAFKA__PRODUCER_ACK_TIMEOUT_S", "0"),
        ("DEEPSCREEN_REDIS__CLAIM_POLL_S", "0"),
    ],
)
def test_unknown_or_out_of_range_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        load_settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.drain_seconds = 1  # type: ignore[misc]


# One source of truth: the limits the settings share with the detector and the
# fetcher are defined once (detector.config, FetchPolicy) and derived elsewhere.


def test_default_settings_derive_the_default_detector_config_and_fetch_policy() -> None:
    settings = Settings()
    assert settings.detector_config() == DetectorConfig()
    assert settings.media.fetch_policy() == FetchPolicy()


def test_media_settings_become_the_fetch_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSCREEN_MEDIA__MAX_BYTES", "1000")
    monkeypatch.setenv("DEEPSCREEN_MEDIA__MAX_REDIRECTS", "1")
    monkeypatch.setenv("DEEPSCREEN_MEDIA__ALLOWED_HOSTS", '["cdn.example.com"]')
    policy = load_settings().media.fetch_policy()
    assert policy == replace(
        FetchPolicy(), max_bytes=1000, max_redirects=1, allowed_hosts=("cdn.example.com",)
    )


# Spellings of defaults that must each be written once in the Python packages.
ONCE = {
    "2 GiB": r"\b2\s*\*\s*(?:1024\s*\*\*\s*3|GIB\b)|\b2_?147_?483_?648\b|\b1\s*<<\s*31\b",
    "3840x2160 pixels": r"\b3840\s*\*\s*2160\b",
    "3 hours": r"\b3\s*\*\s*3600\.0\b",
    "3 hours of 60 fps frames": r"\b3\s*\*\s*3600\s*\*\s*60\b",
}


@pytest.mark.parametrize("default", sorted(ONCE))
def test_a_shared_limit_is_written_once_in_detector_config(default: str) -> None:
    pattern = re.compile(ONCE[default], re.IGNORECASE)
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for package in ("schemas", "detector", "consumer")
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert len(found) == 1 and found[0].startswith("detector/config.py:"), found


def test_face_settings_mirror_the_face_config_field_for_field() -> None:
    assert list(FaceSettings.model_fields) == [f.name for f in fields(FaceConfig)]
    assert FaceSettings().face_config() == FaceConfig()


def test_the_faces_variables_reach_the_face_config_the_detector_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "DEEPSCREEN_DETECTOR__FACES__MODEL_SELECTION": "0",
        "DEEPSCREEN_DETECTOR__FACES__MIN_CONFIDENCE": "0.6",
        "DEEPSCREEN_DETECTOR__FACES__DETECT_MAX_SIDE": "960",
        "DEEPSCREEN_DETECTOR__FACES__LINK_IOU": "0.4",
        "DEEPSCREEN_DETECTOR__FACES__MAX_GAP": "3",
        "DEEPSCREEN_DETECTOR__FACES__MIN_COVERAGE": "0.6",
        "DEEPSCREEN_DETECTOR__FACES__MIN_FACE_PX": "40",
        "DEEPSCREEN_DETECTOR__FACES__CROP_SCALE": "1.5",
        "DEEPSCREEN_DETECTOR__FACES__WINDOW_LINK_IOU": "0.25",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    config = settings.detector_config()
    assert config.faces == FaceConfig(
        model_selection=0,
        min_confidence=0.6,
        detect_max_side=960,
        link_iou=0.4,
        max_gap=3,
        min_coverage=0.6,
        min_face_px=40,
        crop_scale=1.5,
        window_link_iou=0.25,
    )
    assert (config.limits, config.sampling) == (DetectorConfig().limits, DetectorConfig().sampling)


def test_producer_publish_and_claim_timings_are_settings_with_the_former_defaults() -> None:
    settings = Settings()
    kafka, redis = settings.kafka, settings.redis
    assert (kafka.producer_ack_timeout_s, kafka.producer_linger_ms, kafka.producer_retries) == (
        30.0,
        5,
        5,
    )
    assert (kafka.publish_backoff_initial_s, kafka.publish_backoff_max_s) == (0.5, 30.0)
    assert kafka.flush_timeout_s == 30.0
    assert redis.claim_poll_s == 0.25


def test_the_timing_variables_set_the_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in TIMING_VARIABLES.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    kafka = settings.kafka
    assert (kafka.producer_ack_timeout_s, kafka.producer_linger_ms, kafka.producer_retries) == (
        12.5,
        20,
        9,
    )
    assert (kafka.publish_backoff_initial_s, kafka.publish_backoff_max_s) == (0.1, 2.0)
    assert (kafka.flush_timeout_s, settings.redis.claim_poll_s) == (45.0, 0.5)
