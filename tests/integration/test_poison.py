"""Records built to hurt: each gets exactly one outcome, and its partition moves on.

Oversized and malformed upload events, producers that put our own dead-letter
headers on their records, events whose bytes do not match their sha256: all
against the real broker, each checked to reach the end of the partition's
commits (counted from the offsets the records were written at, since Tansu
under-reports end offsets for batches).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from schemas import DeadLetter
from tests.integration.conftest import Topics, service_settings
from tests.integration.outcomes import Published, file_upload, wait_for
from tests.support.broker import TansuBroker, committed_offsets, consume_all, produce

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024


def publish_all(broker: TansuBroker, topics: Topics, messages: list[Any]) -> dict[int, int]:
    """Publish (oversized records too); the commit position each partition must reach."""
    placed = produce(broker.bootstrap, topics.uploads, messages, max_request_size=8 * MiB)
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def wait_committed_to(
    broker: TansuBroker, topics: Topics, ends: dict[int, int], timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        committed = committed_offsets(broker.bootstrap, topics.group, topics.uploads)
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"commits stuck at {committed}, expected {ends}"
        time.sleep(0.3)


def reasons(published: Published) -> list[str]:
    return sorted(letter.reason for letter, _ in published.dead_letters)


def test_oversized_and_near_limit_events_are_dead_lettered_and_their_partition_moves_on(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh().create(broker)
    oversized = json.dumps(
        {
            "video_id": "huge",
            "uri": "file:///x.mp4",
            "uploaded_at": "2026-11-20T10:00:00Z",
            "metadata": {"padding": "x" * (2 * MiB)},
        }
    ).encode()
    near_limit = b"{" + b"y" * (MiB - 300)  # not JSON, and its dead letter would pass 1 MiB
    ends = publish_all(broker, topics, [
        file_upload("before", media / "no_face.mp4"),
        (b"huge", oversized, [("origin", b"test")]),
        (b"near", near_limit, [("origin", b"x" * 400)]),
        file_upload("after", media / "no_face.mp4"),
    ])  # fmt: skip
    start_service(service_settings(broker, topics, media, reference_model))

    published = wait_for(broker, topics, expected=4, timeout_s=120)

    assert {v.data.video_id for v in published.verdicts} == {"before", "after"}
    assert reasons(published) == ["not_json", "payload_too_large"]
    letters = {r.key: r for r in consume_all(broker.bootstrap, topics.dlq, 2)}
    huge = dict(letters[b"huge"].headers)
    assert int(huge["deepscreen-value-bytes"]) == len(oversized)
    assert huge["deepscreen-value-sha256"].decode() == hashlib.sha256(oversized).hexdigest()
    assert huge["deepscreen-value-truncated"] == b"true"
    assert oversized.startswith(letters[b"huge"].value) and len(letters[b"huge"].value) < MiB
    near = dict(letters[b"near"].headers)
    assert near["origin"] == b"x" * 400  # the originals travel with it
    assert near_limit.startswith(letters[b"near"].value)
    wait_committed_to(broker, topics, ends)


def test_our_own_headers_on_an_upload_cannot_pass_for_the_dead_letters(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh().create(broker)
    forged = [("deepscreen-reason", b"all_good"), ("deepscreen-offset", b"999")]
    ends = publish_all(broker, topics, [(b"forged", b"not json", forged)])
    start_service(service_settings(broker, topics, media, reference_model))

    published = wait_for(broker, topics, expected=1, timeout_s=60)

    [(letter, _)] = published.dead_letters
    assert (letter.reason, letter.offset) == ("not_json", 0)
    [record] = consume_all(broker.bootstrap, topics.dlq, 1)
    headers = record.headers
    assert ("original-deepscreen-reason", b"all_good") in headers  # kept, under a prefix
    assert [value for name, value in headers if name == "deepscreen-reason"] == [b"not_json"]
    wait_committed_to(broker, topics, ends)


def test_bad_json_is_dead_lettered_as_bad_input_and_a_sha256_mismatch_is_final_at_once(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh().create(broker)
    deep = b"[" * 100_000 + b"]" * 100_000
    digits = b'{"video_id": "n", "uri": "file:///x.mp4", "uploaded_at": 1' + b"0" * 5000 + b"}"
    wrong = json.dumps(
        {
            "video_id": "wrong-hash",
            "uri": (media / "no_face.mp4").resolve().as_uri(),
            "uploaded_at": "2026-11-20T10:00:00Z",
            "sha256": "0" * 64,
        }
    ).encode()
    ends = publish_all(broker, topics, [(b"deep", deep, []), (b"digits", digits, []),
                                        (b"wrong-hash", wrong, [])])  # fmt: skip
    service = start_service(service_settings(broker, topics, media, reference_model))

    published = wait_for(broker, topics, expected=3, timeout_s=60)

    assert published.count == 3
    letters = {
        record.key: DeadLetter.from_headers(record.headers)
        for record in consume_all(broker.bootstrap, topics.dlq, 3)
    }
    assert (letters[b"deep"].reason, letters[b"digits"].reason) == ("not_json", "not_json")
    assert (letters[b"wrong-hash"].reason, letters[b"wrong-hash"].attempts) == (
        "sha256_mismatch",
        1,
    )
    read = service.app.metrics.registry.get_sample_value
    assert read("deepscreen_fetch_retries_total", {"reason": "sha256_mismatch"}) is None
    wait_committed_to(broker, topics, ends)
