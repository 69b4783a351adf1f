"""`scan` over the shared evaluation clips (7 real, 14 fake) with the reference model.

The reference model is untrained, so this pins the face pipeline on real
footage (every file gets a verdict, faces are found), not accuracy; accuracy
is the trained model's job and its evaluation's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumer.cli import app
from schemas import Outcome, ScreeningVerdict
from tests.conftest import SHARED_CLIPS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_CLIPS.is_dir(), reason="../shared/data/clips is not present"),
]


def test_every_shared_clip_gets_a_verdict_and_faces_are_found_in_nearly_all(
    reference_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (SHARED_CLIPS / "manifest.csv").open() as manifest:
        expected = {Path(row["path"]).name: row["label"] for row in csv.DictReader(manifest)}
    result = CliRunner().invoke(
        app, ["scan", "--model", str(reference_model), "--json", str(SHARED_CLIPS)]
    )
    assert result.exit_code == 0, result.output
    verdicts = [ScreeningVerdict.model_validate_json(line) for line in result.stdout.splitlines()]

    assert sorted(v.video_id for v in verdicts) == sorted(expected)
    with_faces = [v for v in verdicts if v.faces_tracked > 0]
    assert len(with_faces) >= 19
    for verdict in with_faces:
        assert verdict.outcome in (Outcome.SUSPECTED_DEEPFAKE, Outcome.LIKELY_REAL)
        assert verdict.video is not None
        assert all(clip.end_s <= verdict.video.duration_s + 1e-3 for clip in verdict.timeline)
    multiface = next(v for v in verdicts if v.video_id == "real_stage_multiface.mp4")
    assert multiface.faces_tracked >= 2

    with capsys.disabled():
        print("\nfile                           label faces clips frames outcome")
        for v in sorted(verdicts, key=lambda v: v.video_id):
            print(
                f"{v.video_id:30s} {expected[v.video_id]:5s} {v.faces_tracked:5d} "
                f"{len(v.timeline):5d} {v.frames_analyzed:6d} {v.outcome.value}"
            )
