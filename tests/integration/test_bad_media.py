"""Media that must be refused, or answered with the right reason, on the real broker.

An audio-only upload is a well-formed container without a video track: it gets an
`unreadable` verdict with reason `no_video_stream`, not `corrupt_container`. A hard link
under a file root can name a file outside it: it is dead-lettered (`hard_link`), and the
partition's offsets still reach the end.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from schemas import Outcome, Reason
from tests.conftest import SyntheticVideos
from tests.integration.conftest import Topics, service_settings
from tests.integration.outcomes import file_upload, publish, wait_for
from tests.support.broker import TansuBroker, committed_offsets, end_offsets

pytestmark = pytest.mark.timeout(300)


def _wait_committed(broker: TansuBroker, topics: Topics, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    ends = end_offsets(broker.bootstrap, topics.uploads)
    while committed_offsets(broker.bootstrap, topics.group, topics.uploads) != ends:
        assert time.monotonic() < deadline, "committed offsets never reached the end"
        time.sleep(0.3)


def test_an_audio_only_upload_is_unreadable_with_no_video_stream(
    broker: TansuBroker, tmp_path: Path, synthetic: SyntheticVideos, reference_model: Path,
    start_service: Any,
) -> None:  # fmt: skip
    root = tmp_path / "media"
    root.mkdir()
    tone = shutil.copy(synthetic.audio_only, root / "tone.mp4")
    topics = Topics.fresh(partitions=1).create(broker)
    publish(broker, topics, [file_upload("podcast", Path(tone))])
    start_service(service_settings(broker, topics, root, reference_model))

    published = wait_for(broker, topics, expected=1, timeout_s=120)

    assert published.dead_letters == []
    verdict = published.verdict_of("podcast").data
    assert verdict.outcome is Outcome.UNREADABLE
    assert verdict.reason is Reason.NO_VIDEO_STREAM
    _wait_committed(broker, topics)


def test_a_hard_link_to_a_file_outside_the_roots_is_dead_lettered_and_committed(
    broker: TansuBroker, tmp_path: Path, synthetic: SyntheticVideos, reference_model: Path,
    start_service: Any,
) -> None:  # fmt: skip
    root, outside = tmp_path / "media", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    secret = shutil.copy(synthetic.not_a_video, outside / "secret.mp4")
    os.link(secret, root / "linked.mp4")  # same inode, one name inside the root
    plain = shutil.copy(synthetic.not_a_video, root / "plain.mp4")
    topics = Topics.fresh(partitions=1).create(broker)
    publish(broker, topics, [
        file_upload("linked", root / "linked.mp4"),
        file_upload("plain", Path(plain)),
    ])  # fmt: skip
    start_service(service_settings(broker, topics, root, reference_model))

    published = wait_for(broker, topics, expected=2, timeout_s=120)

    [(letter, _)] = published.dead_letters
    assert letter.reason == "hard_link"
    assert letter.attempts == 1  # not retried: it fails the same way every time
    assert [v.data.video_id for v in published.verdicts] == ["plain"]
    _wait_committed(broker, topics)
