"""`deepscreen scan | serve | healthcheck | demo`: screening files and running the service."""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consumer.cli.common import app, fail, progress, warn
from detector.config import (
    CPU_BACKENDS,
    BatchingConfig,
    CpuBackendChoice,
    CpuInferenceConfig,
    IsolationConfig,
    SamplingConfig,
)

if TYPE_CHECKING:
    from schemas.verdict import ScreeningVerdict


def media_paths(paths: list[Path]) -> list[Path]:
    """Files as given; directories expanded to the videos and images under them, sorted."""
    from detector.media_files import media_files

    found: list[Path] = []
    for path in paths:
        found += media_files(path) if path.is_dir() else [path]
    return found


@app.command()
def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(exists=True, help="Video or image files, or directories of them."),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="Model artifact (TorchScript). Default: the packaged model."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One ScreeningVerdict JSON per line on stdout.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[
        int, typer.Option(min=1, max=1024, help="Max clips a batch.")
    ] = BatchingConfig.batch_size,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Videos decoded at once (clips batched across).")
    ] = IsolationConfig.workers,
    windows: Annotated[
        int,
        typer.Option(min=1, max=SamplingConfig.max_windows, help="20-frame windows per video."),
    ] = SamplingConfig.windows,
    trust_anchors: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="PEM trust anchors for content credentials (C2PA)."
        ),
    ] = None,
    cpu_backend: Annotated[
        str,
        typer.Option(help="How the model runs on the CPU: auto, " + ", ".join(CPU_BACKENDS) + "."),
    ] = CpuInferenceConfig.backend,
    bank: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A bank file of known fakes (`deepscreen bank export`) to screen against.",
        ),
    ] = None,
) -> None:
    """Screen videos and still images; one verdict per file."""
    from dataclasses import replace

    from consumer.logs import configure_logging

    configure_logging("info", "console", stderr=True)  # stdout is the verdicts'

    from consumer.settings import ProvenanceSettings
    from detector.artifact import ArtifactError, load
    from detector.backends import BackendUnavailable
    from detector.config import PACKAGED_MODEL, DetectorConfig
    from detector.pipeline import build_detector
    from detector.routing import InProcessExtractor, videos_in_flight

    choices: tuple[CpuBackendChoice, ...] = ("auto", *CPU_BACKENDS)
    backend = next((name for name in choices if name == cpu_backend), None)
    if backend is None:
        raise fail(f"--cpu-backend must be one of {', '.join(choices)}")
    model_path = model or PACKAGED_MODEL
    if not model_path.is_file():
        raise fail(
            f"no model at {model_path}; pass --model FILE "
            "(`deepscreen model init --out FILE` writes an untrained reference model)"
        )
    try:
        loaded = load(model_path, device)
    except (ArtifactError, RuntimeError) as error:
        raise fail(f"cannot use {model_path}: {error}") from error
    files = media_paths(paths)
    if not files:
        raise fail("no video or image files found")

    try:  # refused as the service refuses it, not read as every file's unreadable credentials
        credentials = ProvenanceSettings(trust_anchors=trust_anchors).credentials_config()
    except (OSError, ValueError) as error:
        raise fail(f"--trust-anchors: {error}") from error
    config = DetectorConfig()
    config = replace(
        config,
        sampling=replace(config.sampling, windows=windows),
        credentials=replace(config.credentials, trust_anchors_pem=credentials.trust_anchors_pem),
    )
    known_fakes = None
    if bank is not None:
        from detector.bank import Bank
        from detector.bank_file import InvalidBankFile, load_bank

        known_fakes = Bank(config.known_fakes.rule)
        try:
            for entry in load_bank(bank):
                known_fakes.add(entry)
        except InvalidBankFile as error:
            raise fail(str(error)) from error
    try:
        detector = build_detector(
            loaded,
            config,
            batch_size=batch_size,
            cpu=CpuInferenceConfig(backend=backend),
            extractor=InProcessExtractor(config, workers=workers),
            known_fakes=known_fakes,
        )
    except BackendUnavailable as error:
        raise fail(str(error)) from error
    if not loaded.metadata.trained:
        warn(f"{loaded.info.name} is untrained; its scores mean nothing")
    try:
        with (
            ThreadPoolExecutor(
                max_workers=videos_in_flight(workers), thread_name_prefix="scan"
            ) as pool,
            progress(len(files)) as advance,
        ):
            for verdict in pool.map(lambda p: detector.screen(p, video_id=p.name), files):
                advance()
                typer.echo(verdict.model_dump_json() if as_json else summary_line(verdict))
    finally:
        detector.close()


def summary_line(verdict: ScreeningVerdict) -> str:
    """One line a person reads: outcome, action and its signal, model evidence, credentials."""
    from schemas.verdict import Signal

    head = f"{verdict.video_id} [{verdict.media}]: {verdict.outcome.value}"
    if verdict.reason:
        head += f" ({verdict.reason.value})"
    if verdict.action_signal:
        head += f" action={verdict.action.value} by {verdict.action_signal.value}"
    if verdict.score is not None:
        worst = max(verdict.timeline, key=lambda clip: clip.score)
        where = f"{worst.start_s:.1f}-{worst.end_s:.1f}s" if verdict.media == "video" else "still"
        model = (
            f"model score={verdict.score:.3f} faces={verdict.faces_tracked} "
            f"clips={len(verdict.timeline)} frames={verdict.frames_analyzed} "
            f"worst={where} track {worst.track_id}"
        )
    else:
        result = verdict.signal(Signal.MODEL)
        model = f"model: {result.summary}" if result else "model: -"
        if verdict.reason_detail and verdict.action_signal is None:
            model += f" ({verdict.reason_detail})"
    credentials = f" | {verdict.provenance.summary}" if verdict.provenance else ""
    return f"{head} | {model}{credentials} ({verdict.processing_ms} ms)"


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
        settings.detector_config()  # reads the trust anchors: a bad file is named here
    except (ValidationError, OSError, ValueError) as error:
        raise fail(f"invalid settings:\n{error}") from error
    configure_logging(settings.log_level, settings.log_format)
    try:
        running = build_app(settings)
    except (ArtifactError, FileNotFoundError) as error:
        raise fail(f"cannot load the model: {error}") from error
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
        raise fail(f"{videos} is not a directory of videos (use --videos DIR)")
    configure_logging("warning", "console")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # start-up probing is not news
    missing = run_demo(videos, limit, model, echo=typer.echo)
    sys.stdout.flush()
    os._exit(1 if missing else 0)  # decoder and client threads must not hold the exit
