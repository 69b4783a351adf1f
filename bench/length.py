"""Cost against length: the same windows of a video 1, 10 and 60 minutes long.

    python -m bench.length [--sources 1080p=FILE 480p=FILE] [--minutes 1 10 60]
                           [--profile default|today] [--cpu-backend auto] [--workdir DIR]
                           [--json OUT]

A shared clip is looped to each length with the ffmpeg of `imageio-ffmpeg`
(`-stream_loop N -c copy`: the same packets again, no re-encoding), and each long video is
screened once by `Detector.screen_timed`, in a process of its own so that its peak RSS is
its own. Every length gets the same number of windows (`SamplingConfig.windows`), so a
pipeline whose cost follows its windows takes about as long for an hour as for a minute.
The decoder's own count of decoded frames and seeks (`detector.decoding.DecodeStats`) is
read in a second pass that only decodes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import REPO_ROOT, machine, machine_lines, peak_rss_mib, publish_report, quiet
from bench._common import table as render_table

CLIPS = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()
DEFAULT_SOURCES = {
    "1080p": CLIPS / "fake" / "dfdc_abofeumbvv.mp4",
    "480p": CLIPS / "fake" / "ffpp_deepfakes_003_000.mp4",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.length", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        default=[f"{k}={v}" for k, v in DEFAULT_SOURCES.items()],
        help="LABEL=FILE: the clips to loop",
    )
    parser.add_argument("--minutes", nargs="+", type=float, default=[1.0, 10.0, 60.0])
    parser.add_argument("--profile", choices=("default", "today"), default="default")
    parser.add_argument("--cpu-backend", default=None, help="default: the profile's")
    parser.add_argument("--workdir", type=Path, help="keep the looped videos here")
    parser.add_argument("--json", type=Path, dest="json_out")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child: one video
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--derived-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def loop_to(source: Path, minutes: float, out: Path) -> Path:
    """`source` played again and again for `minutes`, packets copied (no re-encoding)."""
    import imageio_ffmpeg

    if out.exists():
        return out
    seconds = minutes * 60
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1"]
    command += ["-i", str(source), "-t", f"{seconds:.3f}", "-map", "0:v:0", "-c", "copy"]
    command += [str(out)]
    subprocess.run(command, check=True)
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: screen one video with the profile's settings; its figures."""
    from bench.scan import profile_config
    from detector.artifact import load
    from detector.backends import build_cpu_scorer
    from detector.batching import BatchingScorer
    from detector.decoding import WindowReader
    from detector.derived import DerivedCache
    from detector.pipeline import Detector
    from detector.probe import open_video
    from detector.sampling import plan_windows

    backend = args.cpu_backend or ("torchscript" if args.profile == "today" else "auto")
    loaded = load(args.model, "cpu")
    scorer = build_cpu_scorer(loaded, backend, cache=DerivedCache(args.derived_dir))
    config = profile_config(args.profile, windows=8)
    detector = Detector(BatchingScorer(scorer), config)
    detector.screen_timed(args.measure.parent / "warm.mp4", video_id="warm")  # first calls
    started = time.perf_counter()
    screening = detector.screen_timed(args.measure, video_id=args.measure.name)
    seconds = time.perf_counter() - started
    detector.close()
    extraction = screening.extraction
    assert extraction is not None, screening.verdict.reason
    length = loaded.metadata.clip_length
    with open_video(args.measure, config.limits) as video:
        starts = plan_windows(video.probe.frame_count, length, config.sampling)
        reader = WindowReader(video, length, seek=config.decoding.seek)
        for _ in reader.windows(starts):
            pass
        frames, stats = video.probe.frame_count, reader.stats
    return {
        "seconds": seconds,
        "decode_s": screening.times.decode_s,
        "faces_s": screening.times.faces_s,
        "model_s": screening.model_s,
        "duration_s": extraction.probe.duration_s,
        "frames": frames,
        "windows": starts,
        "frames_analyzed": extraction.frames_analyzed,
        "clips": screening.clips,
        "decoded_frames": stats.decoded,
        "seeks": stats.seeks,
        "backend": scorer.info.backend,
        "peak_rss_mib": peak_rss_mib(),
        "size_mib": args.measure.stat().st_size / 1024**2,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detector.training.export import init_reference

    sources = dict(item.split("=", 1) for item in args.sources)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-length-") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        model = Path(scratch) / "reference-112.pt"
        init_reference(model, input_size=112)
        derived = Path(scratch) / "derived"
        _derive(model, args, derived)  # once, here: not in any measured process's peak RSS
        for label, source in sources.items():
            loop_to(Path(source), 10 / 60, work / "warm.mp4")
            for minutes in args.minutes:
                video = loop_to(Path(source), minutes, work / f"{label}-{minutes:g}min.mp4")
                out = Path(scratch) / f"{label}-{minutes:g}.json"
                command = [sys.executable, "-m", "bench.length", "--measure", str(video)]
                command += ["--model", str(model), "--derived-dir", str(derived)]
                command += ["--profile", args.profile, "--json", str(out)]
                if args.cpu_backend:
                    command += ["--cpu-backend", args.cpu_backend]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                figures = json.loads(out.read_text())
                figures |= {"source": label, "minutes": minutes}
                rows.append(figures)
                print(
                    f"{label} {minutes:g} min: {figures['seconds']:.1f} s, "
                    f"{figures['decoded_frames']} of {figures['frames']} frames decoded, "
                    f"peak RSS {figures['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
            (work / "warm.mp4").unlink()
    for row in rows:
        first = next(r for r in rows if r["source"] == row["source"])
        row["ratio_to_shortest"] = row["seconds"] / first["seconds"]
    return {
        "benchmark": "length",
        "machine": machine("cpu"),
        "profile": args.profile,
        "sources": sources,
        "rows": rows,
    }


def _derive(model: Path, args: argparse.Namespace, derived: Path) -> None:
    from detector.artifact import load
    from detector.backends import build_cpu_scorer
    from detector.derived import DerivedCache

    backend = args.cpu_backend or ("torchscript" if args.profile == "today" else "auto")
    build_cpu_scorer(load(model, "cpu"), backend, cache=DerivedCache(derived)).close()


def report(result: dict[str, Any]) -> str:
    headers = ["video", "min", "MiB", "frames", "decoded", "seeks", "windows", "clips"]
    headers += ["s", "x shortest", "decode s", "faces s", "model s", "peak RSS MiB"]
    rows = [
        [
            r["source"],
            f"{r['minutes']:g}",
            round(r["size_mib"]),
            r["frames"],
            r["decoded_frames"],
            r["seeks"],
            len(r["windows"]),
            r["clips"],
            f"{r['seconds']:.2f}",
            f"{r['ratio_to_shortest']:.2f}",
            f"{r['decode_s']:.2f}",
            f"{r['faces_s']:.2f}",
            f"{r['model_s']:.2f}",
            round(r["peak_rss_mib"]),
        ]
        for r in result["rows"]
    ]
    backend = result["rows"][0]["backend"] if result["rows"] else "-"
    return "\n".join(
        [
            "deepscreen cost against length (one video a process, after one warm-up video)",
            *machine_lines(result["machine"]),
            f"profile {result['profile']}, model backend {backend}, sources "
            + ", ".join(f"{k}: {Path(v).name}" for k, v in result["sources"].items()),
            "",
            render_table(headers, rows),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    quiet()
    args = parse_args(argv)
    if args.measure:
        figures = measure(args)
        args.json_out.write_text(json.dumps(figures))
        return
    result = run(args)
    publish_report(result, report(result), args.json_out)


if __name__ == "__main__":
    main()
