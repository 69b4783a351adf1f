from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.media import FetchPolicy
from consumer.settings import (
    FaceSettings,
    KafkaSettings,
    ProvenanceSettings,
    Settings,
    load_settings,
)
from consumer.signing import TestAuthority as Authority
from detector.config import (
    PACKAGED_MODEL,
    ActionPolicy,
    CpuInferenceConfig,
    CredentialsConfig,
    DetectorConfig,
    FaceConfig,
    ImageLimits,
    MediaLimits,
    SamplingConfig,
)
from schemas import Action
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
        ("DEEPSCREEN_PROVENANCE__DECLARED_AI_ACTION", "delete"),
        ("DEEPSCREEN_PROVENANCE__DECLARED_COMPOSITE_ACTION", "LABEL"),
        ("DEEPSCREEN_PROVENANCE__INVALID_ACTION", "flag"),
        ("DEEPSCREEN_DETECTOR__REVIEW_ACTION", "moderate"),
        ("DEEPSCREEN_DETECTOR__BLOCK_ACTION", "ban"),
        ("DEEPSCREEN_PROVENANCE__READ_TIMEOUT_S", "0"),
        ("DEEPSCREEN_PROVENANCE__MAX_MANIFEST_MB", "0"),
        ("DEEPSCREEN_PROVENANCE__ENABLED", "maybe"),
        ("DEEPSCREEN_PROVENANCE__NO_SUCH_SETTING", "1"),
        ("DEEPSCREEN_DETECTOR__MAX_IMAGE_BYTES", "0"),
        ("DEEPSCREEN_DETECTOR__MAX_IMAGE_PIXELS", "0"),
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
    config = settings.detector_config()
    assert config == DetectorConfig()
    # each section on its own, so a failure names the one that drifted
    assert config.limits == MediaLimits()
    assert config.sampling == SamplingConfig()
    assert config.faces == FaceConfig()
    assert config.images == ImageLimits()
    assert config.credentials == CredentialsConfig()
    assert config.actions == ActionPolicy()
    assert config.policy_fingerprint() == DetectorConfig().policy_fingerprint()
    assert settings.media.fetch_policy() == FetchPolicy()


def test_provenance_settings_mirror_the_credentials_config_and_the_action_policy() -> None:
    """Every reader setting but the PEM (a file here) and every credentials action has one."""
    reader = {f.name for f in fields(CredentialsConfig)} - {"trust_anchors_pem"}
    settings = {n for n in ProvenanceSettings.model_fields if not n.endswith("_action")}
    assert settings == reader | {"trust_anchors"}
    assert ProvenanceSettings().credentials_config() == CredentialsConfig()
    actions = {"declared_ai": "declared_ai_action",
               "declared_composite": "declared_composite_action",
               "invalid_credentials": "invalid_action"}  # fmt: skip
    defaults = ProvenanceSettings()
    for policy_field, setting in actions.items():
        assert getattr(defaults, setting) is getattr(ActionPolicy(), policy_field), setting
    assert {f.name for f in fields(ActionPolicy)} == {
        *actions,
        "model_review",
        "model_block",
        "known_fake",
    }


def test_the_known_fakes_settings_become_the_detectors_action_and_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().known_fakes.action is ActionPolicy().known_fake is Action.BLOCK
    monkeypatch.setenv("DEEPSCREEN_KNOWN_FAKES__ACTION", "review")
    monkeypatch.setenv("DEEPSCREEN_KNOWN_FAKES__ENABLED", "false")
    monkeypatch.setenv("DEEPSCREEN_KAFKA__BANK_TOPIC", "bank.v2")
    settings = load_settings()
    config = settings.detector_config()
    assert config.actions.known_fake is Action.REVIEW
    assert config.known_fakes.enabled is False
    assert config.policy_fingerprint() != DetectorConfig().policy_fingerprint()
    assert (settings.kafka.bank_topic, settings.kafka.decisions_topic) == (
        "bank.v2",
        "moderation.decisions",
    )


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
    "64 MiB images": r"\b64\s*\*\s*1024\s*\*\*\s*2\b",
    "50 megapixel images": r"\b50_?000_?000\b",
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


def test_producer_publish_and_claim_timings_are_settings_with_their_defaults() -> None:
    settings = Settings()
    kafka, redis = settings.kafka, settings.redis
    # linger 25 ms (it was 5): the producer batches a burst of cache hits' flags
    assert (kafka.producer_ack_timeout_s, kafka.producer_linger_ms, kafka.producer_retries) == (
        30.0,
        25,
        5,
    )
    # 256 KiB (kafka-python's default is 16 KiB, about six flags a request)
    assert kafka.producer_batch_bytes == 256 * 1024
    assert (kafka.publish_backoff_initial_s, kafka.publish_backoff_max_s) == (0.5, 30.0)
    assert kafka.flush_timeout_s == 30.0
    assert redis.claim_poll_s == 0.25


def test_a_producer_batch_larger_than_a_request_is_refused() -> None:
    with pytest.raises(ValidationError, match="producer_batch_bytes"):
        KafkaSettings(producer_batch_bytes=2 * 1024 * 1024, producer_max_request_bytes=1024 * 1024)


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
    assert kafka.producer_batch_bytes == 65536
    assert (kafka.publish_backoff_initial_s, kafka.publish_backoff_max_s) == (0.1, 2.0)
    assert (kafka.flush_timeout_s, settings.redis.claim_poll_s) == (45.0, 0.5)


# --------------------------------------------------------------------------- content credentials


def test_the_provenance_and_image_variables_reach_the_detector_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "DEEPSCREEN_PROVENANCE__ENABLED": "false",
        "DEEPSCREEN_PROVENANCE__READ_TIMEOUT_S": "2.5",
        "DEEPSCREEN_PROVENANCE__MAX_MANIFEST_MB": "4",
        "DEEPSCREEN_PROVENANCE__DECLARED_AI_ACTION": "review",
        "DEEPSCREEN_PROVENANCE__DECLARED_COMPOSITE_ACTION": "none",
        "DEEPSCREEN_PROVENANCE__INVALID_ACTION": "label",
        "DEEPSCREEN_DETECTOR__REVIEW_ACTION": "label",
        "DEEPSCREEN_DETECTOR__BLOCK_ACTION": "review",
        "DEEPSCREEN_DETECTOR__MAX_IMAGE_BYTES": "1000000",
        "DEEPSCREEN_DETECTOR__MAX_IMAGE_PIXELS": "4000000",
    }.items():
        monkeypatch.setenv(name, value)
    config = load_settings().detector_config()
    assert config.credentials == CredentialsConfig(
        enabled=False, trust_anchors_pem=None, read_timeout_s=2.5, max_manifest_mb=4
    )
    assert config.actions == ActionPolicy(
        declared_ai=Action.REVIEW,
        declared_composite=Action.NONE,
        invalid_credentials=Action.LABEL,
        model_review=Action.LABEL,
        model_block=Action.REVIEW,
    )
    assert config.images == ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000)
    assert (config.limits, config.faces) == (MediaLimits(), FaceConfig())


def test_an_image_is_never_allowed_more_bytes_than_any_fetched_media(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEEPSCREEN_MEDIA__MAX_BYTES", "5000")
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__MAX_IMAGE_BYTES", "9000")
    config = load_settings().detector_config()
    assert (config.limits.max_bytes, config.images.max_bytes) == (5000, 5000)


@pytest.fixture(scope="module")
def root_pem() -> str:
    return Authority.create().root_pem.decode("ascii")


def test_the_trust_anchor_file_is_read_into_the_credentials_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root_pem: str
) -> None:
    anchors = tmp_path / "trust" / "anchors.pem"
    anchors.parent.mkdir()
    anchors.write_text(root_pem + Authority.create().root_pem.decode("ascii"))
    monkeypatch.setenv("DEEPSCREEN_PROVENANCE__TRUST_ANCHORS", str(anchors))
    settings = load_settings()
    assert settings.provenance.trust_anchors == anchors
    pem = settings.detector_config().credentials.trust_anchors_pem
    assert pem == anchors.read_text()
    assert pem is not None and pem.count("-----BEGIN CERTIFICATE-----") == 2


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not a certificate\n", ValueError),
        ("-----BEGIN PRIVATE KEY-----\nMC4CAQAw\n-----END PRIVATE KEY-----\n", ValueError),
        (None, FileNotFoundError),  # no such file
    ],
    ids=["text", "a key, no certificate", "missing"],
)
def test_a_trust_anchor_file_without_a_certificate_fails_when_the_detector_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, error: type[Exception]
) -> None:
    """At start-up, not later as every upload's credentials becoming unreadable."""
    anchors = tmp_path / "anchors.pem"
    if content is not None:
        anchors.write_text(content)
    monkeypatch.setenv("DEEPSCREEN_PROVENANCE__TRUST_ANCHORS", str(anchors))
    settings = load_settings()  # a path is all the settings know
    with pytest.raises(error, match=re.escape(str(anchors)) if content else None):
        settings.detector_config()


def test_a_binary_trust_anchor_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A DER certificate, say: not PEM text."""
    anchors = tmp_path / "anchors.der"
    anchors.write_bytes(b"\x30\x82\x01\x0a\xff\xfe")
    monkeypatch.setenv("DEEPSCREEN_PROVENANCE__TRUST_ANCHORS", str(anchors))
    with pytest.raises(ValueError, match=f"{re.escape(str(anchors))} is not PEM text"):
        load_settings().detector_config()


# The policy fingerprint is part of the verdict cache key: it must change with
# what turns findings into actions, and only with that (or every other change of
# settings would throw away the whole cache).

_ACTION_CHANGES = {
    "declared_ai": Action.REVIEW,
    "declared_composite": Action.BLOCK,
    "invalid_credentials": Action.REVIEW,
    "model_review": Action.LABEL,
    "model_block": Action.REVIEW,
}


@pytest.mark.parametrize("name", sorted(_ACTION_CHANGES))
def test_the_policy_fingerprint_changes_with_every_action(name: str) -> None:
    default = DetectorConfig()
    changed = replace(default, actions=replace(default.actions, **{name: _ACTION_CHANGES[name]}))
    assert changed.policy_fingerprint() != default.policy_fingerprint()


def test_the_policy_fingerprint_changes_with_the_trust_list(root_pem: str) -> None:
    def trusting(pem: str | None) -> str:
        return DetectorConfig(
            credentials=CredentialsConfig(trust_anchors_pem=pem)
        ).policy_fingerprint()

    other = Authority.create().root_pem.decode("ascii")
    fingerprints = {trusting(None), trusting(root_pem), trusting(other), trusting(root_pem + other)}
    assert len(fingerprints) == 4
    assert trusting(root_pem) == trusting(root_pem)


def test_the_policy_fingerprint_changes_when_credentials_are_no_longer_read() -> None:
    """Without them no upload is labelled for its declaration: a cached label must not be served."""
    default = DetectorConfig()
    off = replace(default, credentials=CredentialsConfig(enabled=False))
    assert off.policy_fingerprint() != default.policy_fingerprint()


def test_the_policy_fingerprint_changes_when_known_fakes_are_no_longer_looked_up() -> None:
    """Without the bank nothing is blocked as a confirmed fake: no cached block is served."""
    default = DetectorConfig()
    off = replace(default, known_fakes=replace(default.known_fakes, enabled=False))
    assert off.policy_fingerprint() != default.policy_fingerprint()


def test_the_policy_fingerprint_ignores_what_does_not_decide_an_action() -> None:
    default = DetectorConfig()
    for unrelated in (
        replace(default, limits=MediaLimits(max_bytes=1000, decode_timeout_s=5.0)),
        replace(default, sampling=SamplingConfig(windows=2)),
        replace(default, faces=FaceConfig(min_confidence=0.9)),
        replace(default, images=ImageLimits(max_bytes=1000, max_pixels=1000)),
    ):
        assert unrelated.policy_fingerprint() == default.policy_fingerprint(), unrelated
    assert DetectorConfig().policy_fingerprint() == default.policy_fingerprint()  # stable


def test_the_trust_list_counts_by_its_content_not_by_the_file_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root_pem: str
) -> None:
    """Replicas mounting the same anchors at other paths share their cached verdicts."""
    fingerprints = set()
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "anchors.pem").write_text(root_pem)
        monkeypatch.setenv(
            "DEEPSCREEN_PROVENANCE__TRUST_ANCHORS", str(tmp_path / where / "anchors.pem")
        )
        fingerprints.add(load_settings().detector_config().policy_fingerprint())
    assert len(fingerprints) == 1
    monkeypatch.delenv("DEEPSCREEN_PROVENANCE__TRUST_ANCHORS")
    assert load_settings().detector_config().policy_fingerprint() not in fingerprints


def test_settings_that_change_an_action_change_the_fingerprint_and_others_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = Settings().detector_config().policy_fingerprint()
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__WINDOWS", "2")
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("DEEPSCREEN_MEDIA__MAX_BYTES", "1000")
    assert load_settings().detector_config().policy_fingerprint() == default
    monkeypatch.setenv("DEEPSCREEN_PROVENANCE__DECLARED_AI_ACTION", "review")
    assert load_settings().detector_config().policy_fingerprint() != default


def test_the_cpu_backend_variables_reach_the_detectors_cpu_inference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__CPU_BACKEND", "onnxruntime-int8")
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__DERIVED_DIR", str(tmp_path / "derived"))
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__CALIBRATION_VIDEOS", str(tmp_path / "videos"))
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__CPU_CLIPS_PER_RUN", "2")
    detector = load_settings().detector
    assert detector.cpu_inference() == CpuInferenceConfig(
        backend="onnxruntime-int8", derived_dir=tmp_path / "derived", clips_per_run=2
    )
    assert detector.calibration_videos == tmp_path / "videos"


def test_the_default_cpu_inference_is_the_detector_configs() -> None:
    detector = load_settings().detector
    assert detector.cpu_inference() == CpuInferenceConfig()
    assert detector.calibration_videos is None


def test_an_unknown_cpu_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSCREEN_DETECTOR__CPU_BACKEND", "tensorrt")
    with pytest.raises(ValidationError, match="cpu_backend"):
        load_settings()
