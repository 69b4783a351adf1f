from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.settings import Settings, load_settings
from detector.config import PACKAGED_MODEL


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
