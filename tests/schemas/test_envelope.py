from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.envelope import InvalidUpload, parse_upload

EVENT = {
    "video_id": "v-1",
    "uri": "file:///media/v-1.mp4",
    "uploaded_at": "2026-11-20T10:00:00Z",
}


def encoded(document: object) -> bytes:
    return json.dumps(document).encode()


def test_a_bare_event_is_accepted() -> None:
    assert parse_upload(encoded(EVENT)).video_id == "v-1"


def test_a_structured_cloudevent_is_unwrapped() -> None:
    envelope = {
        "specversion": "1.0", "id": "e-1", "source": "/uploads", "type": "media.uploaded",
        "datacontenttype": "application/json", "data": EVENT,
    }  # fmt: skip
    headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]
    assert parse_upload(encoded(envelope), headers).uri == EVENT["uri"]
    assert parse_upload(encoded(envelope)).video_id == "v-1"  # recognised without the header


def test_structured_data_may_be_base64() -> None:
    envelope = {
        "specversion": "1.0", "id": "e-1", "source": "/u", "type": "t",
        "data_base64": base64.b64encode(encoded(EVENT)).decode(),
    }  # fmt: skip
    assert parse_upload(encoded(envelope)).video_id == "v-1"


def test_a_binary_mode_cloudevent_carries_its_attributes_in_ce_headers() -> None:
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_source", b"/uploads"),
        ("ce_type", b"media.uploaded"), ("content-type", b"application/json"),
    ]  # fmt: skip
    assert parse_upload(encoded(EVENT), headers).video_id == "v-1"


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (None, None, "empty_payload"),
        (b"", None, "empty_payload"),
        (b"\xff\xfe not json", None, "not_json"),
        (b"[1, 2]", None, "not_an_object"),
        (encoded({**EVENT, "uri": "gopher://x"}), None, "invalid_event"),
        (encoded({"video_id": "v"}), None, "invalid_event"),
        (encoded(EVENT), [("ce_specversion", b"0.3")], "unsupported_cloudevent"),
        (encoded({"specversion": "1.0", "data": 5}), None, "invalid_envelope"),
        (encoded({"specversion": "1.0", "data_base64": "%%%"}), None, "invalid_envelope"),
        (b" " * (1024 * 1024 + 1), None, "payload_too_large"),
    ],
)
def test_unusable_messages_are_refused_with_a_reason(
    value: bytes | None, headers: list[tuple[str, bytes]] | None, reason: str
) -> None:
    with pytest.raises(InvalidUpload) as refused:
        parse_upload(value, headers)
    assert refused.value.reason == reason
    assert refused.value.detail


@given(
    value=st.one_of(st.none(), st.binary(max_size=512), st.text(max_size=256).map(str.encode)),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=20)), max_size=4),
)
def test_any_payload_either_parses_or_is_refused_with_a_reason(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    try:
        parse_upload(value, headers)
    except InvalidUpload as refused:
        assert refused.reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from([*EVENT, "specversion", "data"]), children, max_size=6
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_document_either_parses_or_is_refused_with_a_reason(document: object) -> None:
    try:
        parse_upload(encoded(document))
    except InvalidUpload as refused:
        assert refused.reason


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser's stack
        b'{"video_id": "v", "uploaded_at": 1' + b"0" * 5000 + b"}",  # past the 4,300-digit cap
    ],
    ids=["deep-nesting", "5000-digit-integer"],
)
def test_json_the_parser_cannot_read_is_bad_input_not_a_crash(value: bytes) -> None:
    with pytest.raises(InvalidUpload) as refused:
        parse_upload(value)
    assert refused.value.reason == "not_json"
