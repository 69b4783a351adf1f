"""`deepscreen serve` as a process: killed mid-batch, or asked to stop, nothing is lost."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from consumer.service import SHUTDOWN_TEARDOWN_S
from tests.integration.conftest import Topics
from tests.integration.outcomes import file_upload, publish, read, upload_message, wait_for
from tests.support.broker import TansuBroker, committed_offsets
from tests.support.gated_site import GatedSite
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def serve(broker: TansuBroker, media: Path, reference_model: Path) -> Iterator[type]:
    made: list[ServeProcess] = []

    def factory(topics: Topics, **env: str) -> ServeProcess:
        made.append(ServeProcess(broker.bootstrap, topics.env(), media, reference_model, **env))
        return made[-1]

    yield factory  # type: ignore[misc]
    for process in made:
        process.reap()


UPLOADS = 10


def uploads(media: Path) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    names = ["moving_face.mp4", "two_faces.mp4", "no_face.mp4"]
    return [file_upload(f"video-{i:02d}", media / names[i % 3]) for i in range(UPLOADS)]


HELD = 2  # the offset whose media fetch hangs until the test opens the gate


def test_a_consumer_killed_mid_batch_loses_nothing_and_repeats_only_uncommitted_work(
    broker: TansuBroker, media: Path, serve: type
) -> None:
    topics = Topics.fresh(partitions=1).create(broker)
    with GatedSite(media) as site:
        messages = uploads(media)
        messages[HELD] = upload_message(f"video-{HELD:02d}", site.url("moving_face.mp4"))
        publish(broker, topics, messages)
        http_media = {
            "DEEPSCREEN_MEDIA__ALLOWED_HOSTS": '["127.0.0.1"]',
            "DEEPSCREEN_MEDIA__ALLOW_PRIVATE_ADDRESSES": "true",
            "DEEPSCREEN_MEDIA__READ_TIMEOUT_S": "600",
            "DEEPSCREEN_MEDIA__TOTAL_TIMEOUT_S": "600",
        }
        first = serve(topics, **http_media).start()
        # Offsets 0 and 1 finish, 2 hangs in its fetch, the other slot goes on past it.
        before = wait_for(broker, topics, expected=HELD + 2, timeout_s=180)
        assert site.held.is_set()
        first.kill(signal.SIGKILL)
        first.process.wait(timeout=10)
        committed_at_kill = committed_offsets(broker.bootstrap, topics.group, topics.uploads)
        assert committed_at_kill.get(0, 0) == HELD  # never past the unfinished offset
        done_uncommitted = {v.data.video_id for v in before.verdicts} - {
            f"video-{i:02d}" for i in range(HELD)
        }
        assert done_uncommitted, "some work past the held offset was finished before the kill"

        site.open()
        serve(topics, **http_media).start()
        wait_for(broker, topics, expected=UPLOADS + len(done_uncommitted), timeout_s=300)
        time.sleep(2)
        published = read(broker, topics, UPLOADS + 10)

    by_video = Counter(v.data.video_id for v in published.verdicts)
    assert set(by_video) == {f"video-{i:02d}" for i in range(UPLOADS)}  # nothing lost
    for offset in range(HELD):  # committed before the kill: never redone
        assert by_video[f"video-{offset:02d}"] == 1
    for video_id in done_uncommitted:  # finished but not committed: redone (at least once)
        assert by_video[video_id] == 2
    for video_id, count in by_video.items():
        ids = {v.id for v in published.verdicts if v.data.video_id == video_id}
        assert len(ids) == 1, f"{video_id} was published {count} times with different ids"


def test_sigterm_drains_in_flight_work_within_the_limit_and_loses_nothing(
    broker: TansuBroker, media: Path, serve: type
) -> None:
    topics = Topics.fresh(partitions=1).create(broker)
    publish(broker, topics, uploads(media))
    first = serve(topics).start()
    first.wait_ready()
    wait_for(broker, topics, expected=1, timeout_s=180)
    asked = time.monotonic()
    first.kill(signal.SIGTERM)
    exit_code = first.process.wait(timeout=60)
    took = time.monotonic() - asked
    assert exit_code == 0, first.output()
    assert took < 30 + 5, f"took {took:.1f} s to stop"
    done = read(broker, topics, UPLOADS)
    committed = committed_offsets(broker.bootstrap, topics.group, topics.uploads).get(0, 0)
    assert committed == done.count  # every outcome published was committed, nothing more

    serve(topics).start()
    published = wait_for(broker, topics, expected=UPLOADS, timeout_s=300)
    assert sorted(v.data.video_id for v in published.verdicts) == [
        f"video-{i:02d}" for i in range(UPLOADS)
    ]


DRAIN_S = 4.0


def logged_at(log: str, event: str) -> float:
    """When the service logged `event` (its first JSON line of that event), in seconds."""
    for line in log.splitlines():
        if line.startswith("{") and json.loads(line).get("event") == event:
            return datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
    raise AssertionError(f"no {event} in the log:\n{log}")


def test_sigterm_stops_within_the_drain_plus_teardown_and_commits_work_done_in_the_drain(
    broker: TansuBroker, media: Path, serve: type
) -> None:
    """One video finishes during the drain, one outlasts it: the first is committed (a
    restarted consumer does not redo it), the second is handed back at the limit, and the
    process is gone within `DEEPSCREEN_DRAIN_SECONDS` plus the documented teardown bound."""
    topics = Topics.fresh(partitions=1).create(broker)
    http_media = {
        "DEEPSCREEN_MEDIA__ALLOWED_HOSTS": '["127.0.0.1"]',
        "DEEPSCREEN_MEDIA__ALLOW_PRIVATE_ADDRESSES": "true",
        "DEEPSCREEN_MEDIA__READ_TIMEOUT_S": "600",
        "DEEPSCREEN_MEDIA__TOTAL_TIMEOUT_S": "600",
        "DEEPSCREEN_DRAIN_SECONDS": str(DRAIN_S),
        "DEEPSCREEN_DETECTOR__EXTRACTION_WORKERS": "2",  # idle at the stop: all must go
    }
    with GatedSite(media) as in_drain, GatedSite(media) as past_drain:
        messages = [
            file_upload("video-00", media / "moving_face.mp4"),  # done before the SIGTERM
            upload_message("video-01", in_drain.url("moving_face.mp4")),  # done in the drain
            upload_message("video-02", past_drain.url("two_faces.mp4")),  # outlasts the drain
            *(file_upload(f"video-{i:02d}", media / "no_face.mp4") for i in range(3, 5)),
        ]
        publish(broker, topics, messages)
        first = serve(topics, **http_media).start()
        wait_for(broker, topics, expected=1, timeout_s=180)
        assert in_drain.held.wait(60) and past_drain.held.wait(60)
        asked = time.monotonic()
        first.kill(signal.SIGTERM)
        time.sleep(0.5)
        in_drain.open()  # video-01 is fetched and screened while the service drains
        exit_code = first.process.wait(timeout=120)
        took = time.monotonic() - asked
        log = first.output()
        assert exit_code == 0, log
        before = read(broker, topics, len(messages))
        assert sorted(v.data.video_id for v in before.verdicts) == ["video-00", "video-01"], log
        drained = logged_at(log, "drain_timeout") - logged_at(log, "draining")
        assert drained <= DRAIN_S + 0.5, f"the drain took {drained:.1f} s\n{log}"  # no extra wait
        bound = DRAIN_S + SHUTDOWN_TEARDOWN_S
        assert took <= bound + 1.0, f"took {took:.1f} s to stop (bound {bound:.1f} s)\n{log}"
        committed = committed_offsets(broker.bootstrap, topics.group, topics.uploads).get(0, 0)
        assert committed == 2, log  # video-01, finished in the drain, is committed

        past_drain.open()
        serve(topics, **http_media).start()
        published = wait_for(broker, topics, expected=len(messages), timeout_s=300)
        time.sleep(2)
        published = read(broker, topics, len(messages) + 5)
    by_video = Counter(v.data.video_id for v in published.verdicts)
    assert by_video == {f"video-{i:02d}": 1 for i in range(len(messages))}, by_video
