"""Whole-pipeline throughput: screen every video under a directory, as `deepscreen scan` does.

    python -m bench.scan [--profile default|today] [--compare] [--repeats N]
                         [--model FILE] [--data DIR] [--workers N] [--batch N] [--windows N]
                         [--device auto] [--cpu-backend auto] [--clips-per-run N]
                         [--calibration DIR] [--derived-dir DIR] [--json OUT]

Wired like the `scan` command (`build_detector`): one `Detector` over a `BatchingScorer` around
the CPU backend the settings choose (or the TorchScript module on a GPU), and a thread pool
calling `Detector.screen_timed` with twice `--workers` videos in flight, `--workers` of them
decoded at once (today: `--workers` threads, each decoding then waiting for its scores).
Without `--model` an untrained reference model (ResNeXt50+LSTM, 112 px) is written to a
temporary directory: its scores mean nothing, its cost is the real one. `--profile today` is
the pipeline before the performance work (every frame decoded, faces on every frame, the
TorchScript module); `--compare` runs both profiles `--repeats` times, alternating, each run
in a process of its own, and reports medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy.typing as npt

from bench._common import (
    REPO_ROOT,
    CpuMeter,
    cpu_line,
    machine,
    machine_lines,
    peak_rss_mib,
    publish_report,
    quiet,
    table,
)
from detector.config import (
    BatchingConfig,
    CpuInferenceConfig,
    DetectorConfig,
    IsolationConfig,
    SamplingConfig,
)
from schemas.model import ModelInfo, ModelMetadata

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()


class TimedScorer:
    """A `ClipScorer` that adds up the time its inner scorer spends (the model's own time).

    `Screening.model_s` is what a video *waited* for its scores behind the batcher, which
    includes other videos' clips in the same batch and the batcher's wait; this is the time
    the model actually ran.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.seconds = 0.0
        self.calls = 0
        self.spans: list[tuple[float, float]] = []  # time.monotonic(), for busy shares

    @property
    def metadata(self) -> ModelMetadata:
        metadata: ModelMetadata = self._inner.metadata
        return metadata

    @property
    def info(self) -> ModelInfo:
        info: ModelInfo = self._inner.info
        return info

    def score(self, clips: npt.NDArray[Any]) -> npt.NDArray[Any]:
        tick = time.monotonic()
        try:
            scores: npt.NDArray[Any] = self._inner.score(clips)
        finally:
            tock = time.monotonic()
            with self._lock:
                self.seconds += tock - tick
                self.calls += 1
                self.spans.append((tick, tock))
        return scores

    def close(self) -> None:
        self._inner.close()


@dataclass(frozen=True)
class VideoResult:
    name: str
    outcome: str
    clips: int
    frames: int
    duration_s: float
    ms: float  # wall time of screen_timed for this video
    decode_s: float
    faces_s: float
    hash_s: float
    model_s: float


STAGES = ("decode", "faces", "hash", "model")
PROFILES = {
    "default": "the shipped defaults",
    "today": "before the performance work: every frame decoded from the start, faces "
    "detected on every frame, the TorchScript module",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scan", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--model", type=Path, help="model artifact; default: untrained, 112 px")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"videos (**/*.mp4); default {DEFAULT_DATA}"
    )
    parser.add_argument(
        "--workers", type=int, default=IsolationConfig.workers, help="videos screened at once"
    )
    parser.add_argument(
        "--batch", type=int, default=BatchingConfig.batch_size, help="max clips a model batch"
    )
    parser.add_argument(
        "--windows", type=int, default=SamplingConfig.windows, help="20-frame windows a video"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument(
        "--cpu-backend",
        default=None,
        help="the model's CPU backend; default: the profile's (default: auto, today: torchscript)",
    )
    parser.add_argument(
        "--clips-per-run",
        type=int,
        default=None,
        help="clips a CPU backend runs at once; default: the profile's (default: the"
        " settings', 4; today: --batch)",
    )
    parser.add_argument("--calibration", type=Path, help="videos to calibrate an int8 form on")
    parser.add_argument(
        "--derived-dir", type=Path, help="cache of derived model forms; default: a fresh one"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each profile (medians)")
    parser.add_argument(
        "--compare", action="store_true", help="run the `today` and `default` profiles"
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write all figures here")
    args = parser.parse_args(argv)
    for flag in ("workers", "batch", "windows", "repeats", "clips_per_run"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    return args


def profile_config(profile: str, windows: int) -> DetectorConfig:
    """The detector configuration a profile screens with."""
    config = DetectorConfig()
    config = replace(config, sampling=replace(config.sampling, windows=windows))
    if profile == "today":
        config = replace(
            config,
            decoding=replace(config.decoding, seek=False),
            faces=replace(config.faces, detect_every=1),
        )
    return config


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run of one profile, in this process."""
    from detector.artifact import load
    from detector.backends import build_cpu_scorer
    from detector.batching import BatchingScorer
    from detector.derived import DerivedCache, directory_calibration
    from detector.pipeline import Detector, Screening
    from detector.routing import InProcessExtractor, videos_in_flight
    from detector.scoring import ClipScorer, TorchScorer
    from detector.training.export import init_reference

    files = sorted(args.data.glob("**/*.mp4"))
    if not files:
        raise SystemExit(f"error: no **/*.mp4 under {args.data}")
    backend = args.cpu_backend or ("torchscript" if args.profile == "today" else "auto")

    with tempfile.TemporaryDirectory(prefix="bench-scan-") as scratch:
        setup_started = time.perf_counter()
        model_path: Path = args.model or Path(scratch) / "reference-112.pt"
        if args.model is None:
            init_reference(model_path, input_size=112)
        loaded = load(model_path, args.device)
        inner: ClipScorer
        if loaded.device.type == "cpu":
            calibration = (
                directory_calibration(
                    args.calibration,
                    loaded.metadata,
                    max_clips=CpuInferenceConfig.calibration_clips,
                )
                if args.calibration
                else None
            )
            cache = DerivedCache(args.derived_dir or Path(scratch) / "derived")
            defaults = CpuInferenceConfig()
            # as `build_detector` runs it; today's pipeline ran whole batches at once
            clips_per_run = min(
                args.batch,
                args.clips_per_run
                or (args.batch if args.profile == "today" else defaults.clips_per_run),
            )
            inner = build_cpu_scorer(
                loaded,
                backend,
                cache=cache,
                max_batch=clips_per_run,
                calibration=calibration,
                self_calibration_clips=defaults.calibration_clips if defaults.self_calibrate else 0,
            )
        else:
            clips_per_run = args.batch  # a GPU takes a whole batch at once
            inner = TorchScorer(loaded, max_batch=args.batch)
        setup_s = time.perf_counter() - setup_started

        config = profile_config(args.profile, args.windows)
        timed = TimedScorer(inner)
        scorer = BatchingScorer(timed, max_batch=args.batch, max_wait_s=BatchingConfig.wait_s)
        # As `scan`: `--workers` decode at once, each with a video waiting for its scores;
        # today's pipeline decoded, then waited, in each of `--workers` threads.
        in_flight = args.workers if args.profile == "today" else videos_in_flight(args.workers)
        extractor = InProcessExtractor(config, workers=args.workers)
        detector = Detector(scorer, config, extractor=extractor)

        def screen(path: Path) -> tuple[Path, Screening, float]:
            tick = time.perf_counter()
            screening = detector.screen_timed(path, video_id=path.name)
            return path, screening, time.perf_counter() - tick

        meter = CpuMeter()
        started = time.perf_counter()
        began = time.monotonic()
        try:
            with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="bench") as pool:
                screened = list(pool.map(screen, files))
        finally:
            detector.close()
        wall_s = time.perf_counter() - started
        ended = time.monotonic()
        cpu = meter.read()

    videos = [
        VideoResult(
            name=str(path.relative_to(args.data)),
            outcome=s.verdict.outcome.value,
            clips=s.clips,
            frames=s.extraction.frames_analyzed if s.extraction else 0,
            duration_s=s.extraction.probe.duration_s if s.extraction else 0.0,
            ms=seconds * 1000,
            decode_s=s.times.decode_s,
            faces_s=s.times.faces_s,
            hash_s=s.times.hash_s,
            model_s=s.model_s,
        )
        for path, s, seconds in screened
    ]
    spans = [span for _, s, _ in screened for span in s.times.spans]
    spans += [("model", a, b) for a, b in timed.spans]
    busy = busy_shares(spans, began, ended)
    frames = sum(v.frames for v in videos)
    clips = sum(v.clips for v in videos)
    video_s = sum(v.duration_s for v in videos)
    stages = {
        "decode": sum(v.decode_s for v in videos),
        "faces": sum(v.faces_s for v in videos),
        "hash": sum(v.hash_s for v in videos),
        "model": sum(v.model_s for v in videos),
    }
    stage_total = sum(stages.values()) or 1.0
    outcomes: dict[str, int] = {}
    for v in videos:
        outcomes[v.outcome] = outcomes.get(v.outcome, 0) + 1
    return {
        "benchmark": "scan",
        "machine": machine(str(loaded.device)),
        "config": {
            "profile": args.profile,
            "profile_means": PROFILES[args.profile],
            "data": str(args.data),
            "videos": len(files),
            "model": str(args.model) if args.model else "reference (untrained, init_reference)",
            "model_name": loaded.info.name,
            "input_size": loaded.metadata.input_size,
            "trained": loaded.metadata.trained,
            "workers": args.workers,
            "batch": args.batch,
            "clips_per_run": clips_per_run,
            "windows": args.windows,
            "device": str(loaded.device),
            "backend": timed.info.backend,
            "decode_seek": config.decoding.seek,
            "decode_threads": config.decoding.threads,
            "detect_every": config.faces.detect_every,
        },
        "setup_s": setup_s,
        "wall_s": wall_s,
        "frames_analyzed": frames,
        "frames_per_s": frames / wall_s,
        "video_s": video_s,
        "video_s_per_s": video_s / wall_s,
        "clips": clips,
        "clips_per_s": clips / wall_s,
        "peak_rss_mib": peak_rss_mib(),
        "cpu": cpu,
        "outcomes": outcomes,
        "stage_s": stages,
        "stage_share_pct": {k: 100 * v / stage_total for k, v in stages.items()},
        "busy_pct": busy,
        "model_compute_s": timed.seconds,
        "model_compute_share_of_wall_pct": 100 * timed.seconds / wall_s,
        "batches": scorer.stats.batches,
        "mean_batch": (scorer.stats.clips / scorer.stats.batches) if scorer.stats.batches else 0.0,
        "batch_sizes": scorer.stats.sizes,
        "videos_detail": [v.__dict__ for v in videos],
    }


def busy_shares(
    spans: Sequence[tuple[str, float, float]], began: float, ended: float
) -> dict[str, float]:
    """% of the wall time each stage was busy (in any thread or process), and none was.

    Overlapping spans of one stage (two videos decoding at once) count once: this is the
    time the stage was running at all, so the shares of the stages add up to more than
    100 % exactly where stages overlapped.
    """
    wall = max(ended - began, 1e-9)
    shares: dict[str, float] = {}
    for stage in STAGES:
        shares[stage] = 100 * _union_s([(a, b) for name, a, b in spans if name == stage]) / wall
    shares["any"] = 100 * _union_s([(a, b) for _, a, b in spans]) / wall
    shares["idle"] = 100 - shares["any"]
    return shares


def _union_s(intervals: Sequence[tuple[float, float]]) -> float:
    total = 0.0
    end = float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


# -- several runs: each in a process of its own (peak RSS is a process's) ----------------

_MEDIAN_FIGURES = (
    "wall_s",
    "frames_per_s",
    "video_s_per_s",
    "clips_per_s",
    "peak_rss_mib",
    "model_compute_share_of_wall_pct",
)


def run_many(args: argparse.Namespace) -> dict[str, Any]:
    """`--repeats` runs of each profile asked for, alternating, each in a child process."""
    profiles = ["today", "default"] if args.compare else [args.profile]
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in profiles}
    with tempfile.TemporaryDirectory(prefix="bench-scan-runs-") as scratch:
        for repeat in range(args.repeats):
            for profile in profiles:
                out = Path(scratch) / f"{profile}-{repeat}.json"
                command = [sys.executable, "-m", "bench.scan", *_child_args(args, profile)]
                command += ["--json", str(out)]
                print(f"run {repeat + 1}/{args.repeats} {profile} ...", flush=True)
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                result = json.loads(out.read_text())
                runs[profile].append(result)
                print(
                    f"  {result['video_s_per_s']:.2f} video-s/s, {result['frames_per_s']:.1f} "
                    f"frames/s, peak RSS {result['peak_rss_mib']:.0f} MiB "
                    f"({result['config']['backend']})",
                    flush=True,
                )
    medians = {
        profile: {
            figure: statistics.median(r[figure] for r in results) for figure in _MEDIAN_FIGURES
        }
        | {
            "busy_pct": {
                stage: statistics.median(r["busy_pct"][stage] for r in results)
                for stage in results[0]["busy_pct"]
            },
            "others_cpu_s": max((r["cpu"].get("others_cpu_s") or 0.0) for r in results),
            "config": results[0]["config"],
        }
        for profile, results in runs.items()
    }
    return {
        "benchmark": "scan-repeated",
        "machine": runs[profiles[0]][0]["machine"],
        "repeats": args.repeats,
        "medians": medians,
        "runs": runs,
    }


def _child_args(args: argparse.Namespace, profile: str) -> list[str]:
    argv = ["--profile", profile, "--data", str(args.data), "--device", args.device]
    argv += ["--workers", str(args.workers), "--batch", str(args.batch)]
    argv += ["--windows", str(args.windows)]
    for flag, value in (
        ("--model", args.model),
        ("--cpu-backend", args.cpu_backend),
        ("--clips-per-run", args.clips_per_run),
        ("--calibration", args.calibration),
        ("--derived-dir", args.derived_dir),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def report_many(result: dict[str, Any]) -> str:
    medians = result["medians"]
    profiles = list(medians)
    rows: list[list[object]] = []
    labels = (
        ("video seconds / wall s", "video_s_per_s", "{:.2f}"),
        ("frames analysed / s", "frames_per_s", "{:.1f}"),
        ("clips scored / s", "clips_per_s", "{:.2f}"),
        ("wall s", "wall_s", "{:.1f}"),
        ("peak RSS MiB", "peak_rss_mib", "{:.0f}"),
        ("model ran, % of wall", "model_compute_share_of_wall_pct", "{:.0f}"),
    )
    for label, key, fmt in labels:
        rows.append([label, *(fmt.format(medians[p][key]) for p in profiles)])
    for stage in STAGES:
        shares = (f"{medians[p]['busy_pct'][stage]:.0f}" for p in profiles)
        rows.append([f"{stage} busy, % of wall", *shares])
    rows.append(
        ["no stage busy, % of wall", *(f"{medians[p]['busy_pct']['idle']:.0f}" for p in profiles)]
    )
    rows.append(["model backend", *(medians[p]["config"]["backend"] for p in profiles)])
    rows.append(
        ["others' CPU s (max of runs)", *(f"{medians[p]['others_cpu_s']:.1f}" for p in profiles)]
    )
    if len(profiles) == 2:
        a, b = profiles
        rows.append(
            [
                "default / today (video-s/s)",
                "",
                f"{medians[b]['video_s_per_s'] / medians[a]['video_s_per_s']:.2f}x",
            ]
        )
    return "\n".join(
        [
            f"deepscreen scan benchmark: medians of {result['repeats']} runs a profile",
            *machine_lines(result["machine"]),
            *(f"{p}: {PROFILES[p]}" for p in profiles),
            "",
            table(["figure", *profiles], rows),
        ]
    )


def report(result: dict[str, Any]) -> str:
    c = result["config"]
    share = result["stage_share_pct"]
    stage_s = result["stage_s"]
    summary = [
        ("videos", f"{c['videos']} under {c['data']}"),
        ("model", f"{c['model_name']} ({c['input_size']} px, trained={c['trained']})"),
        (
            "config",
            f"profile={c['profile']} workers={c['workers']} batch={c['batch']} "
            f"clips_per_run={c.get('clips_per_run', c['batch'])} "
            f"windows={c['windows']} device={c['device']} backend={c['backend']} "
            f"seek={c['decode_seek']} decode_threads={c['decode_threads']} "
            f"detect_every={c['detect_every']}",
        ),
        ("setup (model, derived form)", f"{result['setup_s']:.2f} s (not in wall)"),
        ("wall", f"{result['wall_s']:.2f} s"),
        ("frames analysed", f"{result['frames_analyzed']} → {result['frames_per_s']:.1f} /s"),
        ("video seconds", f"{result['video_s']:.1f} → {result['video_s_per_s']:.2f} per wall s"),
        ("clips scored", f"{result['clips']} → {result['clips_per_s']:.2f} /s"),
        (
            "model batches",
            f"{result['batches']} (mean {result['mean_batch']:.1f} clips; "
            f"model ran {result['model_compute_s']:.2f} s = "
            f"{result['model_compute_share_of_wall_pct']:.0f}% of wall)",
        ),
        (
            "stage share (Σ per video)",
            "  ".join(f"{k} {share[k]:.1f}% ({stage_s[k]:.2f} s)" for k in STAGES),
        ),
        (
            "busy (% of wall)",
            "  ".join(f"{k} {result['busy_pct'][k]:.0f}%" for k in STAGES)
            + f"  none {result['busy_pct']['idle']:.0f}%",
        ),
        ("outcomes", ", ".join(f"{k} {n}" for k, n in sorted(result["outcomes"].items()))),
        ("peak RSS", f"{result['peak_rss_mib']:.0f} MiB"),
        ("CPU during wall", cpu_line(result["cpu"]).removeprefix("CPU: ")),
    ]
    width = max(len(k) for k, _ in summary)
    rows = [
        (
            v["name"],
            v["outcome"],
            v["clips"],
            v["frames"],
            round(v["duration_s"], 1),
            round(v["ms"]),
            round(v["decode_s"] * 1000),
            round(v["faces_s"] * 1000),
            round(v["model_s"] * 1000),
        )
        for v in result["videos_detail"]
    ]
    return "\n".join(
        [
            "deepscreen scan benchmark",
            *machine_lines(result["machine"]),
            "",
            *(f"{k.ljust(width)}  {v}" for k, v in summary),
            "",
            table(
                [
                    "video",
                    "outcome",
                    "clips",
                    "frames",
                    "video s",
                    "ms",
                    "decode ms",
                    "faces ms",
                    "model ms",
                ],
                rows,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    quiet()
    args = parse_args(argv)
    if args.compare or args.repeats > 1:
        result = run_many(args)
        publish_report(result, report_many(result), args.json_out)
        return
    result = run(args)
    publish_report(result, report(result), args.json_out)


if __name__ == "__main__":
    main()
