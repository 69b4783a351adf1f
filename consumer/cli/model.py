"""`deepscreen model ...`: make, inspect, train, evaluate and calibrate model artifacts.

The work is done by `detector.training.workflows`; these commands parse
options, show progress, print the result, and turn a `WorkflowError` into a
usage error with its message.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from consumer.cli.common import fail, progress, warn
from detector.config import IsolationConfig

if TYPE_CHECKING:
    from detector.training.trainer import Progress

app = typer.Typer(help="Make and inspect model artifacts.", no_args_is_help=True)

DEVICE_HELP = "auto, cpu, cuda or cuda:N."


@contextmanager
def _usage_errors() -> Iterator[None]:
    """A `WorkflowError` (no data, an unusable model file) exits 2 with its message."""
    from detector.training.workflows import WorkflowError

    try:
        yield
    except WorkflowError as error:
        raise fail(str(error)) from error


def _check_input_size(input_size: int) -> None:
    from detector.architecture import INPUT_SIZES

    if input_size not in INPUT_SIZES:
        raise fail(f"--input-size must be one of {', '.join(map(str, INPUT_SIZES))}")


def _existing_file(help: str) -> Any:
    """An option naming a file that must exist."""
    return typer.Option(exists=True, dir_okay=False, help=help)


@app.command("init")
def model_init(
    out: Annotated[Path, typer.Option(help="Where to write the artifact.")],
    input_size: Annotated[int, typer.Option(help="Face crop side: 112 or 224.")] = 112,
    lstm_hidden: Annotated[int, typer.Option(min=1, max=4096)] = 256,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write an untrained reference model (metadata `trained: false`)."""
    _check_input_size(input_size)
    from detector.training.export import init_reference

    digest = init_reference(out, input_size=input_size, lstm_hidden=lstm_hidden, seed=seed)
    typer.echo(f"{out}  sha256={digest}  input={input_size}px  trained=false")


@app.command("train")
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
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
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
        _existing_file("torchvision ImageNet state dict for --backbone (default: from scratch)."),
    ] = None,
    teacher: Annotated[
        Path | None,
        _existing_file(
            "A trained deepscreen model to distil from (its features and probabilities)."
        ),
    ] = None,
    distil_weight: Annotated[
        float, typer.Option(min=0, help="Weight of the teacher's terms against the labels'.")
    ] = 1.0,
) -> None:
    """Train a per-frame CNN + LSTM (ResNeXt50 by default); write a TorchScript artifact."""
    from detector.architecture import BACKBONES

    _check_input_size(input_size)
    if backbone not in BACKBONES:
        raise fail(f"--backbone must be one of {', '.join(sorted(BACKBONES))}")
    from rich.console import Console

    from consumer import code_version
    from detector.training.trainer import TrainConfig
    from detector.training.workflows import prepare_training_data, train_model

    console = Console(stderr=True)
    with _usage_errors(), _bar(console, "caching clips") as cached:
        prepared = prepare_training_data(
            data, cache or out.with_suffix(".cache"), self_blend=self_blend,
            input_size=input_size, limit=limit, seed=seed, workers=workers, on_cached=cached,
        )  # fmt: skip
    manifest = prepared.manifest
    if manifest.skipped_unreadable:
        warn(f"{manifest.skipped_unreadable} files under {data} could not be read; left out")
    index = prepared.index
    fakes = int(index.labels.sum())
    console.print(f"{len(index)} clips ({fakes} fake) from {prepared.description}")
    config = TrainConfig(
        input_size=input_size, lstm_hidden=lstm_hidden, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, train_frames=train_frames, seed=seed, device=device,
        max_minutes=max_minutes, backbone=backbone,
        backbone_weights=str(backbone_weights) if backbone_weights else None,
        teacher=str(teacher) if teacher else None, distil_weight=distil_weight,
    )  # fmt: skip
    with _training_display(console) as show:
        result = train_model(
            prepared, data, out, config,
            checkpoint_dir=checkpoint_dir or out.with_suffix(".checkpoints"), resume=resume,
            command="deepscreen " + shlex.join(sys.argv[1:]), code_version=code_version(),
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


@contextmanager
def _bar(console: object, label: str) -> Iterator[Callable[[int, int], None]]:
    """A done/total bar for the caching step."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    assert isinstance(console, Console)
    columns = (TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextmanager
def _training_display(console: object) -> Iterator[Callable[[Progress], None]]:
    """A bar for training steps; on a non-terminal, a line every 25 steps and each epoch."""
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    assert isinstance(console, Console)
    columns = (TextColumn("training epoch {task.fields[epoch]}"), BarColumn(),
               TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]:.4f} "
                          "val AUC {task.fields[auc]}"), TimeElapsedColumn())  # fmt: skip
    with Bar(*columns, console=console) as bar:
        task = bar.add_task("train", total=1, epoch=0, loss=0.0, auc="-")

        def show(step: Progress) -> None:
            auc = "-" if step.validation_auc is None else f"{step.validation_auc:.3f}"
            bar.update(task, completed=step.step, total=step.total_steps, epoch=step.epoch,
                       loss=step.loss, auc=auc)  # fmt: skip
            if step.validation_auc is not None or (not sys.stderr.isatty() and step.step % 25 == 0):
                console.print(
                    f"epoch {step.epoch} step {step.step}/{step.total_steps} "
                    f"loss {step.loss:.4f} val_auc {step.validation_auc}"
                )

        yield show


@app.command("evaluate")
def model_evaluate(
    data: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="real/ and fake/ videos.")
    ],
    report: Annotated[Path, typer.Option(help="Where to write the JSON report (+ .png ROC).")],
    model: Annotated[Path | None, typer.Option(help="Default: the packaged model.")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    workers: Annotated[int, typer.Option(min=1, max=64)] = IsolationConfig.workers,
) -> None:
    """Score every video through the `scan` pipeline; write AUC (+CI), accuracy, F1, EER."""
    from detector.config import PACKAGED_MODEL
    from detector.training.data import labelled_videos
    from detector.training.workflows import evaluate_model, load_model

    with _usage_errors():
        loaded = load_model(model or PACKAGED_MODEL, device)
        with progress(len(labelled_videos(data))) as advance:
            document = evaluate_model(loaded, data, report, workers=workers,
                                      on_done=lambda _: advance())  # fmt: skip
    summary = document.model_dump(
        mode="json", include={"n", "n_scored", "auc", "auc_ci95", "accuracy", "f1", "eer",
                              "threshold"},
    )  # fmt: skip
    typer.echo(json.dumps(summary))


@app.command("calibrate")
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
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Videos decoded at once.")
    ] = IsolationConfig.workers,
) -> None:
    """Temperature scaling and review/block thresholds at target false-positive rates.

    Never calibrate on the data you evaluate on.
    """
    if not 0 < block_fpr <= review_fpr < 1:
        raise fail("need 0 < --block-fpr <= --review-fpr < 1")
    from detector.training.workflows import (
        calibrate_model,
        calibrate_thresholds_on_real_videos,
    )

    with _usage_errors():
        if thresholds_only:
            result = calibrate_thresholds_on_real_videos(
                model, data, out, review_fpr=review_fpr, block_fpr=block_fpr, device=device,
                workers=workers,
            )  # fmt: skip
        else:
            result = calibrate_model(
                model, data, out, review_fpr=review_fpr, block_fpr=block_fpr,
                validation_share=validation_share, device=device,
            )  # fmt: skip
    for message in result.warnings:
        warn(message)
    typer.echo(result.summary(out))


@app.command("import-checkpoint")
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
    from detector.training.checkpoint_import import CheckpointError, import_checkpoint

    try:
        digest = import_checkpoint(
            ckpt, out, name=name, version=version, weights_dtype="float16" if half else "float32"
        )
    except CheckpointError as error:
        raise fail(str(error)) from error
    typer.echo(f"{out}  sha256={digest}  input=112px  trained=true  (calibrate before use)")


@app.command("info")
def model_info(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Print an artifact's metadata, sha256 and size as JSON."""
    from detector.artifact import ArtifactError, read_metadata, sha256_file

    try:
        metadata = read_metadata(file)
    except ArtifactError as error:
        raise fail(str(error)) from error
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


EXPORT_FORMATS = ("onnx",)


@app.command("export")
def model_export(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write the model.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format", help="onnx: uint8 clips (batch, frames, H, W, 3) → logits, p_fake."
        ),
    ] = "onnx",
    model: Annotated[
        Path | None, _existing_file("The TorchScript artifact (default: the packaged model).")
    ] = None,
) -> None:
    """Export the artifact for edge and mobile runtimes (dynamic batch and clip length).

    The file carries the artifact's metadata and what it was made from (its sha256, the
    tool versions) in its ONNX metadata properties `deepscreen.json` and
    `deepscreen-derived.json`.
    """
    if format_ not in EXPORT_FORMATS:
        raise fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}")
    from detector.artifact import ArtifactError, load, sha256_file
    from detector.config import PACKAGED_MODEL
    from detector.derived import DerivedError, write_onnx

    source = model or PACKAGED_MODEL
    try:
        loaded = load(source, "cpu")
    except (ArtifactError, RuntimeError) as error:
        raise fail(f"cannot use {source}: {error}") from error
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(file.name + ".partial")
    try:
        derived = write_onnx(loaded, partial)
    except (DerivedError, ImportError) as error:
        partial.unlink(missing_ok=True)
        raise fail(str(error)) from error
    partial.replace(file)
    typer.echo(
        json.dumps(
            {
                "path": str(file),
                "format": format_,
                "sha256": sha256_file(file),
                "size_bytes": file.stat().st_size,
                "source_sha256": derived.source_sha256,
                "inputs": {"clips": ["batch", "frames", loaded.metadata.input_size,
                                     loaded.metadata.input_size, 3]},
                "outputs": {"logits": ["batch"], "p_fake": ["batch"]},
                "tools": derived.tools,
            },
            indent=2,
        )
    )  # fmt: skip


@app.command("derive")
def model_derive(
    backend: Annotated[str, typer.Option(help="The CPU backend whose form to make.")],
    model: Annotated[
        Path | None, _existing_file("The TorchScript artifact (default: the packaged model).")
    ] = None,
    calibration_videos: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="int8: videos like your uploads; their face clips calibrate the quantisation.",
        ),
    ] = None,
    calibration_clips: Annotated[int, typer.Option(min=1, max=1024)] = 16,
    derived_dir: Annotated[
        Path | None, typer.Option(help="The derived-form cache (default: the service's).")
    ] = None,
) -> None:
    """Make the derived form a CPU backend runs (and the forms it needs) into the cache.

    The service makes a missing form at start-up; this makes it ahead (an image build, an
    init container), and is the way to calibrate an int8 form on chosen videos.
    """
    from detector.artifact import ArtifactError, load
    from detector.backends import BACKEND_FORMS
    from detector.config import CPU_BACKENDS, PACKAGED_MODEL, CpuInferenceConfig
    from detector.derived import DerivedCache, DerivedError, derive, describe, directory_calibration

    chosen = next((name for name in CPU_BACKENDS if name == backend), None)
    if chosen is None:
        raise fail(f"--backend must be one of {', '.join(CPU_BACKENDS)}")
    form = BACKEND_FORMS[chosen]
    if form is None:
        raise fail(f"{backend} runs the artifact itself: there is nothing to derive")
    source = model or PACKAGED_MODEL
    try:
        loaded = load(source, "cpu")
    except (ArtifactError, RuntimeError) as error:
        raise fail(f"cannot use {source}: {error}") from error
    calibration = (
        directory_calibration(calibration_videos, loaded.metadata, max_clips=calibration_clips)
        if calibration_videos
        else None
    )
    cache = DerivedCache(derived_dir or CpuInferenceConfig().derived_dir)
    try:
        made = derive(loaded, form, cache, calibration)
    except (DerivedError, ImportError) as error:
        raise fail(str(error)) from error
    typer.echo(json.dumps(describe(made), indent=2))
