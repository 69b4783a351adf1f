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


def test_a_dead_letter_keeps_the_original_within_its_size_and_says_what_it_left_out() -> None:
    from schemas.dead_letter import bounded_original

    value = bytes(range(256)) * 40  # 10,240 bytes
    headers = [("a", b"1" * 100), ("deepscreen-reason", b"forged"), ("big", b"2" * 5000)]
    kept = bounded_original(value, headers, max_bytes=4000)
    assert kept.headers == [("a", b"1" * 100), ("original-deepscreen-reason", b"forged")]
    assert kept.headers_dropped == 1  # "big" does not fit a quarter of the budget
    header_bytes = sum(len(n) + len(v) + 8 for n, v in kept.headers)
    assert kept.value == value[: 4000 - header_bytes] and kept.value_truncated
    assert kept.value_bytes == len(value)

    small = bounded_original(b"tiny", [("a", b"1")], max_bytes=4000)
    assert (small.value, small.value_truncated, small.headers_dropped) == (b"tiny", False, 0)
