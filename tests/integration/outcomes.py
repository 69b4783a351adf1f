"""Read what a service published: verdicts, flags and dead letters."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas import DeadLetter, DeepfakeFlag, VerdictEvent
from tests.integration.conftest import Topics
from tests.support.broker import TansuBroker, consume_all, produce


def upload_message(video_id: str, uri: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    event = {"video_id": video_id, "uri": uri, "uploaded_at": "2026-11-20T10:00:00Z"}
    return video_id.encode(), json.dumps(event).encode(), []


def file_upload(video_id: str, path: Path) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return upload_message(video_id, path.resolve().as_uri())


def publish(broker: TansuBroker, topics: Topics, messages: Sequence[tuple[bytes | None,
            bytes | None, list[tuple[str, bytes]]]]) -> list[tuple[int, int]]:  # fmt: skip
    return produce(broker.bootstrap, topics.uploads, messages)


@dataclass
class Published:
    verdicts: list[VerdictEvent]
    flags: list[DeepfakeFlag]
    dead_letters: list[tuple[DeadLetter, bytes | None]]

    @property
    def count(self) -> int:
        return len(self.verdicts) + len(self.dead_letters)

    def verdict_of(self, video_id: str) -> VerdictEvent:
        [event] = [v for v in self.verdicts if v.data.video_id == video_id]
        return event


def read(broker: TansuBroker, topics: Topics, expected: int, timeout_s: float = 1.0) -> Published:
    verdicts = consume_all(broker.bootstrap, topics.verdicts, expected, timeout_s)
    letters = consume_all(broker.bootstrap, topics.dlq, expected, timeout_s)
    flags = consume_all(broker.bootstrap, topics.flags, expected, timeout_s)
    return Published(
        verdicts=[VerdictEvent.model_validate_json(r.value) for r in verdicts],
        flags=[DeepfakeFlag.model_validate_json(r.value) for r in flags],
        dead_letters=[
            (DeadLetter.from_headers([(k, v or b"") for k, v in r.headers]), r.value)
            for r in letters
        ],
    )


def wait_for(broker: TansuBroker, topics: Topics, expected: int, timeout_s: float) -> Published:
    """Outcomes once at least `expected` are published (or what there is at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        published = read(broker, topics, expected)
        if published.count >= expected or time.monotonic() > deadline:
            return published
        time.sleep(0.5)
