"""Whole-pipeline throughput: screen every video under a directory, as `deepscreen scan` does.

    python -m bench.scan [--model FILE] [--data DIR] [--workers N] [--batch N] [--windows N]
                         [--device auto] [--json OUT]

Wired like the `scan` command: one `Detector` over a `BatchingScorer` around a `TorchScorer`,
and a thread pool of `--workers` threads calling `Detector.screen_timed`. One configuration a
run; the flags choose it. Without `--model` an untrained reference model (ResNeXt50+LSTM,
112 px) is written to a temporary directory: its scores mean nothing, its cost is the real one.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
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
from detector.config import BatchingConfig, IsolationConfig, SamplingConfig
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

    @property
    def metadata(self) -> ModelMetadata:
        metadata: ModelMetadata = self._inner.metadata
        return metadata

    @property
    def info(self) -> ModelInfo:
        info: ModelInfo = self._inner.info
        return info

    def score(self, clips: npt.NDArray[Any]) -> npt.NDArray[Any]:
        tick = time.perf_counter()
        try:
            scores: npt.NDArray[Any] = self._inner.score(clips)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - tick
                self.calls += 1
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
    model_s: float


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
    parser.add_argument("--json", type=Path, dest="json_out", help="write all figures here")
    args = parser.parse_args(argv)
    for flag in ("workers", "batch", "windows"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detector.artifact import load
    from detector.batching import BatchingScorer
    from detector.config import DetectorConfig
    from detector.pipeline import Detector, Screening
    from detector.scoring import TorchScorer
    from detector.training.export import init_reference

    files = sorted(args.data.glob("**/*.mp4"))
    if not files:
        raise SystemExit(f"error: no **/*.mp4 under {args.data}")

    setup_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as scratch:
        model_path: Path = args.model or Path(scratch) / "reference-112.pt"
        if args.model is None:
            init_reference(model_path, input_size=112)
        loaded = load(model_path, args.device)
    setup_s = time.perf_counter() - setup_started

    config = DetectorConfig()
    config = replace(config, sampling=replace(config.sampling, windows=args.windows))
    timed = TimedScorer(TorchScorer(loaded, max_batch=args.batch))
    scorer = BatchingScorer(timed, max_batch=args.batch)
    detector = Detector(scorer, config)

    def screen(path: Path) -> tuple[Path, Screening, float]:
        tick = time.perf_counter()
        screening = detector.screen_timed(path, video_id=path.name)
        return path, screening, time.perf_counter() - tick

    meter = CpuMeter()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="bench") as pool:
            screened = list(pool.map(screen, files))
    finally:
        detector.close()
    wall_s = time.perf_counter() - started
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
            model_s=s.model_s,
        )
        for path, s, seconds in screened
    ]
    frames = sum(v.frames for v in videos)
    clips = sum(v.clips for v in videos)
    video_s = sum(v.duration_s for v in videos)
    stages = {
        "decode": sum(v.decode_s for v in videos),
        "faces": sum(v.faces_s for v in videos),
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
            "data": str(args.data),
            "videos": len(files),
            "model": str(args.model) if args.model else "reference (untrained, init_reference)",
            "model_name": loaded.info.name,
            "input_size": loaded.metadata.input_size,
            "trained": loaded.metadata.trained,
            "workers": args.workers,
            "batch": args.batch,
            "windows": args.windows,
            "device": str(loaded.device),
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
        "model_compute_s": timed.seconds,
        "model_compute_share_of_wall_pct": 100 * timed.seconds / wall_s,
        "batches": scorer.stats.batches,
        "mean_batch": (scorer.stats.clips / scorer.stats.batches) if scorer.stats.batches else 0.0,
        "batch_sizes": scorer.stats.sizes,
        "videos_detail": [v.__dict__ for v in videos],
    }


def report(result: dict[str, Any]) -> str:
    c = result["config"]
    share = result["stage_share_pct"]
    stage_s = result["stage_s"]
    summary = [
        ("videos", f"{c['videos']} under {c['data']}"),
        ("model", f"{c['model_name']} ({c['input_size']} px, trained={c['trained']})"),
        (
            "config",
            f"workers={c['workers']} batch={c['batch']} windows={c['windows']} "
            f"device={c['device']}",
        ),
        ("setup (model write + load)", f"{result['setup_s']:.2f} s (not in wall)"),
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
            "  ".join(
                f"{k} {share[k]:.1f}% ({stage_s[k]:.2f} s)" for k in ("decode", "faces", "model")
            ),
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
    result = run(args)
    publish_report(result, report(result), args.json_out)


if __name__ == "__main__":
    main()
