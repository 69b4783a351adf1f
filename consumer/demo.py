"""`deepscreen demo`: the whole service on one machine, with nothing installed but Python.

It starts the embedded broker, uses the Redis on 127.0.0.1:6379 when one
answers (an in-process cache otherwise), publishes upload events for sample
videos (plus a still image cut from the first, a copy of a video signed with
content credentials that declare it AI-generated, a re-upload of the same
bytes, a file that is not a video and a message that is not JSON, to show
image screening, the credentials signal, the cache, an `unreadable` verdict
and a dead letter), runs the real service on them, prints each flag as it
arrives on the moderation topic, and exits once every upload has its outcome.
The signing certificate is made on the fly (`consumer.signing`) and is not on
any trust list.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer

from consumer.app import build_app
from consumer.embedded import EmbeddedBroker, embedded_kafka_settings
from consumer.settings import (
    DetectorSettings,
    HttpSettings,
    MediaSettings,
    RedisSettings,
    Settings,
)
from consumer.signing import TestAuthority
from detector.config import PACKAGED_MODEL
from detector.media_files import video_files
from schemas.cloudevents import DeepfakeFlag, VerdictEvent
from schemas.dead_letter import DeadLetter
from schemas.verdict import Signal

UPLOADS, FLAGS, VERDICTS, DLQ = "media.uploads", "moderation.flags", "screening.verdicts", "dlq"
DECISIONS, BANK = "moderation.decisions", "deepscreen.bank"


def local_redis_url(url: str = "redis://127.0.0.1:6379/0") -> str:
    """`url` when a Redis answers there within a moment, else empty (in-process cache)."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
        client.ping()
        client.close()
        return url
    except redis.RedisError:
        return ""


def sample_videos(directory: Path, limit: int) -> list[Path]:
    """Up to `limit` videos, alternating between sub-folders (e.g. real/ and fake/)."""
    groups: dict[Path, list[Path]] = {}
    for path in video_files(directory):
        groups.setdefault(path.parent, []).append(path)
    chosen: list[Path] = []
    while len(chosen) < limit and any(groups.values()):
        for files in groups.values():
            if files and len(chosen) < limit:
                chosen.append(files.pop(0))
    return chosen


def run_demo(
    videos: Path, limit: int, model: Path | None, echo: Callable[[str], None] = print
) -> int:
    """Returns the number of uploads that got no outcome (0 on success)."""
    with tempfile.TemporaryDirectory(prefix="deepscreen-demo-") as scratch_dir:
        scratch = Path(scratch_dir)
        model_path = model or (PACKAGED_MODEL if PACKAGED_MODEL.is_file() else None)
        if model_path is None:
            from detector.training.export import init_reference

            model_path = scratch / "reference.pt"
            init_reference(model_path)
            echo("note: no trained model is packaged yet; using an UNTRAINED reference model")
        chosen = sample_videos(videos, limit)
        if not chosen:
            echo(f"no videos under {videos}")
            return 1
        not_video = scratch / "holiday.mp4"
        not_video.write_text("this upload is a text file with a video name\n")
        still = _still_of(chosen[0], scratch / f"{chosen[0].stem}-still.jpg")
        declared = TestAuthority.create(
            signer_name="deepscreen demo generator", organisation="deepscreen demo (untrusted)"
        ).sign(chosen[-1], scratch / f"{chosen[-1].stem}-ai-generated.mp4")
        echo(
            f"signed {declared.name} with C2PA credentials declaring it AI-generated "
            "(trainedAlgorithmicMedia), under a demo certificate made just now (not on any "
            "trust list)"
        )

        with EmbeddedBroker() as broker:
            broker.create_topics({UPLOADS: 2, FLAGS: 1, VERDICTS: 1, DLQ: 1, DECISIONS: 1, BANK: 1})
            cache_url = local_redis_url()
            echo(f"broker: embedded Kafka-compatible (Tansu) at {broker.bootstrap}")
            echo(f"cache: {'Redis at ' + cache_url if cache_url else 'in-process (no Redis)'}")
            settings = Settings(
                kafka=embedded_kafka_settings(
                    broker,
                    group_id="deepscreen-demo",
                    uploads=UPLOADS,
                    flags=FLAGS,
                    verdicts=VERDICTS,
                    dlq=DLQ,
                    max_poll_interval_ms=60_000,
                    max_in_flight=4,
                    decisions_topic=DECISIONS,
                    bank_topic=BANK,
                ),
                redis=RedisSettings(url=cache_url, key_prefix=f"deepscreen-demo:{time.time()}"),
                media=MediaSettings(file_roots=(videos.resolve(), scratch.resolve())),
                detector=DetectorSettings(model_path=model_path, windows=4),
                http=HttpSettings(host="127.0.0.1", port=0),
                log_level="warning",
            )
            uploads = _publish_uploads(broker.bootstrap, chosen, [still, declared], not_video)
            echo(f"published {uploads} upload events to {UPLOADS}\n")
            app = build_app(settings)
            service = threading.Thread(
                target=app.service.run, kwargs={"max_messages": uploads}, daemon=True
            )
            service.start()
            seen = _print_outcomes(broker.bootstrap, uploads, service, echo)
            service.join(timeout=60)
        return uploads - seen


def _still_of(video: Path, destination: Path) -> Path | None:
    """A JPEG of a frame from the middle of `video` (an image upload), or None."""
    from PIL import Image

    from detector.config import MediaLimits
    from detector.decoding import WindowReader
    from detector.probe import open_video

    with open_video(video, MediaLimits()) as opened:
        middle = opened.probe.frame_count // 2
        window = next(WindowReader(opened, 1).windows([middle]), None)
    if window is None:
        return None
    Image.fromarray(window.frames[0]).save(destination, format="JPEG", quality=92)
    return destination


def _publish_uploads(
    bootstrap: str, videos: list[Path], extras: list[Path | None], not_video: Path
) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    now = datetime.now(UTC).isoformat()

    def send(video_id: str, path: Path, *, cloudevent: bool = False) -> None:
        event = {"video_id": video_id, "uri": path.resolve().as_uri(), "uploaded_at": now}
        value = (
            {"specversion": "1.0", "id": f"up-{video_id}", "source": "/demo/uploads",
             "type": "com.example.media.uploaded", "data": event}
            if cloudevent else event
        )  # fmt: skip
        producer.send(UPLOADS, key=video_id.encode(), value=json.dumps(value).encode())

    for index, path in enumerate(videos):
        send(f"demo-{index:02d}-{path.stem}", path, cloudevent=index % 2 == 1)
    uploads = [path for path in extras if path is not None]
    for path in uploads:
        send(f"demo-{path.stem}", path)
    send("demo-reupload", videos[0])  # same bytes, new id: a cache hit
    send("demo-not-a-video", not_video)
    producer.send(UPLOADS, key=b"demo-garbage", value=b"<xml>not an upload event</xml>")
    producer.flush()
    producer.close()
    return len(videos) + len(uploads) + 3


def _print_outcomes(
    bootstrap: str, expected: int, service: threading.Thread, echo: Callable[[str], None]
) -> int:
    consumer = KafkaConsumer(
        FLAGS, VERDICTS, DLQ, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        group_id=None, enable_auto_commit=False, consumer_timeout_ms=1000,
    )  # fmt: skip
    outcomes = 0
    deadline = time.monotonic() + 1800
    try:
        while outcomes < expected and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500).values():
                for message in record:
                    outcomes += _print_one(message.topic, message.value, message.headers, echo)
            if not service.is_alive() and outcomes < expected:
                for record in consumer.poll(timeout_ms=2000).values():
                    for message in record:
                        outcomes += _print_one(message.topic, message.value, message.headers, echo)
                break
    finally:
        consumer.close()
    echo(f"\n{outcomes} of {expected} uploads have an outcome")
    return outcomes


def _print_one(
    topic: str, value: bytes, headers: list[tuple[str, bytes]], echo: Callable[[str], None]
) -> int:
    """Print a flag in full and a one-line summary of other outcomes; count outcomes."""
    if topic == FLAGS:
        flag = DeepfakeFlag.model_validate_json(value)
        verdict = flag.data
        signal = verdict.action_signal.value if verdict.action_signal else "-"
        echo(
            f"FLAG {verdict.action.value.upper():6s} {verdict.video_id} [{verdict.media}]: "
            f"{verdict.outcome.value} ({verdict.reason.value if verdict.reason else '-'}) "
            f"by {signal}{' [cache hit]' if verdict.cache_hit else ''}  event id {flag.id}"
        )
        if verdict.action_signal is Signal.CONTENT_CREDENTIALS and verdict.provenance:
            echo(f"       credentials: {verdict.provenance.summary}")
        if verdict.timeline:
            worst = max(verdict.timeline, key=lambda clip: clip.score)
            echo(
                f"       model: P(fake)={verdict.score} faces={verdict.faces_tracked} worst clip "
                f"{worst.start_s:.1f}-{worst.end_s:.1f}s (track {worst.track_id}) "
                f"model={verdict.model.name}@{verdict.model.version}"
            )
        return 0  # its verdict event counts it
    if topic == VERDICTS:
        verdict = VerdictEvent.model_validate_json(value).data
        detail = verdict.reason.value if verdict.reason else f"score {verdict.score}"
        cached = " [cache hit]" if verdict.cache_hit else ""
        credentials = verdict.provenance.state.value if verdict.provenance else "-"
        echo(
            f"     verdict {verdict.video_id} [{verdict.media}]: {verdict.outcome.value} "
            f"({detail}), credentials {credentials}{cached}"
        )
        return 1
    letter = DeadLetter.from_headers(headers)
    echo(f"     dead letter (offset {letter.offset}): {letter.reason}: {letter.detail[:80]}")
    return 1
