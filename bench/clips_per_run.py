"""A CPU backend's memory and speed against the clips it runs at once (`clips_per_run`).

    python -m bench.clips_per_run [--model FILE] [--backends openvino-int8 openvino]
                                  [--runs 32 8 4 2 1] [--batch 32] [--repeats 2]
                                  [--derived-dir DIR] [--json OUT]

A batch of `--batch` random uint8 clips (N, 20, S, S, 3) is scored by `build_cpu_scorer` with
`max_batch` = each of `--runs`, as `build_detector` does with `clips_per_run`. Each
(backend, clips a run) pair runs in a fresh process of its own, so that its peak resident
memory (`VmHWM`) is its own: the runtime loaded from the derived cache, one untimed batch,
then `--repeats` timed batches (ms a clip: the fastest). int8 forms are calibrated once, on
the random clips (setup; the activation ranges do not matter for cost). Without `--model`
the untrained reference model (112 px) is written to a temporary directory.
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

import numpy as np

from bench._common import (
    REPO_ROOT,
    CpuMeter,
    bench_main,
    machine,
    memory_mib,
    peak_rss_mib,
    report_text,
)

CLIP_LENGTH = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.clips_per_run",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--model", type=Path, help="artifact; default: untrained, 112 px")
    parser.add_argument("--backends", nargs="+", default=["openvino-int8", "openvino"])
    parser.add_argument("--runs", type=int, nargs="+", default=[32, 8, 4, 2, 1])
    parser.add_argument("--batch", type=int, default=32, help="clips in the batch scored")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches (fastest kept)")
    parser.add_argument("--derived-dir", type=Path, help="keep derived forms here")
    parser.add_argument("--json", type=Path, dest="json_out", help="write every figure here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, as JSON
    args = parser.parse_args(argv)
    if min([args.batch, args.repeats, *args.runs]) < 1:
        parser.error("--batch, --repeats and --runs are at least 1")
    return args


def random_clips(count: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, CLIP_LENGTH, size, size, 3), dtype=np.uint8)


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """In the child: load `job["backend"]` from the cache, score the batch, report."""
    from detector.artifact import load
    from detector.backends import build_cpu_scorer
    from detector.derived import DerivedCache

    loaded = load(Path(job["model"]), "cpu")
    clips = random_clips(job["batch"], loaded.metadata.input_size)
    before = memory_mib("VmRSS")
    scorer = build_cpu_scorer(
        loaded, job["backend"], cache=DerivedCache(Path(job["derived"])), max_batch=job["run"]
    )
    loaded_mib = memory_mib("VmRSS")
    scorer.score(clips)  # untimed: first calls allocate
    times = []
    for _ in range(job["repeats"]):
        tick = time.perf_counter()
        scorer.score(clips)
        times.append(time.perf_counter() - tick)
    return {
        "backend": scorer.info.backend,
        "clips_per_run": job["run"],
        "ms_per_clip": 1000 * min(times) / len(clips),
        "rss_before_mib": before,
        "rss_loaded_mib": loaded_mib,
        "peak_rss_mib": memory_mib("VmHWM"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detector.artifact import load
    from detector.backends import BACKEND_FORMS
    from detector.derived import CalibrationClips, DerivedCache, derive
    from detector.training.export import init_reference

    meter = CpuMeter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-clips-per-run-") as scratch:
        model = args.model or Path(scratch) / "reference-112.pt"
        if args.model is None:
            init_reference(model, input_size=112)
        derived = args.derived_dir or Path(scratch) / "derived"
        loaded = load(model, "cpu")
        calibration = CalibrationClips(
            random_clips(16, loaded.metadata.input_size), "random clips (cost only)"
        )
        for backend in args.backends:  # made here, so that the children only load them
            form = BACKEND_FORMS.get(backend)
            if form is not None:
                derive(loaded, form, DerivedCache(derived), lambda: calibration)
        for backend in args.backends:
            for clips_per_run in args.runs:
                job = {
                    "model": str(model), "derived": str(derived), "backend": backend,
                    "run": clips_per_run, "batch": args.batch, "repeats": args.repeats,
                }  # fmt: skip
                done = subprocess.run(
                    [sys.executable, "-m", "bench.clips_per_run", "--child", json.dumps(job)],
                    cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                )  # fmt: skip
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{backend} {clips_per_run}: {rows[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    return {
        "benchmark": "clips_per_run",
        "machine": machine("cpu"),
        "model": str(args.model) if args.model else "reference (untrained, init_reference)",
        "batch": args.batch,
        "rows": rows,
        "peak_rss_mib": peak_rss_mib(),
        "cpu": meter.read(),
    }


def report(result: dict[str, Any]) -> str:
    return report_text(
        "a CPU backend against the clips it runs at once",
        result,
        [f"model {result['model']}; a batch of {result['batch']} clips, 20 frames each"],
        ["backend", "clips a run", "ms a clip", "RSS loaded MiB", "peak RSS MiB"],
        [row(r) for r in result["rows"]],
    )


def row(r: dict[str, Any]) -> list[object]:
    return [
        r["backend"],
        r["clips_per_run"],
        round(r["ms_per_clip"], 1),
        round(r["rss_loaded_mib"]),
        round(r["peak_rss_mib"]),
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    bench_main(argv, parse_args, run, report)


if __name__ == "__main__":
    main()
