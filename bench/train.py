"""Training throughput: clips per second of `training.training_step`, by backbone, size, frames.

    python -m bench.train [--backbones resnext50_32x4d mobilenet_v2] [--sizes 112 224]
                          [--frames 4 20] [--batch N] [--steps N] [--warmup N]
                          [--device auto] [--json OUT]

For each configuration a fresh `ClipClassifier` is built (channels_last, on the device) with
AdamW, and random uint8 clips (batch, frames, S, S, 3) are normalised and trained on with the
very step `deepscreen model train` runs (forward, loss, backward, gradient clipping, optimiser
step; bf16 autocast on CUDA). `--warmup` steps are untimed, then `--steps` are timed
(`torch.cuda.synchronize()` around each on CUDA). Clips/s = batch / median step time; frames/s
counts every frame through the backbone. Data loading from the cache is not included: it is
a memory-mapped read, small next to a step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from bench._common import (
    CpuMeter,
    bench_main,
    machine,
    peak_rss_mib,
    report_text,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.train", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--backbones", nargs="+", default=["resnext50_32x4d", "mobilenet_v2"],
        choices=("resnext50_32x4d", "mobilenet_v2"),
    )  # fmt: skip
    parser.add_argument("--sizes", type=int, nargs="+", default=[112], choices=(112, 224))
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 20], help="frames a clip")
    parser.add_argument("--batch", type=int, default=8, help="clips a step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", type=Path, dest="json_out", help="write the figures here")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or min(args.frames) < 1:
        parser.error("--batch, --steps and --frames must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from detector.architecture import IMAGENET_MEAN, IMAGENET_STD
    from detector.artifact import resolve_device
    from detector.scoring import normalise
    from detector.training.distillation import LabelLoss
    from detector.training.model import ClipClassifier
    from detector.training.trainer import training_step

    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    mean = torch.tensor(IMAGENET_MEAN, device=device).reshape(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).reshape(1, 1, 3, 1, 1)
    generator = torch.Generator().manual_seed(0)
    meter = CpuMeter()
    rows: list[dict[str, Any]] = []

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    for backbone in args.backbones:
        for size in args.sizes:
            for frames in args.frames:
                torch.manual_seed(0)
                model = ClipClassifier(backbone=backbone).to(device)
                model = model.to(memory_format=torch.channels_last).train()
                optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
                shape = (args.batch, frames, size, size, 3)
                clips = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
                x = normalise(clips.to(device), mean, std)
                y = (torch.arange(args.batch, device=device) % 2).float()
                for _ in range(args.warmup):
                    training_step(model, optimiser, x, y, LabelLoss())
                times: list[float] = []
                for _ in range(args.steps):
                    sync()
                    tick = time.perf_counter()
                    training_step(model, optimiser, x, y, LabelLoss())
                    sync()
                    times.append(time.perf_counter() - tick)
                median = statistics.median(times)
                rows.append(
                    {
                        "backbone": backbone, "size": size, "frames": frames,
                        "batch": args.batch, "median_s": median, "times_s": times,
                        "clips_per_s": args.batch / median,
                        "frames_per_s": args.batch * frames / median,
                    }
                )  # fmt: skip
                print(
                    f"  {backbone} {size} px {frames} frames batch {args.batch}: "
                    f"{1000 * median:.0f} ms a step → {args.batch / median:.2f} clips/s",
                    flush=True,
                )
                del model, optimiser
    return {
        "benchmark": "train",
        "machine": machine(str(device)),
        "config": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup},
        "peak_rss_mib": peak_rss_mib(),
        "cpu": meter.read(),
        "rows": rows,
    }


def report(result: dict[str, Any]) -> str:
    headers = ["backbone", "size", "frames", "batch", "step ms", "clips/s", "frames/s"]
    rows = [
        [r["backbone"], r["size"], r["frames"], r["batch"], round(1000 * r["median_s"]),
         round(r["clips_per_s"], 2), round(r["frames_per_s"], 1)]
        for r in result["rows"]
    ]  # fmt: skip
    config = result["config"]
    details = [f"{config['warmup']} warm-up + {config['steps']} timed steps (median)"]
    title = "deepscreen training benchmark (training_step on random clips, AdamW)"
    return report_text(title, result, details, headers, rows)


def main(argv: list[str] | None = None) -> None:
    bench_main(argv, parse_args, run, report)


if __name__ == "__main__":
    main()
