"""Short videos made from still face images: calibration clips from outside the test set.

    python -m bench.face_videos IMAGES_DIR OUT_DIR [--count 16] [--frames 48] [--seed 0]

An int8 form of the model is calibrated on face clips (`detector.derived`). Calibrating on
the clips it is then measured on flatters it; these videos give clips from other people.
Each video shows one face image (e.g. UTKFace's aligned 200x200 crops), padded and scaled up
on a grey 640x480 frame, drifting slowly so that the face pipeline tracks it as it would a
person in an upload. The images are read from where they are; the videos go to OUT_DIR,
outside the repository (research data is never committed).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.face_videos",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("images", type=Path, help="a directory of face images (*.jpg, *.png)")
    parser.add_argument("out", type=Path, help="where the videos are written")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def face_video(image: Path, out: Path, frames: int, rng: random.Random) -> None:
    import cv2

    face = cv2.imread(str(image))
    if face is None:
        raise ValueError(f"{image} is not an image")
    side = rng.randint(220, 300)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    width, height = 640, 480
    x0, y0 = rng.randint(40, width - side - 40), rng.randint(20, height - side - 20)
    dx, dy = rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.4)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (width, height))
    try:
        for t in range(frames):
            frame = np.full((height, width, 3), 118, dtype=np.uint8)
            x = int(np.clip(x0 + dx * t, 0, width - side))
            y = int(np.clip(y0 + dy * t, 0, height - side))
            frame[y : y + side, x : x + side] = face
            writer.write(frame)
    finally:
        writer.release()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if len(images) < args.count:
        raise SystemExit(f"error: {len(images)} images under {args.images}, {args.count} wanted")
    args.out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(rng.sample(images, args.count)):
        face_video(image, args.out / f"face-{i:03d}.mp4", args.frames, rng)
    print(f"wrote {args.count} videos of {args.frames} frames to {args.out}")


if __name__ == "__main__":
    main()
