from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import DECISION_TYPE, Decision, DecisionEvent, ModerationDecision, decision_event
from schemas.envelope import InvalidDecision, InvalidUpload, parse_decision, parse_upload

RULING = {
    "answers_event_id": "4f1c0d2e9a",
    "video_id": "v-7",
    "content_sha256": "c" * 64,
    "uri": "s3://uploads/v-7.mp4",
    "decision": "confirmed_fake",
    "moderator": "mod-42",
    "reason": "face swapped onto a news anchor",
    "decided_at": "2026-11-21T09:30:00Z",
}


def encoded(document: object) -> bytes:
    return json.dumps(document).encode()


def test_a_ruling_names_the_content_the_decision_and_who_took_it_when() -> None:
    ruling = ModerationDecision.model_validate(RULING)
    assert ruling.decision is Decision.CONFIRMED_FAKE
    assert ruling.content_sha256 == "c" * 64
    assert ruling.decided_at == datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def test_the_four_decisions_are_the_contract() -> None:
    assert [d.value for d in Decision] == [
        "confirmed_fake",
        "false_positive",
        "confirmed_real",
        "retracted",
    ]


def test_a_ruling_on_content_deepscreen_never_flagged_needs_no_event_id_uri_or_reason() -> None:
    minimal = {k: v for k, v in RULING.items() if k not in ("answers_event_id", "uri", "reason")}
    ruling = ModerationDecision.model_validate(minimal)
    assert (ruling.answers_event_id, ruling.uri, ruling.reason) == (None, None, "")


def test_fields_the_moderation_tool_adds_later_are_ignored() -> None:
    ruling = ModerationDecision.model_validate({**RULING, "queue": "priority"})
    assert "queue" not in ruling.model_dump()


def test_the_content_hash_is_lowercased() -> None:
    ruling = ModerationDecision.model_validate({**RULING, "content_sha256": "AB" * 32})
    assert ruling.content_sha256 == "ab" * 32


@pytest.mark.parametrize(
    "field",
    [
        {"decision": "probably_fake"},
        {"content_sha256": "c" * 63},
        {"content_sha256": None},
        {"moderator": ""},
        {"moderator": "m" * 257},
        {"reason": "r" * 2049},
        {"video_id": "bad\nid"},
        {"uri": "ftp://h/v-7.mp4"},
        {"answers_event_id": "e" * 129},
        {"decided_at": "2026-11-21T09:30:00"},  # no zone: rulings could not be ordered
    ],
)
def test_malformed_or_unbounded_rulings_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ModerationDecision.model_validate({**RULING, **field})


def test_a_bare_ruling_is_parsed() -> None:
    assert parse_decision(encoded(RULING)).decision is Decision.CONFIRMED_FAKE


def test_a_structured_cloudevent_of_the_decision_type_is_unwrapped() -> None:
    envelope = {
        "specversion": "1.0", "id": "d-1", "source": "/moderation", "type": DECISION_TYPE,
        "datacontenttype": "application/json", "data": RULING,
    }  # fmt: skip
    headers = [("content-type", b"application/cloudevents+json")]
    assert parse_decision(encoded(envelope), headers).moderator == "mod-42"
    assert parse_decision(encoded(envelope)).moderator == "mod-42"
    base64_envelope = {
        **{k: v for k, v in envelope.items() if k != "data"},
        "data_base64": base64.b64encode(encoded(RULING)).decode(),
    }
    assert parse_decision(encoded(base64_envelope)).video_id == "v-7"


def test_a_binary_mode_cloudevent_of_the_decision_type_is_parsed() -> None:
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", b"d-1"), ("ce_source", b"/moderation"),
        ("ce_type", DECISION_TYPE.encode()), ("content-type", b"application/json"),
    ]  # fmt: skip
    assert parse_decision(encoded(RULING), headers).video_id == "v-7"


def test_the_event_deepscreen_builds_parses_back_to_the_same_ruling() -> None:
    ruling = ModerationDecision.model_validate(RULING)
    event = decision_event(ruling, source="urn:deepscreen:cli")
    assert event.type == DECISION_TYPE == "deepscreen.decision.v1"
    assert event.subject == "v-7"
    assert parse_decision(event.model_dump_json().encode()) == ruling
    assert DecisionEvent.model_validate_json(event.model_dump_json()) == event


def test_the_same_ruling_sent_twice_has_one_event_id_and_another_ruling_another() -> None:
    ruling = ModerationDecision.model_validate(RULING)
    again = ModerationDecision.model_validate({**RULING, "reason": "reworded"})
    reversed_ = ModerationDecision.model_validate({**RULING, "decision": "false_positive"})
    assert decision_event(ruling).id == decision_event(again).id
    assert decision_event(ruling).id != decision_event(reversed_).id


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (None, None, "empty_payload"),
        (b"{not json", None, "not_json"),
        (b'"a string"', None, "not_an_object"),
        (encoded({**RULING, "decision": "maybe"}), None, "invalid_event"),
        (encoded({"video_id": "v-7"}), None, "invalid_event"),
        (
            encoded({"specversion": "1.0", "type": "media.uploaded", "data": RULING}),
            None,
            "unexpected_event_type",
        ),
        (
            encoded({"specversion": "1.0", "data": RULING}),  # an envelope without a type
            None,
            "unexpected_event_type",
        ),
        (
            encoded(RULING),
            [("ce_specversion", b"1.0"), ("ce_type", b"deepscreen.flag.v1")],
            "unexpected_event_type",
        ),
        (encoded(RULING), [("ce_specversion", b"0.3")], "unsupported_cloudevent"),
        (
            encoded({"specversion": "1.0", "type": DECISION_TYPE, "data": 5}),
            None,
            "invalid_envelope",
        ),
        (b" " * (1024 * 1024 + 1), None, "payload_too_large"),
    ],
)
def test_unusable_rulings_are_refused_with_a_reason_for_the_dead_letter(
    value: bytes | None, headers: list[tuple[str, bytes]] | None, reason: str
) -> None:
    with pytest.raises(InvalidDecision) as refused:
        parse_decision(value, headers)
    assert refused.value.reason == reason
    assert refused.value.detail


def test_an_upload_is_not_a_ruling_and_a_ruling_is_not_an_upload() -> None:
    upload = {"video_id": "v-1", "uri": "file:///m/v-1.mp4", "uploaded_at": "2026-11-20T10:00:00Z"}
    with pytest.raises(InvalidDecision):
        parse_decision(encoded(upload))
    with pytest.raises(InvalidUpload):
        parse_upload(encoded(RULING))


@given(
    value=st.one_of(st.none(), st.binary(max_size=512), st.text(max_size=256).map(str.encode)),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=20)), max_size=4),
)
def test_any_payload_either_parses_or_is_refused_with_a_reason(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    try:
        parse_decision(value, headers)
    except InvalidDecision as refused:
        assert refused.reason
