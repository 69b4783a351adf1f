"""Decoding and credentials reading in worker processes: a crash or a hang costs one upload."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consumer.signing import TestAuthority as Authority
from detector.config import CredentialsConfig, DetectorConfig, MediaLimits
from detector.credentials import read_credentials
from detector.extraction import Extraction
from detector.faces import FaceDetector
from detector.isolation import IsolatedExtractor, default_extract
from detector.probe import Unreadable
from schemas import Reason
from schemas.provenance import Declaration, Provenance, ProvenanceReason, ProvenanceState
from tests.conftest import SyntheticVideos
from tests.support.credentials import astronaut_photo

READ_TIMEOUT_S = 2.0


def crashes_on_poison(
    path: Path, clip_length: int, input_size: int, config: DetectorConfig, faces: FaceDetector
) -> Extraction:
    """Runs in the worker: a file named poison* kills it the way a decoder bug would."""
    if multiprocessing.parent_process() is None:  # never the test runner itself
        raise AssertionError("the extraction ran outside a worker process")
    if path.name.startswith("poison"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if path.name.startswith("hang"):
        time.sleep(60)
    if path.name.startswith("greedy"):
        np.ones(8 * 1024**3, dtype=np.uint8)  # 8 GiB: over the worker's address-space cap
    return default_extract(path, clip_length, input_size, config, faces)


def renamed(video: Path, target: Path) -> Path:
    """A copy of a good video under a name that `crashes_on_poison` reacts to."""
    target.write_bytes(video.read_bytes())
    return target


@pytest.fixture(scope="module")
def extractor() -> Iterator[IsolatedExtractor]:
    config = replace(
        DetectorConfig(),
        limits=MediaLimits(decode_timeout_s=3.0),
        credentials=CredentialsConfig(read_timeout_s=READ_TIMEOUT_S),
    )
    isolated = IsolatedExtractor(config, workers=2, memory_limit_mb=1024, extract=crashes_on_poison)
    yield isolated
    isolated.close()


def test_a_video_is_extracted_in_a_worker_process(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos
) -> None:
    extraction = extractor.extract(synthetic.moving_face, clip_length=20, input_size=112)
    assert extraction.tracks == 1
    assert [c.pixels.shape for c in extraction.clips] == [(20, 112, 112, 3)] * 3


def test_a_refused_video_comes_back_as_its_reason(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos
) -> None:
    with pytest.raises(Unreadable) as refused:
        extractor.extract(synthetic.not_a_video, clip_length=20, input_size=112)
    assert refused.value.reason is Reason.NOT_A_VIDEO


def test_a_decoder_crash_is_that_video_s_verdict_and_the_worker_is_replaced(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    poison = renamed(synthetic.moving_face, tmp_path / "poison.mp4")
    with pytest.raises(Unreadable) as crashed:
        extractor.extract(poison, clip_length=20, input_size=112)
    assert crashed.value.reason is Reason.DECODER_CRASHED
    assert "exit code -11" in crashed.value.detail  # SIGSEGV
    for _ in range(3):  # both workers still answer
        assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1


def test_a_hung_decoder_is_killed_after_the_time_limit(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    hang = renamed(synthetic.moving_face, tmp_path / "hang.mp4")
    started = time.monotonic()
    with pytest.raises(Unreadable) as refused:
        extractor.extract(hang, clip_length=20, input_size=112)
    assert refused.value.reason is Reason.DECODE_TIMEOUT
    assert time.monotonic() - started < 15
    assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1


def test_a_decoder_over_its_memory_cap_fails_that_video_only(
    extractor: IsolatedExtractor, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    greedy = renamed(synthetic.moving_face, tmp_path / "greedy.mp4")
    with pytest.raises(Unreadable) as refused:
        extractor.extract(greedy, clip_length=20, input_size=112)
    assert refused.value.reason is Reason.DECODE_FAILED
    assert "memory" in refused.value.detail
    assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1


# --------------------------------------------------------------------------- content credentials


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut photo, signed as made by a generative model."""
    root = tmp_path_factory.mktemp("credentials")
    photo = astronaut_photo(root / "astronaut.jpg")
    return Authority.create().sign(photo, root / "generated.jpg", "trainedAlgorithmicMedia")


def without_timing(provenance: Provenance) -> dict[str, object]:
    return provenance.model_dump(exclude={"read_ms"})


def a_fifo(path: Path) -> Path:
    """A named pipe: whoever opens it to read waits for a writer (a read that hangs)."""
    os.mkfifo(path)
    return path


def worker_reading(fifo: Path, timeout_s: float = 20.0) -> int:
    """The pid of the decoder worker that has `fifo` open."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in multiprocessing.active_children():
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{child.pid}/fd")
                if any(fd.readlink() == fifo.resolve() for fd in fds.iterdir()):
                    assert child.pid is not None
                    return child.pid
        time.sleep(0.05)
    raise AssertionError(f"no worker opened {fifo}")


def open_writer(fifo: Path, timeout_s: float = 20.0) -> int:
    """The write end of `fifo`, once a reader has opened it (ENXIO until then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:
                raise
            time.sleep(0.02)
    raise AssertionError(f"no reader opened {fifo}")


def test_credentials_are_read_in_a_worker_process(
    extractor: IsolatedExtractor, signed: Path
) -> None:
    provenance = extractor.read_credentials(signed)
    assert provenance.state is ProvenanceState.VALID
    assert provenance.declaration is Declaration.AI_GENERATED
    in_process = read_credentials(signed, extractor.config.credentials, 1 << 30)
    assert without_timing(provenance) == without_timing(in_process)


def test_a_credentials_read_over_its_time_limit_is_killed_and_the_pool_goes_on(
    extractor: IsolatedExtractor, signed: Path, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    hangs = a_fifo(tmp_path / "upload.jpg")  # opening it blocks: no writer ever comes
    started = time.monotonic()
    provenance = extractor.read_credentials(hangs)
    elapsed = time.monotonic() - started
    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.READ_TIMEOUT
    assert provenance.reason_detail is not None and "killed" in provenance.reason_detail
    assert READ_TIMEOUT_S <= elapsed < READ_TIMEOUT_S + 10
    for _ in range(3):  # both workers still answer, both kinds of request
        assert extractor.read_credentials(signed).state is ProvenanceState.VALID
    assert extractor.extract(synthetic.moving_face, clip_length=20, input_size=112).tracks == 1


def test_a_credentials_reader_that_dies_is_reader_crashed_and_the_pool_goes_on(
    extractor: IsolatedExtractor, signed: Path, tmp_path: Path
) -> None:
    fifo = a_fifo(tmp_path / "upload.jpg")
    answers: list[Provenance] = []
    reading = threading.Thread(target=lambda: answers.append(extractor.read_credentials(fifo)))
    reading.start()
    writer = open_writer(fifo)  # the worker is now inside the read, waiting for bytes
    try:
        os.kill(worker_reading(fifo), signal.SIGKILL)  # as a native reader crash would
        reading.join(timeout=30)
    finally:
        os.close(writer)
    assert not reading.is_alive()
    [provenance] = answers
    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.READER_CRASHED
    assert provenance.reason_detail is not None and "exit code -9" in provenance.reason_detail
    for _ in range(3):
        assert extractor.read_credentials(signed).state is ProvenanceState.VALID
