"""Face detection on every k-th frame against every frame: what it saves and what it changes.

    python -m bench.face_stride [--data DIR] [--strides 1,2,3,4,5] [--reference K]
                                [--model FILE] [--json OUT]

For each stride k, every video under `--data` (default the shared clips) is cut into face
clips exactly as the service does (`extract_face_clips`, `FaceConfig.detect_every = k`),
and the clips are scored by the reference model (or `--model`). Against the reference
variant (k = 1 unless `--reference` says otherwise) it reports: the time of the faces stage,
tracks found, clips cut, the share of the reference's clips that have a counterpart at k
(same window, crops overlapping), the mean IoU of the counterparts' per-frame
crop boxes, and the largest absolute difference of their scores.

A variant may also set the side frames are downscaled to before detection: `3@640` is k = 3
with `FaceConfig.detect_max_side = 640`. `--reference` names the variant the others are
compared with (default `1`, every frame at the default side).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import (
    REPO_ROOT,
    CpuMeter,
    cpu_line,
    machine,
    machine_lines,
    publish_report,
    quiet,
    table,
)
from detector.arrays import Boxes
from detector.config import DetectorConfig, FaceConfig
from detector.extraction import FaceClip, extract_face_clips
from detector.media_files import video_files
from detector.probe import Unreadable
from detector.tracking import greedy_match, iou

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()
_MATCH_IOU = 0.3


@dataclass
class StrideResult:
    stride: str  # "k" or "k@side"
    faces_s: float = 0.0
    decode_s: float = 0.0
    tracks: int = 0
    clips: int = 0
    matched: int = 0
    reference_clips: int = 0
    ious: list[float] | None = None
    score_diffs: list[float] | None = None

    def row(self) -> list[str]:
        ious = self.ious or []
        diffs = self.score_diffs or []
        return [
            self.stride,
            f"{self.faces_s:.1f}",
            str(self.tracks),
            str(self.clips),
            f"{self.matched}/{self.reference_clips}",
            f"{np.mean(ious):.3f}" if ious else "-",
            f"{min(ious):.3f}" if ious else "-",
            f"{max(diffs):.4f}" if diffs else "-",
        ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--strides", default="1,2,3,4,5", help="k or k@side, comma-separated")
    parser.add_argument("--reference", default="1", help="the variant compared with (k or k@side)")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def face_config(base: FaceConfig, variant: str) -> FaceConfig:
    """The face configuration of a variant `k` or `k@side`."""
    every, _, side = variant.partition("@")
    config = replace(base, detect_every=int(every))
    return replace(config, detect_max_side=int(side)) if side else config


def crop_iou(a: Boxes, b: Boxes) -> float:
    """Mean IoU of two clips' per-frame crop boxes."""
    return float(np.mean([iou(x, y) for x, y in zip(a, b, strict=True)]))


def compare(
    reference: list[FaceClip], candidate: list[FaceClip]
) -> list[tuple[FaceClip, FaceClip, float]]:
    """Counterparts: clips of the same window whose crops overlap most (greedy)."""
    pairs: list[tuple[FaceClip, FaceClip, float]] = []
    for start in sorted({clip.start_frame for clip in reference}):
        ours = [c for c in reference if c.start_frame == start and c.crops is not None]
        theirs = [c for c in candidate if c.start_frame == start and c.crops is not None]
        matched = greedy_match(
            [c.crops.mean(axis=0) for c in ours],  # type: ignore[union-attr]
            [c.crops.mean(axis=0) for c in theirs],  # type: ignore[union-attr]
            _MATCH_IOU,
        )
        for ti, oi in matched.items():
            pairs.append(
                (ours[oi], theirs[ti], crop_iou(ours[oi].crops, theirs[ti].crops))  # type: ignore[arg-type]
            )
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    quiet()
    from detector.artifact import load
    from detector.faces import MediaPipeFaceDetector
    from detector.scoring import TorchScorer

    strides = [args.reference, *(k for k in args.strides.split(",") if k != args.reference)]
    videos = video_files(args.data)
    meter = CpuMeter()
    with tempfile.TemporaryDirectory(prefix="deepscreen-bench-") as scratch:
        model_path = args.model
        if model_path is None:
            from detector.training.export import init_reference

            model_path = Path(scratch) / "reference.pt"
            init_reference(model_path)
        loaded = load(model_path, "cpu")
        scorer = TorchScorer(loaded, max_batch=32, precision="fp32")
        base = DetectorConfig()
        reference: dict[Path, list[FaceClip]] = {}
        reference_scores: dict[int, float] = {}
        results: list[StrideResult] = []
        started = time.monotonic()
        for stride in strides:
            config = replace(base, faces=face_config(base.faces, stride))
            faces = MediaPipeFaceDetector(config.faces)
            result = StrideResult(stride, ious=[], score_diffs=[])
            for video in videos:
                try:
                    extraction = extract_face_clips(
                        video,
                        clip_length=loaded.metadata.clip_length,
                        input_size=loaded.metadata.input_size,
                        config=config,
                        faces=faces,
                    )
                except Unreadable:
                    continue
                result.faces_s += extraction.times.faces_s
                result.decode_s += extraction.times.decode_s
                result.tracks += extraction.tracks
                result.clips += len(extraction.clips)
                by_clip: dict[int, float] = {}
                if extraction.clips:
                    scores = scorer.score(np.stack([c.pixels for c in extraction.clips]))
                    by_clip = {
                        id(c): float(v) for c, v in zip(extraction.clips, scores, strict=True)
                    }
                if stride == args.reference:
                    reference[video] = extraction.clips
                    reference_scores.update(by_clip)
                    continue
                result.reference_clips += len(reference.get(video, []))
                for ours, theirs, overlap in compare(reference.get(video, []), extraction.clips):
                    result.matched += 1
                    result.ious.append(overlap)  # type: ignore[union-attr]
                    result.score_diffs.append(  # type: ignore[union-attr]
                        abs(reference_scores[id(ours)] - by_clip[id(theirs)])
                    )
            if stride == args.reference:
                result.reference_clips = result.matched = result.clips
            faces.close()
            results.append(result)
        wall = time.monotonic() - started
    report: dict[str, Any] = {
        "machine": machine("cpu"),
        "cpu": meter.read(),
        "videos": len(videos),
        "wall_s": wall,
        "results": [
            {
                "stride": r.stride,
                "faces_s": r.faces_s,
                "decode_s": r.decode_s,
                "tracks": r.tracks,
                "clips": r.clips,
                "matched": r.matched,
                "reference_clips": r.reference_clips,
                "mean_iou": float(np.mean(r.ious)) if r.ious else None,
                "max_score_diff": max(r.score_diffs) if r.score_diffs else None,
            }
            for r in results
        ],
    }
    model_name = model_path.name if args.model else "reference (untrained)"
    text = "\n".join(
        [
            "face detection stride: every k-th frame of each window (and its last)",
            *machine_lines(report["machine"]),
            f"{len(videos)} videos under {args.data}; model {model_name}",
            f"wall {wall:.1f} s; {cpu_line(report['cpu'])}",
            "",
            table(
                [
                    "k",
                    "faces s",
                    "tracks",
                    "clips",
                    "matched",
                    "mean IoU",
                    "min IoU",
                    "max |Δscore|",
                ],
                [r.row() for r in results],
            ),
        ]
    )
    publish_report(report, text, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
