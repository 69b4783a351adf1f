"""The bank's match rule on the shared clips: re-encoded copies match, distinct clips never do.

Each clip is banked as a confirmed fake (every frame hashed); transformed copies made with
the ffmpeg of imageio-ffmpeg are screened against it (the sampled windows, as the service
hashes an upload). The clips here are the six real/fake pairs of one scene, the hard case
for precision (a fake's entry must not match its real original): twelve small clips, a few
minutes. `python -m bench.known_fakes` measures all 21 shared clips the same way (half an
hour on two cores; its figures are in bench/README.md). `DEEPSCREEN_KNOWN_FAKES_WORK=DIR`
keeps the copies and hashes in DIR between runs.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest

from bench.known_fakes import (
    MUST_MATCH_EVERY_CLIP,
    PAIRS,
    TRANSFORMS,
    Measurement,
    measure_all,
    report,
)
from tests.conftest import SHARED_CLIPS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="../shared/data/clips is not present"),
]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Measurement:
    kept = os.environ.get("DEEPSCREEN_KNOWN_FAKES_WORK")
    work = Path(kept) if kept else tmp_path_factory.mktemp("known-fakes")
    pairs = {f"{kind}_{scene}.mp4" for scene in PAIRS for kind in ("fake", "real")}
    return measure_all(SHARED_CLIPS, work, list(TRANSFORMS), only=pairs)


def test_the_measurement_is_printed(
    measured: Measurement, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {"cpu": {"own_cpu_s": 0.0}, "measurement": asdict(measured)}
    with capsys.disabled():
        print("\n" + report(figures))
    assert set(measured.robustness) == set(TRANSFORMS)


@pytest.mark.parametrize("transform", MUST_MATCH_EVERY_CLIP)
def test_every_clip_re_encoded_resized_or_trimmed_matches_its_own_entry(
    measured: Measurement, transform: str
) -> None:
    missed = sorted(name for name, ok in measured.robustness[transform].items() if not ok)
    assert missed == [], f"{transform}: {missed} not matched"
    assert len(measured.robustness[transform]) == len(measured.clips)


def test_no_two_distinct_shared_clips_match(measured: Measurement) -> None:
    clips = len(measured.clips)
    assert measured.pairs_checked == clips * (clips - 1)
    assert measured.false_matches == []


def test_a_fakes_entry_does_not_match_its_real_original_nor_the_other_way(
    measured: Measurement,
) -> None:
    pairs_present = [s for s in PAIRS if f"fake_{s}.mp4" in measured.clips]
    assert len(pairs_present) == len(PAIRS)
    matched = {(query, entry) for query, entry, _, _ in measured.false_matches}
    for scene in PAIRS:
        fake, real = f"fake_{scene}.mp4", f"real_{scene}.mp4"
        assert (real, fake) not in matched and (fake, real) not in matched
    for scene, distances in measured.face_distances.items():
        assert distances["fake_vs_real_median"] > measured.rule["face_distance"], scene
