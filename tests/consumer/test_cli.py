"""The `deepscreen` command line, run in-process as a user would call it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consumer.cli import app
from schemas import Action, Declaration, Outcome, ProvenanceState, Reason, ScreeningVerdict, Signal
from tests.conftest import REPO, SyntheticVideos

runner = CliRunner()


def test_scan_json_prints_one_verdict_per_file_and_exits_zero_for_bad_videos(
    reference_model: Path, synthetic: SyntheticVideos
) -> None:
    files = [synthetic.moving_face, synthetic.not_a_video, synthetic.no_face]
    arguments = ["scan", "--model", str(reference_model), "--json", *map(str, files)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    verdicts = [ScreeningVerdict.model_validate_json(line) for line in result.stdout.splitlines()]
    assert [v.video_id for v in verdicts] == [f.name for f in files]
    assert verdicts[0].outcome in (Outcome.LIKELY_REAL, Outcome.SUSPECTED_DEEPFAKE)
    assert verdicts[0].model.trained is False
    assert (verdicts[1].outcome, verdicts[1].reason) == (Outcome.UNREADABLE, Reason.NOT_A_VIDEO)
    assert (verdicts[2].outcome, verdicts[2].reason) == (Outcome.NO_FACE, Reason.NO_FACE_DETECTED)
    assert "untrained" in result.stderr


def test_scan_without_json_prints_a_line_a_file(
    reference_model: Path, synthetic: SyntheticVideos
) -> None:
    result = runner.invoke(app, ["scan", "--model", str(reference_model), str(synthetic.short)])
    assert result.exit_code == 0
    assert result.stdout.strip().startswith(
        "short.mp4 [video]: unreadable (too_short) | model: media not screened by the model "
        "(too_short) (12 frames; a clip needs 20 consecutive frames) | No content credentials."
    )


def test_scan_expands_a_directory_to_its_videos(
    reference_model: Path, synthetic: SyntheticVideos
) -> None:
    result = runner.invoke(
        app, ["scan", "--model", str(reference_model), "--json", str(synthetic.short.parent)]
    )
    assert result.exit_code == 0
    names = {json.loads(line)["video_id"] for line in result.stdout.splitlines()}
    assert {"moving_face.mp4", "short.mp4", "zero.mp4"} <= names
    assert "huge.y4m" not in names  # not a video suffix the directory walk picks up


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["scan", "/nonexistent/video.mp4"], "does not exist"),
        (["scan", "--model", "/nonexistent/model.pt", "README.md"], "no model at"),
        (["scan", "--model", "README.md", "README.md"], "cannot use README.md"),
        (["scan", "--batch-size", "0", "README.md"], "greater than or equal to 1"),
        (["model", "init", "--out", "x.pt", "--input-size", "100"], "--input-size must be one of"),
        # blocking must be the stricter action
        (
            shlex.split(
                "model calibrate --model README.md --data tests --out x.pt "
                "--review-fpr 0.001 --block-fpr 0.01"
            ),
            "need 0 < --block-fpr <= --review-fpr",
        ),
        # a file that is not a model: a message, not a traceback
        (
            shlex.split("model calibrate --model README.md --data tests --out x.pt"),
            "cannot use README.md",
        ),
        (
            shlex.split("model evaluate --model README.md --data tests --report r.json"),
            "cannot use README.md",
        ),
    ],
)
def test_usage_errors_exit_two_with_a_message(arguments: list[str], message: str) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_scan_closes_its_detector(
    reference_model: Path, synthetic: SyntheticVideos, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its batching thread and decoders are released when the files are done."""
    from detector.pipeline import Detector

    closed: list[Detector] = []
    close = Detector.close

    def counting_close(self: Detector) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(Detector, "close", counting_close)
    result = runner.invoke(app, ["scan", "--model", str(reference_model), str(synthetic.short)])
    assert result.exit_code == 0, result.output
    assert len(closed) == 1


def test_model_init_then_info_shows_an_untrained_reference(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    created = runner.invoke(app, ["model", "init", "--out", str(out), "--lstm-hidden", "16"])
    assert created.exit_code == 0, created.output
    info = runner.invoke(app, ["model", "info", str(out)])
    assert info.exit_code == 0
    document = json.loads(info.stdout)
    assert document["metadata"]["trained"] is False
    assert document["metadata"]["lstm_hidden"] == 16
    assert len(document["sha256"]) == 64


def test_schemas_export_writes_what_is_committed(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0
    for written in tmp_path.glob("*.schema.json"):
        committed = REPO / "schemas" / "jsonschema" / written.name
        assert written.read_text() == committed.read_text()
    committed = {p.name for p in (REPO / "schemas" / "jsonschema").glob("*.schema.json")}
    assert {p.name for p in tmp_path.glob("*.schema.json")} == committed


@pytest.mark.slow
def test_model_train_on_stills_records_how_the_model_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Self-blended training end to end, with the light backbone from an ImageNet file."""
    import cv2
    import torch
    from torchvision.models import mobilenet_v2

    from detector.artifact import read_metadata, sha256_file
    from tests.support.videos import astronaut_face

    stills = tmp_path / "utkface"
    stills.mkdir()
    face = cv2.cvtColor(cv2.resize(astronaut_face(), (200, 200)), cv2.COLOR_RGB2BGR)
    for number in range(4):
        cv2.imwrite(str(stills / f"{number}_face.jpg"), face if number % 2 else face[:, ::-1])
    weights = tmp_path / "mobilenet_v2-imagenet.pth"
    torch.save(mobilenet_v2(weights=None).state_dict(), weights)
    out = tmp_path / "m.pt"
    arguments = [
        "model", "train", "--data", str(stills), "--self-blend", "--out", str(out),
        "--epochs", "1", "--batch-size", "4", "--train-frames", "2", "--workers", "2",
        "--backbone", "mobilenet_v2", "--backbone-weights", str(weights), "--seed", "3",
    ]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["deepscreen", *arguments])  # the command line it records
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    metadata = read_metadata(out)
    assert metadata.architecture == "mobilenet_v2+lstm" and metadata.trained
    training = metadata.training
    assert training is not None
    assert training.command is not None and "--backbone mobilenet_v2" in training.command
    assert training.seed == 3 and training.data_sha256 and training.code_version
    assert training.source is not None and sha256_file(weights) in training.source
    assert (tmp_path / "m.cache" / "manifest.json").exists()  # the cache sits next to --out

    # The trained model teaches a student from scratch, on the same cached clips.
    student = tmp_path / "student.pt"
    arguments = [
        "model", "train", "--data", str(stills), "--self-blend", "--out", str(student),
        "--cache", str(tmp_path / "m.cache"), "--epochs", "1", "--batch-size", "4",
        "--train-frames", "2", "--backbone", "mobilenet_v2", "--seed", "3",
        "--teacher", str(out), "--distil-weight", "0.5",
    ]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["deepscreen", *arguments])
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    taught = read_metadata(student).training
    assert taught is not None and taught.source is not None
    assert (
        "from scratch" in taught.source
        and f"distilled from m.pt (sha256 {sha256_file(out)}" in taught.source
    )


def test_model_calibrate_thresholds_only_sets_review_and_block_from_real_video_scores(
    reference_model: Path, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    """An operator's own real uploads fix the rates; the fakes beside them are not read."""
    from detector.artifact import read_metadata

    uploads = tmp_path / "uploads"
    (uploads / "real").mkdir(parents=True)
    (uploads / "fake").mkdir()
    for video in (synthetic.moving_face, synthetic.no_face):
        (uploads / "real" / video.name).symlink_to(video)
    (uploads / "fake" / "broken.mp4").symlink_to(synthetic.not_a_video)
    out = tmp_path / "platform.pt"

    result = runner.invoke(app, ["model", "calibrate", "--model", str(reference_model), "--data",
                                 str(uploads), "--out", str(out), "--thresholds-only"])  # fmt: skip

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["videos"], summary["not_scored"]) == (1, 1)  # no_face has nothing to score
    scanned = runner.invoke(
        app, ["scan", "--model", str(reference_model), "--json", str(synthetic.moving_face)]
    )
    highest = ScreeningVerdict.model_validate_json(scanned.stdout).score
    assert highest is not None
    # one video cannot resolve 1 % or 0.1 %: both thresholds sit just above its score
    metadata = read_metadata(out)
    assert metadata.thresholds.review == metadata.thresholds.block == round(highest + 1e-4, 4)
    assert summary["thresholds"] == metadata.thresholds.model_dump()
    assert metadata.calibration.fitted_on == (
        "thresholds: video scores of the real videos in uploads (1 scored); temperature: as trained"
    )
    assert "warning:" in result.stderr and "cannot resolve" in result.stderr


def test_model_calibrate_thresholds_only_needs_real_videos(
    reference_model: Path, tmp_path: Path
) -> None:
    (tmp_path / "fake").mkdir()
    result = runner.invoke(app, ["model", "calibrate", "--model", str(reference_model), "--data",
                                 str(tmp_path), "--out", str(tmp_path / "x.pt"),
                                 "--thresholds-only"])  # fmt: skip
    assert result.exit_code == 2 and "no real videos" in result.output
    (tmp_path / "manifest.json").write_text("{}")
    result = runner.invoke(app, ["model", "calibrate", "--model", str(reference_model), "--data",
                                 str(tmp_path), "--out", str(tmp_path / "x.pt"),
                                 "--thresholds-only"])  # fmt: skip
    assert result.exit_code == 2 and "not a clip cache" in result.output


def test_model_train_refuses_an_unknown_backbone(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["model", "train", "--data", str(tmp_path), "--self-blend", "--out",
              str(tmp_path / "m.pt"), "--backbone", "vgg16"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--backbone" in result.output


# --------------------------------------------------------------------------- content credentials


@dataclass(frozen=True)
class Signed:
    """The astronaut as a 512 px JPEG whose credentials declare it AI-generated."""

    image: Path
    root_pem: Path  # the signing authority's root, for --trust-anchors


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    from PIL import Image
    from skimage import data

    from consumer.signing import TestAuthority as Authority

    folder = tmp_path_factory.mktemp("signed")
    plain = folder / "plain" / "astronaut.jpg"
    plain.parent.mkdir()
    astronaut = data.astronaut()  # type: ignore[no-untyped-call]
    Image.fromarray(astronaut).save(plain, quality=90)  # 512 x 512
    authority = Authority.create()
    image = authority.sign(plain, folder / "astronaut-ai.jpg", "trainedAlgorithmicMedia")
    root = folder / "root.pem"
    root.write_bytes(authority.root_pem)
    return Signed(image, root)


def scan_json(*arguments: str) -> list[ScreeningVerdict]:
    result = runner.invoke(app, ["scan", "--json", *arguments])
    assert result.exit_code == 0, result.output
    return [ScreeningVerdict.model_validate_json(line) for line in result.stdout.splitlines()]


def test_scan_says_a_still_is_declared_ai_and_labelled_for_its_credentials(
    reference_model: Path, signed: Signed
) -> None:
    result = runner.invoke(app, ["scan", "--model", str(reference_model), str(signed.image)])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    # The untrained reference model scores every face about 0.494, under its review
    # threshold of 0.5: the credentials alone set the action.
    assert line.startswith(
        "astronaut-ai.jpg [image]: declared_synthetic (declared_ai_generated) "
        "action=label by content_credentials | model score="
    ), line
    assert "faces=1 clips=1 frames=1 worst=still track 0" in line  # the model's evidence stays
    assert (
        "| Valid content credentials, untrusted signer (deepscreen test signer, "
        "deepscreen test CA), declare AI-generated content (trainedAlgorithmicMedia)."
    ) in line


def test_scan_json_reports_the_credentials_as_valid_and_trusted_only_with_trust_anchors(
    reference_model: Path, signed: Signed
) -> None:
    [untrusted] = scan_json("--model", str(reference_model), str(signed.image))
    [trusted] = scan_json(
        "--model", str(reference_model), "--trust-anchors", str(signed.root_pem), str(signed.image)
    )
    for verdict in (untrusted, trusted):
        assert (verdict.media, verdict.image is not None, verdict.video) == ("image", True, None)
        assert (verdict.outcome, verdict.action, verdict.action_signal) == (
            Outcome.DECLARED_SYNTHETIC,
            Action.LABEL,
            Signal.CONTENT_CREDENTIALS,
        )
        assert verdict.provenance is not None
        assert verdict.provenance.state is ProvenanceState.VALID
        assert verdict.provenance.declaration is Declaration.AI_GENERATED
        model = verdict.signal(Signal.MODEL)
        assert model is not None and model.outcome is Outcome.LIKELY_REAL
    assert untrusted.provenance is not None and trusted.provenance is not None
    assert (untrusted.provenance.trusted, untrusted.provenance.trust_list_configured) == (
        False,
        False,
    )
    assert (trusted.provenance.trusted, trusted.provenance.trust_list_configured) == (True, True)
    assert "trusted signer" in trusted.provenance.summary
    assert "untrusted" not in trusted.provenance.summary


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a certificate\n", "holds no PEM certificate"),
        ("caf\u00e9 \u2014 no certificate\n".encode(), "anchors.pem"),
    ],
    ids=["text", "not ascii"],
)
def test_scan_refuses_trust_anchors_without_a_certificate(
    reference_model: Path, signed: Signed, tmp_path: Path, content: bytes, message: str
) -> None:
    """As the service does: not every file's credentials silently unreadable instead."""
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(content)
    result = runner.invoke(app, ["scan", "--model", str(reference_model),
                                 "--trust-anchors", str(anchors), str(signed.image)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and "--trust-anchors" in result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_scan_expands_a_directory_to_its_images_and_its_videos(
    reference_model: Path, signed: Signed, synthetic: SyntheticVideos, tmp_path: Path
) -> None:
    from tests.support.credentials import plain_image

    uploads = tmp_path / "uploads"
    (uploads / "stills").mkdir(parents=True)
    (uploads / signed.image.name).symlink_to(signed.image)
    plain_image(uploads / "stills" / "plain.PNG")
    (uploads / synthetic.moving_face.name).symlink_to(synthetic.moving_face)
    (uploads / "notes.txt").write_text("not media")
    verdicts = scan_json("--model", str(reference_model), "--windows", "2", str(uploads))
    assert {v.video_id: v.media for v in verdicts} == {
        "astronaut-ai.jpg": "image",
        "plain.PNG": "image",
        "moving_face.mp4": "video",
    }
    by_name = {v.video_id: v for v in verdicts}
    assert by_name["astronaut-ai.jpg"].outcome is Outcome.DECLARED_SYNTHETIC
    for name in ("plain.PNG", "moving_face.mp4"):
        credentials = by_name[name].provenance
        assert credentials is not None and credentials.state is ProvenanceState.ABSENT, name
    assert by_name["moving_face.mp4"].video is not None


def test_media_paths_keeps_files_as_given_and_expands_directories_sorted(tmp_path: Path) -> None:
    from consumer.cli.service import media_paths

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.mp4", "a.JPG", "sub/c.webp", "sub/d.mov", "notes.txt", "e.y4m"):
        (folder / name).write_bytes(b"x")
    given = tmp_path / "upload.bin"  # a file named on the command line is tried whatever it is
    given.write_bytes(b"x")
    assert media_paths([given, folder]) == [
        given,
        folder / "a.JPG",
        folder / "b.mp4",
        folder / "sub" / "c.webp",
        folder / "sub" / "d.mov",
    ]


@pytest.mark.parametrize("content", [None, "no certificate\n"], ids=["missing", "no certificate"])
def test_serve_refuses_a_bad_trust_anchor_file_as_invalid_settings(
    tmp_path: Path, content: str | None
) -> None:
    """Before the model is loaded, and not reported as a model that cannot be loaded."""
    anchors = tmp_path / "anchors.pem"
    if content is not None:
        anchors.write_text(content)
    environment = {
        "DEEPSCREEN_PROVENANCE__TRUST_ANCHORS": str(anchors),
        "DEEPSCREEN_DETECTOR__MODEL_PATH": str(tmp_path / "no-model.pt"),  # never reached
    }
    result = runner.invoke(app, ["serve"], env=environment)
    assert result.exit_code == 2, result.output
    assert "invalid settings" in result.output and str(anchors) in result.output
    assert "cannot load the model" not in result.output
