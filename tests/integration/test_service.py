"""The service against a real Kafka-compatible broker and a real Redis.

Each test gets its own topics and consumer group on a shared broker. The
model is the untrained reference one: these tests are about delivery, not
accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Outcome, Reason
from tests.integration.conftest import Topics, service_settings
from tests.integration.outcomes import file_upload, publish, upload_message, wait_for
from tests.support.broker import TansuBroker, committed_offsets, end_offsets
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)


class RedisBacked(NamedTuple):
    topics: Topics
    read: Callable[[str], float | None]  # a metric's value, from the service's registry


@pytest.fixture
def redis_backed(
    broker: TansuBroker, media: Path, reference_model: Path, redis_server: RedisServer,
    start_service: Any,
) -> RedisBacked:  # fmt: skip
    """A running service on fresh topics, caching in the real Redis."""
    topics = Topics.fresh().create(broker)
    service = start_service(
        service_settings(broker, topics, media, reference_model, redis_url=redis_server.url)
    )
    return RedisBacked(topics, service.app.metrics.registry.get_sample_value)


def wait_committed(broker: TansuBroker, topics: Topics, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    ends = end_offsets(broker.bootstrap, topics.uploads)
    while committed_offsets(broker.bootstrap, topics.group, topics.uploads) != ends:
        assert time.monotonic() < deadline, "committed offsets never reached the end"
        time.sleep(0.3)


def test_every_kind_of_upload_gets_exactly_one_outcome_and_offsets_reach_the_end(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh().create(broker)
    publish(broker, topics, [
        file_upload("face", media / "moving_face.mp4"),
        file_upload("two-people", media / "two_faces.mp4"),
        file_upload("nobody", media / "no_face.mp4"),
        file_upload("corrupt", media / "truncated.mp4"),
        file_upload("text-file", media / "not_a_video.mp4"),
        file_upload("missing", media / "deleted-before-we-got-there.mp4"),
        upload_message("escape", "file:///etc/passwd"),
        (b"garbage", b"{this is not json", [("origin", b"test")]),
    ])  # fmt: skip
    start_service(service_settings(broker, topics, media, reference_model))

    published = wait_for(broker, topics, expected=8, timeout_s=180)

    assert published.count == 8
    assert published.verdict_of("face").data.outcome in (
        Outcome.SUSPECTED_DEEPFAKE, Outcome.LIKELY_REAL)  # fmt: skip
    assert published.verdict_of("two-people").data.faces_tracked == 2
    assert published.verdict_of("nobody").data.reason is Reason.NO_FACE_DETECTED
    assert published.verdict_of("corrupt").data.reason is Reason.CORRUPT_CONTAINER
    assert published.verdict_of("text-file").data.reason is Reason.NOT_A_VIDEO
    reasons = sorted(letter.reason for letter, _ in published.dead_letters)
    assert reasons == ["not_found", "not_json", "outside_file_roots"]
    garbage = next(value for letter, value in published.dead_letters if letter.reason == "not_json")
    assert garbage == b"{this is not json"
    suspected = {v.data.video_id for v in published.verdicts
                 if v.data.outcome is Outcome.SUSPECTED_DEEPFAKE}  # fmt: skip
    assert {f.data.video_id for f in published.flags} == suspected
    wait_committed(broker, topics)


def test_a_re_upload_of_the_same_bytes_is_served_from_redis_without_decoding(
    redis_backed: RedisBacked, broker: TansuBroker, media: Path, redis_server: RedisServer
) -> None:
    topics, read = redis_backed
    publish(broker, topics, [file_upload("original", media / "moving_face.mp4")])
    wait_for(broker, topics, expected=1, timeout_s=120)
    clips_before = read("deepscreen_clips_scored_total")

    publish(broker, topics, [file_upload("re-upload", media / "moving_face.mp4")])
    published = wait_for(broker, topics, expected=2, timeout_s=60)

    original, again = published.verdict_of("original"), published.verdict_of("re-upload")
    assert again.data.cache_hit is True and original.data.cache_hit is False
    assert again.data.timeline == original.data.timeline
    assert again.data.content_sha256 == original.data.content_sha256
    assert read("deepscreen_cache_hits_total") == 1
    assert read("deepscreen_clips_scored_total") == clips_before  # nothing decoded or scored


def test_a_cached_verdict_that_no_longer_parses_is_screened_again_and_replaced_in_redis(
    redis_backed: RedisBacked, broker: TansuBroker, media: Path, redis_server: RedisServer
) -> None:
    topics, read = redis_backed
    publish(broker, topics, [file_upload("original", media / "no_face.mp4")])
    wait_for(broker, topics, expected=1, timeout_s=120)
    client = redis_server.client()
    [entry] = client.keys(f"test:{topics.group}:verdict:*")
    client.set(entry, b'{"outcome": "written by another version"}')

    publish(broker, topics, [file_upload("re-upload", media / "no_face.mp4")])
    published = wait_for(broker, topics, expected=2, timeout_s=120)
    publish(broker, topics, [file_upload("again", media / "no_face.mp4")])
    published = wait_for(broker, topics, expected=3, timeout_s=60)

    assert published.dead_letters == []
    assert published.verdict_of("re-upload").data.cache_hit is False  # screened again
    assert published.verdict_of("again").data.cache_hit is True  # from the replaced entry
    assert read("deepscreen_cache_corrupt_entries_total") == 1
    assert client.get(entry) is not None
    client.close()


def test_screening_goes_on_while_redis_is_down_and_uses_it_again_when_back(
    redis_backed: RedisBacked, broker: TansuBroker, media: Path, redis_server: RedisServer
) -> None:
    topics, read = redis_backed
    redis_server.stop()
    try:
        publish(broker, topics, [file_upload("during-outage", media / "two_faces.mp4")])
        published = wait_for(broker, topics, expected=1, timeout_s=120)
        assert published.verdict_of("during-outage").data.faces_tracked == 2
        assert read("deepscreen_cache_up") == 0
        assert (read("deepscreen_cache_errors_total") or 0) >= 1
    finally:
        redis_server.start()
    time.sleep(1.0)  # past retry_after_s: the cache is tried again

    publish(broker, topics, [file_upload("after", media / "no_face.mp4")])
    wait_for(broker, topics, expected=2, timeout_s=120)
    publish(broker, topics, [file_upload("after-again", media / "no_face.mp4")])
    published = wait_for(broker, topics, expected=3, timeout_s=60)

    assert published.verdict_of("after-again").data.cache_hit is True
    assert read("deepscreen_cache_up") == 1


def test_when_one_of_two_consumers_leaves_its_partitions_move_and_nothing_is_lost(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any
) -> None:
    topics = Topics.fresh(partitions=4).create(broker)
    settings = service_settings(broker, topics, media, reference_model)
    first, second = start_service(settings), start_service(settings)
    publish(broker, topics, [
        file_upload(f"clip-{i}", media / ("no_face.mp4" if i % 2 else "not_a_video.mp4"))
        for i in range(4)
    ])  # fmt: skip
    wait_for(broker, topics, expected=4, timeout_s=120)
    first.stop()  # leaves the group; its partitions go to the second

    publish(broker, topics, [
        file_upload(f"later-{i}", media / ("no_face.mp4" if i % 2 else "not_a_video.mp4"))
        for i in range(8)
    ])  # fmt: skip
    published = wait_for(broker, topics, expected=12, timeout_s=120)

    assert sorted(v.data.video_id for v in published.verdicts) == sorted(
        [f"clip-{i}" for i in range(4)] + [f"later-{i}" for i in range(8)]
    )
    assert len(second.app.service._source.assignment()) == 4
    wait_committed(broker, topics)


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.fixed_dictionaries(
        {"video_id": st.text(max_size=30), "uri": st.text(max_size=60),
         "uploaded_at": st.text(max_size=30)},
        optional={"sha256": st.text(max_size=70), "size_bytes": st.integers(),
                  "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5))},
    ).map(lambda d: __import__("json").dumps(d).encode()),
)  # fmt: skip


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(payloads, min_size=15, max_size=15))
def test_arbitrary_payloads_never_crash_the_consumer(
    broker: TansuBroker, media: Path, reference_model: Path, start_service: Any,
    batch: list[bytes],
) -> None:  # fmt: skip
    topics = Topics.fresh().create(broker)
    service = start_service(service_settings(broker, topics, media, reference_model))
    publish(broker, topics, [(None, value, []) for value in batch])
    published = wait_for(broker, topics, expected=len(batch), timeout_s=120)
    assert published.count == len(batch)
    assert service.thread.is_alive()
    service.stop()
