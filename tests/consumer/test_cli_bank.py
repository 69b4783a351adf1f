"""`deepscreen hash` and `deepscreen bank ...` on a local bank file, and `scan --bank`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from consumer.cli import app
from detector.bank_file import load_bank, parse_vpdq
from schemas import Outcome, Reason, ScreeningVerdict, Signal
from schemas.decision import Decision
from tests.conftest import SyntheticVideos

runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_hash_prints_a_vpdq_hash_file_of_every_frame(synthetic: SyntheticVideos) -> None:
    result = runner.invoke(app, ["hash", str(synthetic.moving_face)])
    assert result.exit_code == 0, result.output
    features = parse_vpdq(result.stdout)
    assert [f.frame_number for f in features] == list(range(60))
    assert result.stdout.splitlines()[0].startswith("0,")  # frame,quality,pdq,timestamp
    faces = parse_vpdq(runner.invoke(app, ["hash", "--faces", str(synthetic.moving_face)]).stdout)
    assert len(faces) == len(features) and faces != features


def test_hash_of_a_file_that_is_not_a_video_is_a_usage_error(synthetic: SyntheticVideos) -> None:
    result = runner.invoke(app, ["hash", str(synthetic.not_a_video)])
    assert result.exit_code == 2
    assert "cannot be hashed (not_a_video" in result.stderr


def test_a_bank_file_is_seeded_listed_exported_imported_and_pruned(
    synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    bank = tmp_path / "known.json"
    fake = synthetic.moving_face
    added = runner.invoke(
        app, ["bank", "add", "--bank", str(bank), "--decision", "confirmed_fake",
              "--moderator", "mod-1", str(fake)],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    [entry] = load_bank(bank)
    assert (entry.entry_id, entry.decision, entry.moderator) == (
        sha256(fake),
        Decision.CONFIRMED_FAKE,
        "mod-1",
    )
    assert len(entry.frames) == 60 and entry.faces

    listed = runner.invoke(app, ["bank", "list", "--bank", str(bank)])
    assert listed.stdout.startswith(f"{sha256(fake)} confirmed_fake mod-1 ")
    assert "frames=60" in listed.stdout and listed.stdout.rstrip().endswith("moving_face.mp4")

    exported = tmp_path / "exported.json"
    assert runner.invoke(app, ["bank", "export", "--bank", str(bank), str(exported)]).exit_code == 0
    other = tmp_path / "other.json"
    imported = runner.invoke(app, ["bank", "import", "--bank", str(other), str(exported)])
    assert imported.exit_code == 0 and load_bank(other) == load_bank(bank)

    removed = runner.invoke(app, ["bank", "remove", "--bank", str(bank), sha256(fake)])
    assert removed.exit_code == 0
    assert load_bank(bank) == []
    again = runner.invoke(app, ["bank", "remove", "--bank", str(bank), sha256(fake)])
    assert again.exit_code == 2 and "no entry" in again.stderr


def test_bank_add_refuses_a_retraction_as_a_ruling(
    synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["bank", "add", "--bank", str(tmp_path / "b.json"), "--decision", "retracted",
              str(synthetic.moving_face)],
    )  # fmt: skip
    assert result.exit_code == 2 and "--decision must be" in result.stderr


def test_bank_commands_refuse_a_file_that_is_not_a_bank(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "something else"}')
    result = runner.invoke(app, ["bank", "list", "--bank", str(broken)])
    assert result.exit_code == 2 and "is not a bank file" in result.stderr


def test_scan_against_a_bank_file_flags_a_banked_fake_and_not_other_videos(
    reference_model: Path, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    bank = tmp_path / "known.json"
    runner.invoke(app, ["bank", "add", "--bank", str(bank), str(synthetic.moving_face)])
    result = runner.invoke(
        app, ["scan", "--model", str(reference_model), "--json", "--bank", str(bank),
              str(synthetic.moving_face), str(synthetic.two_faces)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fake, other = (
        ScreeningVerdict.model_validate_json(line) for line in result.stdout.splitlines()
    )
    assert (fake.outcome, fake.reason, fake.action_signal) == (
        Outcome.SUSPECTED_DEEPFAKE,
        Reason.MATCHES_CONFIRMED_FAKE,
        Signal.KNOWN_FAKES,
    )
    assert fake.known_fake is not None and fake.known_fake.same_content
    assert other.known_fake is None
    assert other.reason is not Reason.MATCHES_CONFIRMED_FAKE
