from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import VideoUploaded

VALID = {
    "video_id": "v-123",
    "uri": "https://cdn.example.com/u/v-123.mp4",
    "uploaded_at": "2026-11-20T10:00:00Z",
}


def test_an_upload_needs_only_id_uri_and_time() -> None:
    upload = VideoUploaded.model_validate(VALID)
    assert upload.video_id == "v-123"
    assert upload.metadata == {}


def test_fields_the_producer_adds_later_are_ignored() -> None:
    upload = VideoUploaded.model_validate({**VALID, "campaign": "spring"})
    assert "campaign" not in upload.model_dump()


@pytest.mark.parametrize("uri", ["file:///media/a.mp4", "http://h/a", "s3://bucket/key.mp4"])
def test_file_http_and_s3_uris_are_accepted(uri: str) -> None:
    assert VideoUploaded.model_validate({**VALID, "uri": uri}).uri == uri


@pytest.mark.parametrize("uri", ["ftp://h/a.mp4", "/media/a.mp4", "javascript:alert(1)", ""])
def test_other_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValidationError):
        VideoUploaded.model_validate({**VALID, "uri": uri})


def test_sha256_must_be_64_hex_digits_and_is_lowercased() -> None:
    upload = VideoUploaded.model_validate({**VALID, "sha256": "AB" * 32})
    assert upload.sha256 == "ab" * 32
    with pytest.raises(ValidationError):
        VideoUploaded.model_validate({**VALID, "sha256": "xyz"})


@pytest.mark.parametrize(
    "field",
    [
        {"video_id": ""},
        {"video_id": "x" * 257},
        {"video_id": "bad\nid"},
        {"size_bytes": -1},
        {"metadata": {f"k{i}": "v" for i in range(65)}},
        {"metadata": {"k": "v" * 1025}},
    ],
)
def test_unbounded_or_malformed_fields_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VideoUploaded.model_validate({**VALID, **field})
