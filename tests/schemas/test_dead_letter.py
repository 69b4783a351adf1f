from __future__ import annotations

from datetime import UTC, datetime

from schemas import DeadLetter


def test_a_dead_letter_travels_as_kafka_headers_and_back() -> None:
    letter = DeadLetter(
        source_topic="media.uploads",
        partition=3,
        offset=41,
        error_class="ValidationError",
        reason="invalid_event",
        detail="uri: scheme must be one of file, http, https, s3",
        attempts=1,
        failed_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
    )
    headers = letter.to_headers()
    assert ("deepscreen-source-topic", b"media.uploads") in headers
    assert ("deepscreen-offset", b"41") in headers
    assert DeadLetter.from_headers([*headers, ("traceparent", b"00-x")]) == letter
