"""The fault matrix: 50 uploads through every fault in turn, and not one lost.

`deepscreen serve` runs as a process against a broker it reaches only through
a proxy, with a real Redis; every upload is a video of its own bytes, so each
is screened (no cache hits). While it screens 50 uploads (and poison records
interleaved with them): the link to the broker is cut for 20 s, Redis is
stopped and started again, the service is SIGKILLed and started again. At the
end every upload has its outcome (a duplicate only for uncommitted work, with
the same event id), every poison record its dead letter, and the group's
commits reach the end of every partition (counted from the offsets the records
were written at; Tansu under-reports end offsets).

Run on its own with `pytest -m faults`.
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import DeadLetter, VerdictEvent
from tests.integration.conftest import Topics
from tests.integration.outcomes import file_upload
from tests.support.broker import committed_offsets, consume_all, produce, raw_header
from tests.support.proxy import ProxiedBroker
from tests.support.redis_server import RedisServer
from tests.support.serve import ServeProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

UPLOADS = 50
MiB = 1024 * 1024


@pytest.fixture
def site() -> Iterator[ProxiedBroker]:
    made = ProxiedBroker()
    yield made
    made.close()


def distinct_copy(media: Path, name: str, number: int) -> Path:
    """`name` with a `free` box of its own appended: other bytes (no cache hit), same video."""
    source = media / name
    copy = media / "matrix" / f"{number:02d}-{name}"
    copy.parent.mkdir(exist_ok=True)
    payload = f"fault matrix upload {number}".encode()
    copy.write_bytes(source.read_bytes() + (8 + len(payload)).to_bytes(4, "big") + b"free"
                     + payload)  # fmt: skip
    return copy


def batch(media: Path, start: int, count: int) -> list[Any]:
    names = ["no_face.mp4", "moving_face.mp4", "no_face.mp4", "two_faces.mp4"]
    return [
        file_upload(f"u-{i:02d}", distinct_copy(media, names[i % len(names)], i))
        for i in range(start, start + count)
    ]


def poison(tag: str) -> list[Any]:
    oversized = json.dumps({"video_id": tag, "padding": "x" * (2 * MiB)}).encode()
    deep = b"[" * 50_000 + b"]" * 50_000
    return [
        (f"{tag}-oversized".encode(), oversized, []),
        (f"{tag}-deep".encode(), deep, []),
        (f"{tag}-header".encode(), b"not json", [raw_header(b"\xff\xfe-key", b"v")]),
    ]


class Ledger:
    """What was written where, and what came out."""

    def __init__(self, site: ProxiedBroker, topics: Topics) -> None:
        self.site = site
        self.topics = topics
        self.ends: dict[int, int] = {}
        self.poison_keys: set[bytes] = set()

    def write(self, messages: list[Any]) -> None:
        placed = produce(self.site.broker.bootstrap, self.topics.uploads, messages,
                         max_request_size=8 * MiB)  # fmt: skip
        for partition, offset in placed:
            self.ends[partition] = max(self.ends.get(partition, 0), offset + 1)
        self.poison_keys |= {key for key, *_ in messages if not key.startswith(b"u-")}

    def verdicts(self) -> dict[str, set[str]]:
        """Video id → the event ids of its verdicts."""
        found: dict[str, set[str]] = defaultdict(set)
        for record in consume_all(self.site.broker.bootstrap, self.topics.verdicts, 10_000, 1.0):
            event = VerdictEvent.model_validate_json(record.value)
            found[event.data.video_id].add(event.id)
        return found

    def dead_letters(self) -> dict[bytes, list[DeadLetter]]:
        found: dict[bytes, list[DeadLetter]] = defaultdict(list)
        for record in consume_all(self.site.broker.bootstrap, self.topics.dlq, 10_000, 1.0):
            found[record.key].append(DeadLetter.from_headers(record.headers))
        return found

    def wait_for_uploads(self, ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ids <= set(self.verdicts()):
            assert time.monotonic() < deadline, f"missing: {sorted(ids - set(self.verdicts()))}"
            time.sleep(1)

    def committed_to_the_end(self) -> bool:
        committed = committed_offsets(self.site.broker.bootstrap, self.topics.group,
                                      self.topics.uploads)  # fmt: skip
        return all(committed.get(p, -1) >= end for p, end in self.ends.items())


def ids(start: int, count: int) -> set[str]:
    return {f"u-{i:02d}" for i in range(start, start + count)}


def test_fifty_uploads_through_an_outage_a_redis_restart_and_a_sigkill_lose_nothing(
    site: ProxiedBroker, media: Path, reference_model: Path, redis_server: RedisServer
) -> None:
    topics = Topics.fresh().create(site.broker)
    ledger = Ledger(site, topics)
    env = {"DEEPSCREEN_REDIS__URL": redis_server.url, "DEEPSCREEN_REDIS__KEY_PREFIX":
           f"matrix:{topics.group}", "DEEPSCREEN_REDIS__RETRY_AFTER_S": "0.5"}  # fmt: skip
    services = [ServeProcess(site.bootstrap, topics.env(), media, reference_model, **env).start()]
    try:
        services[0].wait_ready()
        ledger.write(batch(media, 0, 10) + poison("p1"))
        ledger.wait_for_uploads(ids(0, 5), timeout_s=180)

        # 1. The link to the broker is cut for 20 s, with uploads in flight.
        ledger.write(batch(media, 10, 10))
        site.proxy.cut()
        time.sleep(20)
        site.proxy.restore()
        ledger.wait_for_uploads(ids(0, 20), timeout_s=240)

        # 2. Redis stops and starts again: screening goes on without it.
        redis_server.stop()
        ledger.write(batch(media, 20, 10) + poison("p2"))
        ledger.wait_for_uploads(ids(20, 5), timeout_s=180)
        redis_server.start()
        ledger.wait_for_uploads(ids(20, 10), timeout_s=180)

        # 3. SIGKILL mid-batch; a new process takes over the group's uncommitted work.
        ledger.write(batch(media, 30, 10))
        time.sleep(3)
        services[0].kill(signal.SIGKILL)
        services[0].process.wait(timeout=30)  # type: ignore[union-attr]
        services.append(
            ServeProcess(site.bootstrap, topics.env(), media, reference_model, **env).start()
        )
        services[1].wait_ready()

        # 4. The rest, with more poison.
        ledger.write(batch(media, 40, 10) + poison("p3"))
        ledger.wait_for_uploads(ids(0, UPLOADS), timeout_s=300)

        deadline = time.monotonic() + 60
        while not (
            ledger.committed_to_the_end() and ledger.poison_keys <= set(ledger.dead_letters())
        ):
            assert time.monotonic() < deadline, "commits or dead letters never reached the end"
            time.sleep(1)
    finally:
        for service in services:
            service.reap()

    verdicts = ledger.verdicts()
    assert set(verdicts) == ids(0, UPLOADS)  # every upload, nothing else
    duplicated = {video for video, events in verdicts.items() if len(events) > 1}
    assert duplicated == set(), f"a redone upload published a different event: {duplicated}"
    letters = ledger.dead_letters()
    assert set(letters) == ledger.poison_keys
    reasons = {key: {letter.reason for letter in found} for key, found in letters.items()}
    assert all(
        reasons[key] == {"payload_too_large"} for key in reasons if key.endswith(b"oversized")
    )
    assert all(
        reasons[key] == {"not_json"} for key in reasons if key.endswith((b"deep", b"header"))
    )
