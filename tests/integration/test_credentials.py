"""Content credentials through the real service: a declared-AI upload is labelled, and stays so.

The upload is a synthetic face video signed in the test, with a manifest that
declares it `trainedAlgorithmicMedia`, under a test authority whose root is the
service's trust list. The real broker and Redis carry it; the model is the
untrained reference one, whose finding does not matter here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from consumer.settings import ProvenanceSettings
from consumer.signing import TestAuthority as Authority
from schemas import Action, Outcome, ProvenanceState, Reason, Signal
from schemas.provenance import Declaration
from tests.integration.conftest import Topics, service_settings
from tests.integration.outcomes import file_upload, publish, wait_for
from tests.support.broker import TansuBroker
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)


def test_a_declared_ai_upload_is_flagged_label_with_its_credentials_and_a_reupload_keeps_them(
    broker: TansuBroker, media: Path, reference_model: Path, redis_server: RedisServer,
    start_service: Any, tmp_path: Path,
) -> None:  # fmt: skip
    authority = Authority.create(signer_name="Example Generator", organisation="Example AI")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    shutil.copy(media / "no_face.mp4", uploads / "plain.mp4")
    authority.sign(media / "moving_face.mp4", uploads / "declared.mp4")
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(authority.root_pem)
    topics = Topics.fresh().create(broker)
    settings = service_settings(
        broker, topics, uploads, reference_model, redis_url=redis_server.url,
        provenance=ProvenanceSettings(trust_anchors=anchors),
    )  # fmt: skip
    service = start_service(settings)

    publish(broker, topics, [file_upload("declared", uploads / "declared.mp4"),
                             file_upload("plain", uploads / "plain.mp4")])  # fmt: skip
    first = wait_for(broker, topics, expected=2, timeout_s=180)
    publish(broker, topics, [file_upload("declared-again", uploads / "declared.mp4")])
    published = wait_for(broker, topics, expected=3, timeout_s=120)

    assert published.count == 3
    [flag] = [f for f in first.flags if f.data.video_id == "declared"]
    verdict = flag.data
    assert (verdict.outcome, verdict.reason, verdict.action, verdict.action_signal) == (
        Outcome.DECLARED_SYNTHETIC, Reason.DECLARED_AI_GENERATED, Action.LABEL,
        Signal.CONTENT_CREDENTIALS,
    )  # fmt: skip
    provenance = verdict.provenance
    assert provenance is not None
    assert provenance.state is ProvenanceState.VALID and provenance.trusted
    assert provenance.declaration is Declaration.AI_GENERATED
    assert provenance.signer is not None and provenance.signer.common_name == "Example Generator"
    assert verdict.signal(Signal.MODEL) is not None  # the model screened the faces too
    assert verdict.faces_tracked >= 1
    assert flag.dataschema is not None and "/v4/" in flag.dataschema

    # the unsigned upload has no credentials and no action: no flag
    assert [f.data.video_id for f in published.flags].count("plain") == 0
    plain = published.verdict_of("plain").data
    assert plain.provenance is not None and plain.provenance.state is ProvenanceState.ABSENT

    [again] = [f for f in published.flags if f.data.video_id == "declared-again"]
    assert again.data.cache_hit is True
    assert again.data.provenance == provenance
    assert (again.data.outcome, again.data.action) == (Outcome.DECLARED_SYNTHETIC, Action.LABEL)
    assert len(published.flags) == 2  # one per declared upload, none for the plain one
    read = service.app.metrics.registry.get_sample_value
    assert read("deepscreen_flags_total", {"signal": "content_credentials"}) == 2
    assert read("deepscreen_credentials_total", {"state": "valid"}) == 1  # the hit read nothing
    assert read("deepscreen_credentials_total", {"state": "absent"}) == 1
