"""The model stage alone: `TorchScorer.score` on random clips, by input size, batch and precision.

    python -m bench.model [--sizes 112 224] [--batches 8 16 32 64 128 256]
                          [--precisions fp32 bf16] [--device auto] [--repeats N] [--json OUT]

For each input size an untrained reference model (ResNeXt50+LSTM) is written with
`init_reference` (or `--model FILE` is used for its own size); for each batch N and precision,
random uint8 clips (N, 20, S, S, 3) are scored `--warmup` times untimed, then `--repeats` times
timed (`torch.cuda.synchronize()` around each on CUDA). Frames per second = N * 20 / median.

On CUDA the default grid is the full one above. On a CPU the default is reduced (sizes 112
and 224, batches 1 2 4, fp32, 2 warm-up and 3 timed calls): bf16/fp16 autocast is CUDA-only
in `TorchScorer`, so on a CPU they would time fp32 again and are skipped. `--max-seconds`
caps a slow machine: once a call of some size and precision takes longer, its larger batches
are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import (
    CpuMeter,
    bench_main,
    machine,
    peak_rss_mib,
    report_text,
)

CLIP_LENGTH = 20
CUDA_GRID: dict[str, Any] = {
    "sizes": [112, 224],
    "batches": [8, 16, 32, 64, 128, 256],
    "precisions": ["fp32", "bf16"],
    "repeats": 5,
    "warmup": 3,
}
CPU_GRID: dict[str, Any] = {
    "sizes": [112, 224],
    "batches": [1, 2, 4],
    "precisions": ["fp32"],
    "repeats": 3,
    "warmup": 2,
}
CPU_NOTE = "bf16/fp16 autocast is CUDA-only in TorchScorer; on a CPU only fp32 is timed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.model", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--sizes", type=int, nargs="+", choices=(112, 224), help="input sizes")
    parser.add_argument("--batches", type=int, nargs="+", help="clips a call")
    parser.add_argument(
        "--precisions", nargs="+", choices=("fp32", "bf16", "fp16"), help="autocast dtype"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, help="timed calls a configuration (median)")
    parser.add_argument("--warmup", type=int, help="untimed calls a configuration first")
    parser.add_argument("--model", type=Path, help="artifact to time instead of the reference")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip larger batches of a size/precision once one call took longer than this",
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write the table here")
    args = parser.parse_args(argv)
    if args.batches and min(args.batches) < 1:
        parser.error("--batches must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def grid(args: argparse.Namespace, on_cuda: bool) -> tuple[dict[str, Any], list[str]]:
    """The grid to run: the flags given, the device's defaults for the rest."""
    defaults = CUDA_GRID if on_cuda else CPU_GRID
    chosen = {
        "sizes": args.sizes or defaults["sizes"],
        "batches": sorted(args.batches or defaults["batches"]),
        "precisions": args.precisions or defaults["precisions"],
        "repeats": args.repeats or defaults["repeats"],
        "warmup": defaults["warmup"] if args.warmup is None else args.warmup,
    }
    notes: list[str] = []
    if not on_cuda:
        notes.append(f"CPU: reduced default grid; {CPU_NOTE}")
        dropped = [p for p in chosen["precisions"] if p != "fp32"]
        if dropped:
            notes.append(f"skipped on CPU: {', '.join(dropped)}")
        chosen["precisions"] = ["fp32"]
    return chosen, notes


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from detector.artifact import load, read_metadata, resolve_device
    from detector.scoring import TorchScorer
    from detector.training.export import init_reference

    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    chosen, notes = grid(args, on_cuda)
    sizes: list[int] = chosen["sizes"]
    if args.model is not None:
        sizes = [read_metadata(args.model).input_size]
        notes.append(f"--model given: its input size {sizes[0]} only")
    cap_s: float | None = args.max_seconds
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    meter = CpuMeter()

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory(prefix="bench-model-") as scratch:
        for size in sizes:
            path = args.model or Path(scratch) / f"reference-{size}.pt"
            if args.model is None:
                init_reference(path, input_size=size)
            loaded = load(path, str(device))
            for precision in chosen["precisions"]:
                skip: str | None = None  # why the larger batches are not run
                for batch in chosen["batches"]:
                    row: dict[str, Any] = {"size": size, "batch": batch, "precision": precision}
                    if skip is not None:
                        rows.append({**row, "status": skip})
                        continue
                    scorer = TorchScorer(loaded, max_batch=batch, precision=precision)
                    clips = rng.integers(
                        0, 256, size=(batch, CLIP_LENGTH, size, size, 3), dtype=np.uint8
                    )
                    if on_cuda:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats(device)
                    try:
                        for _ in range(chosen["warmup"]):
                            scorer.score(clips)
                        sync()
                        times: list[float] = []
                        for _ in range(chosen["repeats"]):
                            sync()
                            tick = time.perf_counter()
                            scorer.score(clips)
                            sync()
                            times.append(time.perf_counter() - tick)
                    except torch.cuda.OutOfMemoryError:
                        rows.append({**row, "status": "out of memory"})
                        torch.cuda.empty_cache()
                        skip = "skipped (a smaller batch ran out of memory)"
                        continue
                    median = statistics.median(times)
                    rows.append(
                        {
                            **row,
                            "status": "ok",
                            "median_s": median,
                            "min_s": min(times),
                            "times_s": times,
                            "frames_per_s": batch * CLIP_LENGTH / median,
                            "clips_per_s": batch / median,
                            "ms_per_clip": 1000 * median / batch,
                            "gpu_peak_mib": (
                                torch.cuda.max_memory_allocated(device) / 1024**2
                                if on_cuda
                                else None
                            ),
                        }
                    )
                    print(_progress(rows[-1]), flush=True)
                    if cap_s is not None and median > cap_s:
                        skip = f"skipped (batch {batch} took {median:.1f} s > {cap_s} s)"
            del loaded
    return {
        "benchmark": "model",
        "machine": machine(str(device)),
        "grid": {**chosen, "sizes": sizes},
        "notes": notes,
        "peak_rss_mib": peak_rss_mib(),
        "cpu": meter.read(),
        "rows": rows,
    }


def _progress(row: dict[str, Any]) -> str:
    return (
        f"  {row['size']} px  batch {row['batch']:>4}  {row['precision']}: "
        f"{1000 * row['median_s']:.0f} ms median → {row['frames_per_s']:.1f} frames/s"
    )


def report(result: dict[str, Any]) -> str:
    on_cuda = result["machine"]["device"].startswith("cuda")
    headers = [
        "size",
        "batch",
        "precision",
        "frames/s",
        "clips/s",
        "median ms",
        "min ms",
        "ms/clip",
    ]
    if on_cuda:
        headers.append("GPU peak MiB")
    rows: list[list[object]] = []
    for r in result["rows"]:
        if r["status"] != "ok":
            rows.append([r["size"], r["batch"], r["precision"], r["status"]])
            continue
        row: list[object] = [
            r["size"],
            r["batch"],
            r["precision"],
            round(r["frames_per_s"], 1),
            round(r["clips_per_s"], 2),
            round(1000 * r["median_s"], 1),
            round(1000 * r["min_s"], 1),
            round(r["ms_per_clip"], 1),
        ]
        if on_cuda:
            row.append(round(r["gpu_peak_mib"]))
        rows.append(row)
    width = len(headers)
    rows = [row + [""] * (width - len(row)) for row in rows]
    grid_ = result["grid"]
    details = [
        f"grid: sizes {grid_['sizes']}, batches {grid_['batches']}, precisions "
        f"{grid_['precisions']}, {grid_['warmup']} warm-up + {grid_['repeats']} timed calls",
        *(f"note: {n}" for n in result["notes"]),
    ]
    title = "deepscreen model benchmark (TorchScorer.score, random uint8 clips of 20 frames)"
    return report_text(title, result, details, headers, rows)


def main(argv: list[str] | None = None) -> None:
    bench_main(argv, parse_args, run, report)


if __name__ == "__main__":
    main()
