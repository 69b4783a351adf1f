"""The `deepscreen` command line.

`scan` screens files on this machine; `model` makes and inspects artifacts;
`schemas` exports the JSON Schemas of the contracts. Exit code 2 means the
command was used wrongly (a missing path, an unusable model); a video that
cannot be read is a verdict, printed like any other, and exits 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from detector.artifact import LoadedModel
    from detector.evaluation import ScoredVideo
    from schemas.model import ModelMetadata
    from schemas.verdict import ScreeningVerdict

# MediaPipe's C++ logs and TorchScript's deprecation notice are noise to a user.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)

app = typer.Typer(
    name="deepscreen",
    help="Screen uploaded videos for deepfaked faces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Make and inspect model artifacts.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contracts.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(schemas_app, name="schemas")

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp"}
USAGE_ERROR = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(USAGE_ERROR)


def _video_files(paths: list[Path]) -> Iterator[Path]:
    """Files as given; directories expanded to the video files under them, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
            )
        else:
            yield path


@app.command()
def scan(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="Video files, or directories of them.")
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="Model artifact (TorchScript). Default: the packaged model."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One ScreeningVerdict JSON per line on stdout.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Max clips a batch.")] = 32,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Videos decoded at once (clips batched across).")
    ] = 2,
    windows: Annotated[
        int, typer.Option(min=1, max=32, help="20-frame windows sampled per video.")
    ] = 8,
) -> None:
    """Screen video files; one verdict per file."""
    from dataclasses import replace

    from detector.artifact import ArtifactError, load
    from detector.batching import BatchingScorer
    from detector.config import PACKAGED_MODEL, DetectorConfig
    from detector.pipeline import Detector
    from detector.scoring import TorchScorer

    model_path = model or PACKAGED_MODEL
    if not model_path.is_file():
        raise _fail(
            f"no model at {model_path}; pass --model FILE "
            "(`deepscreen model init --out FILE` writes an untrained reference model)"
        )
    try:
        loaded = load(model_path, device)
    except (ArtifactError, RuntimeError) as error:
        raise _fail(f"cannot use {model_path}: {error}") from error
    files = list(_video_files(paths))
    if not files:
        raise _fail("no video files found")

    config = DetectorConfig()
    config = replace(config, sampling=replace(config.sampling, windows=windows))
    scorer = BatchingScorer(TorchScorer(loaded, max_batch=batch_size), max_batch=batch_size)
    detector = Detector(scorer, config)
    if not loaded.metadata.trained:
        typer.echo(f"warning: {loaded.info.name} is untrained; its scores mean nothing", err=True)
    try:
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool,
            _progress(len(files)) as advance,
        ):
            for verdict in pool.map(lambda p: detector.screen(p, video_id=p.name), files):
                advance()
                if as_json:
                    typer.echo(verdict.model_dump_json())
                else:
                    typer.echo(_summary(verdict))
    finally:
        scorer.close()


def _summary(verdict: ScreeningVerdict) -> str:
    if verdict.score is None:
        return (
            f"{verdict.video_id}: {verdict.outcome.value} "
            f"({verdict.reason.value if verdict.reason else '-'}: {verdict.reason_detail})"
        )
    worst = max(verdict.timeline, key=lambda clip: clip.score)
    return (
        f"{verdict.video_id}: {verdict.outcome.value} score={verdict.score:.3f} "
        f"action={verdict.action.value} faces={verdict.faces_tracked} "
        f"clips={len(verdict.timeline)} frames={verdict.frames_analyzed} "
        f"worst={worst.start_s:.1f}-{worst.end_s:.1f}s track {worst.track_id} "
        f"({verdict.processing_ms} ms)"
    )


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("screening", total=total)
        yield lambda: bar.advance(task)


@app.command()
def serve() -> None:
    """Run the service: consume uploads, publish flags, until SIGTERM (settings from env)."""
    from pydantic import ValidationError

    from consumer.app import build_app
    from consumer.logs import configure_logging
    from consumer.settings import load_settings
    from detector.artifact import ArtifactError

    try:
        settings = load_settings()
    except ValidationError as error:
        raise _fail(f"invalid settings:\n{error}") from error
    configure_logging(settings.log_level, settings.log_format)
    try:
        running = build_app(settings)
    except (ArtifactError, FileNotFoundError) as error:
        raise _fail(f"cannot load the model: {error}") from error
    running.service.install_signal_handlers()
    running.service.run()
    # Worker threads stuck past the drain limit must not keep the pod alive.
    sys.stdout.flush()
    os._exit(0)


@app.command()
def healthcheck(
    live: Annotated[
        bool, typer.Option("--live", help="Check liveness (/healthz) instead of readiness.")
    ] = False,
    port: Annotated[
        int | None, typer.Option(help="HTTP port (default: DEEPSCREEN_HTTP__PORT or 8080).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 3.0,
) -> None:
    """Probe a running service: exit 0 when it is ready (or alive), 1 when not."""
    import urllib.error
    import urllib.request

    from consumer.settings import load_settings

    target_port = port if port is not None else load_settings().http.port
    url = f"http://127.0.0.1:{target_port}/{'healthz' if live else 'readyz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            typer.echo(response.read().decode())
    except urllib.error.HTTPError as error:
        typer.echo(error.read().decode() or str(error), err=True)
        raise typer.Exit(1) from error
    except OSError as error:
        typer.echo(f"{url}: {error}", err=True)
        raise typer.Exit(1) from error


@app.command()
def demo(
    videos: Annotated[
        Path, typer.Option(help="Directory of sample videos (searched recursively).")
    ] = Path("../shared/data/clips"),
    limit: Annotated[int, typer.Option(min=1, max=100, help="Sample videos to upload.")] = 6,
    model: Annotated[Path | None, typer.Option(help="Model artifact (default: packaged).")] = None,
) -> None:
    """Run the service on an embedded broker with sample uploads; print each flag; exit."""
    from consumer.demo import run_demo
    from consumer.logs import configure_logging

    if not videos.is_dir():
        raise _fail(f"{videos} is not a directory of videos (use --videos DIR)")
    configure_logging("warning", "console")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # start-up probing is not news
    missing = run_demo(videos, limit, model, echo=typer.echo)
    sys.stdout.flush()
    os._exit(1 if missing else 0)  # decoder and client threads must not hold the exit


@model_app.command("init")
def model_init(
    out: Annotated[Path, typer.Option(help="Where to write the artifact.")],
    input_size: Annotated[int, typer.Option(help="Face crop side: 112 or 224.")] = 112,
    lstm_hidden: Annotated[int, typer.Option(min=1, max=4096)] = 256,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write an untrained reference model (metadata `trained: false`)."""
    from detector.artifact import init_reference

    if input_size not in (112, 224):
        raise _fail("--input-size must be 112 or 224")
    digest = init_reference(out, input_size=input_size, lstm_hidden=lstm_hidden, seed=seed)
    typer.echo(f"{out}  sha256={digest}  input={input_size}px  trained=false")


@model_app.command("train")
def model_train(
    data: Annotated[
        Path,
        typer.Option(
            exists=True,
            file_okay=False,
            help="real/ + fake/ videos, FaceForensics++ layout, or (with --self-blend) stills.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the trained artifact.")],
    self_blend: Annotated[
        bool, typer.Option("--self-blend", help="Train on real stills with self-blended fakes.")
    ] = False,
    cache: Annotated[
        Path | None, typer.Option(help="Clip cache directory (default: next to --out).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use a seeded random subset of N stills.")
    ] = None,
    input_size: Annotated[int, typer.Option(help="112 or 224.")] = 112,
    lstm_hidden: Annotated[int, typer.Option(min=1, max=4096)] = 256,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    learning_rate: Annotated[float, typer.Option(min=0)] = 3e-4,
    train_frames: Annotated[
        int, typer.Option(min=1, max=20, help="Frames of each clip used per training step.")
    ] = 20,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_minutes: Annotated[
        float | None, typer.Option(min=0, help="Stop cleanly after this long.")
    ] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Default: next to --out.")] = None,
    resume: Annotated[
        Path | None, typer.Option(exists=True, help="Continue from a checkpoint.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Processes making self-blended clips (default: CPUs)."),
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="resnext50_32x4d (default) or mobilenet_v2 (lighter).")
    ] = "resnext50_32x4d",
    backbone_weights: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="torchvision ImageNet state dict for --backbone (default: from scratch).",
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A trained deepscreen model to distil from (its features and probabilities).",
        ),
    ] = None,
    distil_weight: Annotated[
        float, typer.Option(min=0, help="Weight of the teacher's terms against the labels'.")
    ] = 1.0,
) -> None:
    """Train a per-frame CNN + LSTM (ResNeXt50 by default); write a TorchScript artifact."""
    import functools
    import os
    import shlex

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from consumer import code_version
    from detector.artifact import sha256_file
    from detector.config import DetectorConfig
    from detector.faces import MediaPipeFaceDetector
    from detector.model import BACKBONES
    from detector.training import TrainConfig, train
    from detector.training_data import (
        ClipCache,
        ClipIndex,
        build_still_cache,
        files_sha256,
        labelled_videos,
        select_images,
        video_clips,
    )

    if input_size not in (112, 224):
        raise _fail("--input-size must be 112 or 224")
    if backbone not in BACKBONES:
        raise _fail(f"--backbone must be one of {', '.join(sorted(BACKBONES))}")
    cache_dir = cache or out.with_suffix(".cache")
    config = DetectorConfig()
    faces = MediaPipeFaceDetector(config.faces)
    console = Console(stderr=True)
    if self_blend:
        images = select_images(data, limit, seed)
        if not images:
            raise _fail(f"no images under {data}")
        with Progress(TextColumn("caching clips"), BarColumn(), TextColumn("{task.completed}/"
                      "{task.total}"), TimeElapsedColumn(), console=console) as bar:  # fmt: skip
            task = bar.add_task("cache", total=len(images))
            manifest = build_still_cache(
                images, cache_dir, new_faces=functools.partial(MediaPipeFaceDetector, config.faces),
                config=config, input_size=input_size, seed=seed,
                workers=workers or os.cpu_count() or 1,
                progress=lambda done, total: bar.update(task, completed=done),
            )  # fmt: skip
        description = f"{manifest['pairs']} real stills + their self-blended pseudo-fakes"
        data_sha256 = str(manifest["data_sha256"])
    else:
        videos = labelled_videos(data)
        if not videos:
            raise _fail(f"no labelled videos under {data} (real/ + fake/, or FF++ layout)")
        data_sha256 = files_sha256(path for path, _ in videos)
        if not (cache_dir / "manifest.json").exists():
            clip_cache = ClipCache(cache_dir)
            for clip in video_clips(videos, data, faces=faces, config=config,
                                    input_size=input_size):  # fmt: skip
                clip_cache.add(clip)
            clip_cache.flush()
            clip_cache.write_manifest({"kind": "videos", "videos": len(videos),
                                       "data_sha256": data_sha256})  # fmt: skip
        description = f"{len(videos)} labelled videos from {data.name}"
    faces.close()
    index = ClipIndex.open(cache_dir)
    console.print(f"{len(index)} clips ({int(index.labels.sum())} fake) from {description}")

    train_config = TrainConfig(
        input_size=input_size, lstm_hidden=lstm_hidden, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, train_frames=train_frames, seed=seed, device=device,
        max_minutes=max_minutes, backbone=backbone,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
        teacher=str(teacher) if teacher else None, distil_weight=distil_weight,
    )  # fmt: skip
    initialisation = (
        f"{backbone} initialised from ImageNet weights {backbone_weights.name} "
        f"(sha256 {sha256_file(backbone_weights)})"
        if backbone_weights else f"{backbone} trained from scratch"
    )  # fmt: skip
    if teacher is not None:
        initialisation += (
            f", distilled from {teacher.name} (sha256 {sha256_file(teacher)}, "
            f"weight {distil_weight})"
        )
    with Progress(TextColumn("training epoch {task.fields[epoch]}"), BarColumn(),
                  TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]:.4f} "
                             "val AUC {task.fields[auc]}"), TimeElapsedColumn(),
                  console=console) as bar:  # fmt: skip
        task = bar.add_task("train", total=1, epoch=0, loss=0.0, auc="-")

        def show(progress: object) -> None:
            from detector.training import Progress as Step

            assert isinstance(progress, Step)
            bar.update(task, completed=progress.step, total=progress.total_steps,
                       epoch=progress.epoch, loss=progress.loss,
                       auc="-" if progress.validation_auc is None
                       else f"{progress.validation_auc:.3f}")  # fmt: skip
            validated = progress.validation_auc is not None
            if validated or (not sys.stderr.isatty() and progress.step % 25 == 0):
                console.print(
                    f"epoch {progress.epoch} step {progress.step}/{progress.total_steps} "
                    f"loss {progress.loss:.4f} val_auc {progress.validation_auc}"
                )

        result = train(
            index, out, train_config,
            checkpoint_dir=checkpoint_dir or out.with_suffix(".checkpoints"),
            resume=resume,
            summary={
                "command": "deepscreen " + shlex.join(sys.argv[1:]),
                "data": description + (
                    " (UTKFace: non-commercial research use only)"
                    if "utkface" in str(data).lower() else ""),
                "data_sha256": data_sha256,
                "licence": "inherits the training data's terms",
                "code_version": code_version(),
                "source": initialisation,
            },
            on_progress=show,
        )  # fmt: skip
    typer.echo(
        json.dumps(
            {
                "out": str(out),
                "sha256": result.artifact_sha256,
                "steps": result.steps,
                "clips_seen": result.clips_seen,
                "epochs_completed": result.epochs_completed,
                "stopped_early": result.stopped_early,
                "best_validation_auc": result.best_validation_auc,
                "history": result.history,
            },
            indent=2,
        )
    )


@model_app.command("evaluate")
def model_evaluate(
    data: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="real/ and fake/ videos.")
    ],
    report: Annotated[Path, typer.Option(help="Where to write the JSON report (+ .png ROC).")],
    model: Annotated[Path | None, typer.Option(help="Default: the packaged model.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option(min=1, max=64)] = 2,
) -> None:
    """Score every video through the `scan` pipeline; write AUC (+CI), accuracy, F1, EER."""
    from detector.config import PACKAGED_MODEL
    from detector.evaluation import evaluation_report, plot_roc

    loaded, scored = _screen_labelled_videos(
        model or PACKAGED_MODEL, data, device=device, workers=workers,
        none_found=f"no videos under {data}/real or {data}/fake",
    )  # fmt: skip
    document = evaluation_report(
        scored,
        loaded.metadata.thresholds.review,
        model=loaded.info.model_dump(mode="json"),
    )
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(document, indent=2) + "\n")
    ranked = [v for v in scored if v.score is not None]
    if len({v.label for v in ranked}) == 2:
        plot_roc(
            [v.label for v in ranked], [float(v.score or 0) for v in ranked],
            report.with_suffix(".png"), f"{loaded.info.name} on {data.name}",
            clip_labels=[v.label for v in ranked for _ in v.clip_scores],
            clip_scores=[s for v in ranked for s in v.clip_scores],
        )  # fmt: skip
    summary = {k: document.get(k) for k in ("n", "n_scored", "auc", "auc_ci95", "accuracy",
                                            "f1", "eer", "threshold")}  # fmt: skip
    typer.echo(json.dumps(summary))


def _screen_labelled_videos(
    model: Path, data: Path, *, device: str, workers: int, none_found: str,
    labels: set[int] | None = None,
) -> tuple[LoadedModel, list[ScoredVideo]]:  # fmt: skip
    """The labelled videos under `data` (only `labels`, if given) through the `scan` pipeline."""
    from detector.artifact import ArtifactError, load
    from detector.batching import BatchingScorer
    from detector.evaluation import score_videos
    from detector.pipeline import Detector
    from detector.scoring import TorchScorer
    from detector.training_data import labelled_videos

    try:
        loaded = load(model, device)
    except (ArtifactError, RuntimeError, FileNotFoundError) as error:
        raise _fail(f"cannot use {model}: {error}") from error
    videos = [video for video in labelled_videos(data) if labels is None or video[1] in labels]
    if not videos:
        raise _fail(none_found)
    scorer = BatchingScorer(TorchScorer(loaded))
    detector = Detector(scorer)
    try:
        with _progress(len(videos)) as advance:
            scored = score_videos(detector, data, workers=workers, labels=labels,
                                  on_done=lambda _: advance())  # fmt: skip
    finally:
        scorer.close()
        detector.close()
    return loaded, scored


@model_app.command("calibrate")
def model_calibrate(
    model: Annotated[Path, typer.Option(exists=True, dir_okay=False)],
    data: Annotated[
        Path,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A training clip cache (its validation split is used) or real/ + fake/ videos.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="The calibrated artifact (may equal --model).")],
    review_fpr: Annotated[float, typer.Option(min=0, max=1)] = 0.01,
    block_fpr: Annotated[float, typer.Option(min=0, max=1)] = 0.001,
    validation_share: Annotated[float, typer.Option(min=0, max=1)] = 0.1,
    thresholds_only: Annotated[
        bool,
        typer.Option(
            help="Keep the temperature; put review/block at the target rates of the video "
            "scores of --data's real/ videos (your own uploads)."
        ),
    ] = False,
    device: Annotated[str, typer.Option()] = "auto",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Videos decoded at once.")] = 2,
) -> None:
    """Temperature scaling and review/block thresholds at target false-positive rates.

    Never calibrate on the data you evaluate on.
    """
    if not 0 < block_fpr <= review_fpr < 1:
        raise _fail("need 0 < --block-fpr <= --review-fpr < 1")
    if thresholds_only:
        _calibrate_thresholds_on_real_videos(
            model, data, out, review_fpr=review_fpr, block_fpr=block_fpr, device=device,
            workers=workers,
        )  # fmt: skip
        return

    import numpy as np

    from detector.artifact import load
    from detector.calibration import calibrate_artifact
    from detector.config import DetectorConfig
    from detector.faces import MediaPipeFaceDetector
    from detector.scoring import TorchScorer
    from detector.training_data import (
        ClipIndex,
        labelled_videos,
        split_by_group,
        video_clips,
    )

    loaded = load(model, device)
    scorer = TorchScorer(loaded)
    logits: list[float] = []
    labels: list[int] = []
    if (data / "manifest.json").exists():
        index = ClipIndex.open(data)
        seed = loaded.metadata.training.seed if loaded.metadata.training else 0
        _, held_out = split_by_group(index.groups, validation_share, seed or 0)
        for start in range(0, len(held_out), 16):
            rows = held_out[start : start + 16]
            logits += scorer.logits(np.stack([index.pixels(int(i)) for i in rows])).tolist()
            labels += index.labels[rows].tolist()
        fitted_on = f"validation split ({validation_share:.0%}, by source) of {data.name}"
    else:
        config = DetectorConfig()
        faces = MediaPipeFaceDetector(config.faces)
        for clip in video_clips(labelled_videos(data), data, faces=faces, config=config,
                                input_size=loaded.metadata.input_size):  # fmt: skip
            logits += scorer.logits(clip.pixels[None]).tolist()
            labels.append(clip.label)
        faces.close()
        fitted_on = f"clips of the videos in {data.name}"
    if len(set(labels)) < 2:
        raise _fail("calibration needs real and fake examples")
    with _fpr_warnings_to_stderr():
        metadata = calibrate_artifact(
            model, out, np.array(logits), np.array(labels), review_fpr=review_fpr,
            block_fpr=block_fpr, fitted_on=f"{fitted_on} ({len(labels)} clips)",
        )  # fmt: skip
    _echo_calibration(out, metadata, clips=len(labels))


@contextlib.contextmanager
def _fpr_warnings_to_stderr() -> Iterator[None]:
    """Too few real samples for a target rate: one plain line each, not a Python warning."""
    from detector.calibration import FprResolutionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FprResolutionWarning)
        yield
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)


def _calibrate_thresholds_on_real_videos(
    model: Path, data: Path, out: Path, *, review_fpr: float, block_fpr: float, device: str,
    workers: int,
) -> None:  # fmt: skip
    """`model calibrate --thresholds-only`: video scores of real uploads, as `scan` makes them."""
    from detector.calibration import set_thresholds
    from detector.training_data import REAL

    if (data / "manifest.json").exists():
        raise _fail("--thresholds-only needs real videos (DIR/real/), not a clip cache")
    _, scored = _screen_labelled_videos(
        model, data, device=device, workers=workers, labels={REAL},
        none_found=f"no real videos under {data}/real or {data}/original_sequences",
    )  # fmt: skip
    scores = [video.score for video in scored if video.score is not None]
    if not scores:
        raise _fail(f"none of the {len(scored)} real videos had a face to score")
    with _fpr_warnings_to_stderr():
        metadata = set_thresholds(
            model, out, scores, review_fpr=review_fpr, block_fpr=block_fpr,
            fitted_on=f"video scores of the real videos in {data.name} ({len(scores)} scored)",
        )  # fmt: skip
    _echo_calibration(out, metadata, videos=len(scores), not_scored=len(scored) - len(scores))


def _echo_calibration(out: Path, metadata: ModelMetadata, **counts: int) -> None:
    calibration = {
        "out": str(out),
        "temperature": metadata.calibration.temperature,
        "thresholds": metadata.thresholds.model_dump(),
    }
    typer.echo(json.dumps(calibration | counts))


@model_app.command("import-checkpoint")
def model_import_checkpoint(
    ckpt: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="State dict of the public ResNeXt50+LSTM model."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the artifact.")],
    name: Annotated[str, typer.Option(help="Artifact name.")] = "imported-resnext50-lstm",
    version: Annotated[str, typer.Option(help="Artifact version.")] = "imported",
    half: Annotated[bool, typer.Option("--half", help="Store the weights as float16.")] = False,
) -> None:
    """Convert a public ResNeXt50+LSTM checkpoint (e.g. model_87_acc_20_frames_final_data.pt).

    Thresholds stay at their defaults and no calibration is stored: calibrate after importing.
    """
    from detector.checkpoint_import import CheckpointError, import_checkpoint

    try:
        digest = import_checkpoint(
            ckpt, out, name=name, version=version, weights_dtype="float16" if half else "float32"
        )
    except CheckpointError as error:
        raise _fail(str(error)) from error
    typer.echo(f"{out}  sha256={digest}  input=112px  trained=true  (calibrate before use)")


@model_app.command("info")
def model_info(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Print an artifact's metadata, sha256 and size as JSON."""
    from detector.artifact import ArtifactError, read_metadata, sha256_file

    try:
        metadata = read_metadata(file)
    except ArtifactError as error:
        raise _fail(str(error)) from error
    typer.echo(
        json.dumps(
            {
                "path": str(file),
                "sha256": sha256_file(file),
                "size_bytes": file.stat().st_size,
                "metadata": metadata.model_dump(mode="json"),
            },
            indent=2,
        )
    )


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(file_okay=False)]) -> None:
    """Write the JSON Schema of every contract into DIRECTORY."""
    from schemas.export import json_schemas

    directory.mkdir(parents=True, exist_ok=True)
    for name, document in json_schemas().items():
        target = directory / f"{name}.schema.json"
        target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        typer.echo(str(target))


if __name__ == "__main__":
    app()
