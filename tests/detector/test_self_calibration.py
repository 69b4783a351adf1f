"""`auto` without an int8 form: fp32 first, then int8 calibrated on the clips it scored."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from detector.artifact import LoadedModel, load
from detector.backends import SelfCalibratingScorer, build_cpu_scorer
from detector.derived import CalibrationClips, DerivedCache
from detector.scoring import TorchScorer
from tests.support.tiny_model import write_tiny_artifact

REDUCED_TOLERANCE = 0.02  # int8: the per-clip bound


def clips(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 20, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    write_tiny_artifact(path, seed=3, temperature=1.3)
    return load(path, "cpu")


@pytest.fixture(scope="module")
def calibration() -> CalibrationClips:
    return CalibrationClips(clips(4, seed=21), "four test clips")


def test_auto_with_self_calibration_starts_on_fp32_and_runs_int8_after_enough_clips(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    cache = DerivedCache(tmp_path)
    scorer = build_cpu_scorer(tiny, "auto", cache=cache, self_calibration_clips=3)
    assert isinstance(scorer, SelfCalibratingScorer)
    assert scorer.info.backend == "openvino"
    expected = TorchScorer(tiny, precision="fp32").score(clips(4, seed=11))
    first = scorer.score(clips(2, seed=12))  # two clips kept: not enough yet
    assert first.shape == (2,) and scorer.calibrating
    scorer.score(clips(2, seed=13))  # the third clip starts the int8 form
    deadline = time.monotonic() + 120
    while scorer.calibrating:
        assert time.monotonic() < deadline, "the int8 form was never made"
        time.sleep(0.05)
    assert scorer.info.backend == "openvino-int8"
    assert np.abs(scorer.score(clips(4, seed=11)) - expected).max() <= REDUCED_TOLERANCE
    # made from what it scored, and kept: the next start runs int8 at once
    form = cache.get(tiny.info.sha256, "openvino-int8")
    assert form is not None and "self-calibration" in form.metadata.model_dump_json()
    assert build_cpu_scorer(tiny, "auto", cache=cache).info.backend == "openvino-int8"


def test_self_calibration_that_fails_keeps_scoring_on_fp32(tiny: LoadedModel) -> None:
    fp32 = TorchScorer(tiny, precision="fp32")

    def refuse(_found: CalibrationClips) -> TorchScorer:
        raise RuntimeError("the converter refused the model")

    scorer = SelfCalibratingScorer(fp32, refuse, clips=1)
    scorer.score(clips(1, seed=14))
    deadline = time.monotonic() + 10
    while scorer.calibrating:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert scorer.info.backend == fp32.info.backend
    assert scorer.score(clips(1, seed=14)).shape == (1,)


def test_self_calibration_is_off_when_asked_and_with_calibration_videos(
    tiny: LoadedModel, calibration: CalibrationClips, tmp_path: Path
) -> None:
    off = build_cpu_scorer(tiny, "auto", cache=DerivedCache(tmp_path / "a"))
    assert not isinstance(off, SelfCalibratingScorer)
    given = build_cpu_scorer(
        tiny, "auto", cache=DerivedCache(tmp_path / "b"), calibration=lambda: calibration,
        self_calibration_clips=16,
    )  # fmt: skip
    assert given.info.backend == "openvino-int8"
    assert not isinstance(given, SelfCalibratingScorer)


# Run in a process of its own: what it guards against kills the process (SIGSEGV).
SIGNAL_AFTER_SWAP = """
import signal, sys, threading, time
from pathlib import Path
import numpy as np
from detector.artifact import load
from detector.backends import build_cpu_scorer
from detector.derived import DerivedCache

model_path, derived = map(Path, sys.argv[1:])
scorer = build_cpu_scorer(load(model_path, "cpu"), "auto", cache=DerivedCache(derived),
                          self_calibration_clips=2)
scorer.score(np.random.default_rng(1).integers(0, 256, (2, 20, 112, 112, 3), dtype=np.uint8))
while scorer.calibrating:
    time.sleep(0.05)
print("scoring with", scorer.info.backend, flush=True)
stopped = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopped.set())  # as the service's stop handler
signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # the thread that built fp32
print("stop requested" if stopped.wait(5) else "no stop", flush=True)
"""


def test_sigterm_after_self_calibration_reaches_the_stop_handler(tmp_path: Path) -> None:
    """The int8 swap lets go of the fp32 scorer on the calibration thread; the thread that
    built it must still take signals (OpenVINO's CPU plugin sets and unmaps a signal stack
    per thread: `backends.openvino_core`)."""
    write_tiny_artifact(tmp_path / "tiny.pt", seed=3, temperature=1.3)
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER_SWAP, str(tmp_path / "tiny.pt"), str(tmp_path / "d")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"exit code {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.splitlines()[-2:] == ["scoring with openvino-int8", "stop requested"]
