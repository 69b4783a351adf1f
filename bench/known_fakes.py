"""The bank's match rule on the shared clips: robustness to re-encoding, and precision.

    python -m bench.known_fakes [--data DIR] [--transforms crf23,crf35,...] [--work DIR]
                                [--json OUT]

Every clip under `--data` (default the shared clips, `manifest.csv`) is hashed by the
service's own code: queries as screening hashes an upload (`extract_face_clips`: the
windows of `plan_windows`, faces on every `detect_every`-th frame linked into tracks, PDQ
of every `frame_stride`-th frame and of its face tiles), entries as a ruling's content is
hashed (`hash_whole_video`: every window of the video). Each clip is banked as a confirmed
fake, then:

* **robustness**: copies of each clip made with the ffmpeg of `imageio-ffmpeg` (CRF 23 and
  35, half resolution, first and last 20 % trimmed, frame rate halved, 10 % letterbox,
  horizontal flip) are looked up; the match rate per transform is the share of clips whose
  copy matches the clip's own entry;
* **precision**: every clip is looked up in a bank holding every other clip; any match
  between two distinct clips is a false match (the six real/fake pairs of one scene are
  the hard case);
* **faces of the pairs**: for each real/fake pair of one scene, the median and minimum
  over the fake's face crops of the distance to the nearest face crop of the real clip,
  against the same for a JPEG-degraded (quality 30) copy of the fake's own crops.

Only the face-distance figures of the pairs cut their crops here (OpenCV decoding, the
project's detector and `square_crops`).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench._common import REPO_ROOT, CpuMeter, bench_main, cpu_line, host, table
from detector.arrays import Frame
from detector.bank import Bank, BankEntry, MatchRule
from detector.clips import square_crops
from detector.config import DetectorConfig, FaceConfig, KnownFakesConfig, SamplingConfig
from detector.extraction import extract_face_clips, hash_whole_video
from detector.faces import Detection, FaceDetector, MediaPipeFaceDetector
from detector.hashing import HashingConfig, PdqFeature, VideoHashes, hamming
from detector.tracking import link_window
from schemas.decision import Decision

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()
CLIP_LENGTH = 20  # the model's clip, hence the sampled window
_INPUT_SIZE = 112  # of the face clips screening cuts beside the hashes (not used here)
# The real/fake pairs of one scene among the shared clips (fake_X.mp4, real_X.mp4).
PAIRS = ("bateman", "clinton", "obama", "putin", "reagan", "taxi")

# name → ffmpeg arguments between the input and the output (libx264 unless said otherwise)
TRANSFORMS: dict[str, list[str]] = {
    "crf23": ["-c:v", "libx264", "-crf", "23"],
    "crf35": ["-c:v", "libx264", "-crf", "35"],
    "half_resolution": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2", "-c:v", "libx264"],
    "trim_20pct": [],  # filled per clip: -ss/-t from its duration
    "half_frame_rate": ["-vf", "fps=source_fps/2", "-c:v", "libx264"],
    "letterbox_10pct": [
        "-vf",
        "pad=iw:trunc(ih*1.2/2)*2:0:(oh-ih)/2:black",
        "-c:v",
        "libx264",
    ],
    "hflip": ["-vf", "hflip", "-c:v", "libx264"],
}
MUST_MATCH_EVERY_CLIP = ("crf23", "crf35", "half_resolution", "trim_20pct")


# ------------------------------------------------------------------ hashing a file


def sampled_windows(
    path: Path, sampling: SamplingConfig, *, whole: bool = False
) -> Iterator[tuple[int, float, list[Frame]]]:
    """(first frame number, fps, RGB frames) of each window `plan_windows` picks, in order.

    `whole`: every frame instead, in consecutive windows (the last one may be shorter).
    """
    from detector.sampling import plan_windows

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        starts = (
            list(range(0, frame_count, CLIP_LENGTH))
            if whole
            else plan_windows(frame_count, CLIP_LENGTH, sampling)
        )
        position = 0
        for start in starts:
            while position < start and capture.grab():
                position += 1
            frames: list[Frame] = []
            while len(frames) < CLIP_LENGTH:
                ok, frame = capture.read()
                if not ok:
                    break
                frames.append(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                position += 1
            if len(frames) == CLIP_LENGTH or (whole and frames):
                yield start, fps, frames
            if len(frames) < CLIP_LENGTH:
                return
    finally:
        capture.release()


def hash_file(
    path: Path,
    faces: FaceDetector,
    hashing: HashingConfig | None = None,
    face_config: FaceConfig | None = None,
    sampling: SamplingConfig | None = None,
    *,
    whole: bool = False,
) -> VideoHashes:
    """The hashes of a video file, by the service's own decoding, face tracking and hashing.

    `whole`: a bank entry's (`hash_whole_video`); else an upload's, as it is screened.
    """
    config = DetectorConfig(
        sampling=sampling or SamplingConfig(),
        faces=face_config or FaceConfig(),
        known_fakes=KnownFakesConfig(hashing=hashing or HashingConfig()),
    )
    if whole:
        return hash_whole_video(path, clip_length=CLIP_LENGTH, config=config, faces=faces)
    extraction = extract_face_clips(
        path, clip_length=CLIP_LENGTH, input_size=_INPUT_SIZE, config=config, faces=faces
    )
    assert extraction.hashes is not None  # hashing is on in `config`
    return extraction.hashes


# ------------------------------------------------------------------ transformed copies


def transformed_copy(source: Path, transform: str, target: Path) -> Path:
    """`source` re-encoded by one of `TRANSFORMS` into `target` (kept when it exists)."""
    if target.exists():
        return target
    import imageio_ffmpeg

    arguments = list(TRANSFORMS[transform])
    if transform == "trim_20pct":
        duration = _duration_s(source)
        arguments = ["-ss", f"{0.2 * duration:.3f}", "-t", f"{0.6 * duration:.3f}"]
        arguments += ["-c:v", "libx264"]
    if transform == "half_frame_rate":
        fps = _fps(source)
        arguments = ["-vf", f"fps={fps / 2:.4f}", "-c:v", "libx264"]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.mp4")
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(source), "-an",
         *arguments, "-pix_fmt", "yuv420p", str(partial)],
        check=True,
    )  # fmt: skip
    partial.rename(target)
    return target


def _fps(path: Path) -> float:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
    finally:
        capture.release()


def _duration_s(path: Path) -> float:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        return float(capture.get(cv2.CAP_PROP_FRAME_COUNT)) / fps
    finally:
        capture.release()


# ------------------------------------------------------------------ measuring


@dataclass
class Measurement:
    clips: list[str]
    rule: dict[str, Any]
    entries: str
    # transform → clip → matched its own entry
    robustness: dict[str, dict[str, bool]] = field(default_factory=dict)
    # transform → clip → (frame share, face share) against its own entry
    shares: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    false_matches: list[tuple[str, str, float, float]] = field(default_factory=list)
    pairs_checked: int = 0
    # the closest any distinct pair came: clip → (other, frame share, face share)
    closest: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    # pair → {fake_vs_real_median, fake_vs_real_min, jpeg_median, jpeg_max}
    face_distances: dict[str, dict[str, float]] = field(default_factory=dict)


def entry_for(name: str, hashes: VideoHashes) -> BankEntry:
    return BankEntry.from_hashes(
        entry_id=name,
        decision=Decision.CONFIRMED_FAKE,
        moderator="bench",
        hashes=hashes,
        video_id=name,
    )


def measure_robustness(
    originals: dict[str, VideoHashes],
    copies: dict[str, dict[str, VideoHashes]],
    rule: MatchRule,
    measurement: Measurement,
) -> None:
    bank = Bank(rule=rule)
    for name, hashes in originals.items():
        bank.add(entry_for(name, hashes))
    for transform, by_clip in copies.items():
        matched: dict[str, bool] = {}
        shares: dict[str, tuple[float, float]] = {}
        for name, hashes in by_clip.items():
            own = bank.evaluate(hashes, name)
            matched[name] = own is not None and own.is_match
            shares[name] = (own.frame_share, own.face_share) if own else (0.0, 0.0)
        measurement.robustness[transform] = matched
        measurement.shares[transform] = shares


def measure_precision(
    entries: dict[str, VideoHashes],
    queries: dict[str, VideoHashes],
    rule: MatchRule,
    measurement: Measurement,
) -> None:
    bank = Bank(rule=rule)
    for name, hashes in entries.items():
        bank.add(entry_for(name, hashes))
    for name, hashes in queries.items():
        closest = ("-", 0.0, 0.0)
        for other in entries:
            if other == name:
                continue
            measurement.pairs_checked += 1
            found = bank.evaluate(hashes, other)
            if found is None:
                continue
            if found.is_match:
                measurement.false_matches.append((name, other, found.frame_share, found.face_share))
            if (found.face_share, found.frame_share) > (closest[2], closest[1]):
                closest = (other, found.frame_share, found.face_share)
        measurement.closest[name] = closest


def nearest_distances(queries: Sequence[PdqFeature], bank: Sequence[PdqFeature]) -> list[int]:
    """For each query feature, the distance to the nearest feature of `bank`."""
    return [min(hamming(q.pdq_hex, b.pdq_hex) for b in bank) for q in queries if bank]


def jpeg_degraded_face_distances(path: Path, faces: FaceDetector, quality: int = 30) -> list[int]:
    """Distance of each face tile of `path` to the same tile saved as a JPEG of `quality`."""
    from detector.clips import cut_clip
    from detector.hashing import content_rect, face_tiles, pdq_hash

    face_config = FaceConfig()
    hashing = HashingConfig()
    distances: list[int] = []
    for start, _fps, frames in sampled_windows(path, SamplingConfig()):
        last = len(frames) - 1
        detections: list[list[Detection] | None] = [
            faces.detect(frame) if t % face_config.detect_every == 0 or t == last else None
            for t, frame in enumerate(frames)
        ]
        for track in link_window(detections, face_config):
            crops = square_crops(track.boxes, face_config.crop_scale)
            for t, frame in enumerate(frames):
                if (start + t) % hashing.frame_stride:
                    continue
                top, bottom, left, right = content_rect(frame, hashing)
                content = np.ascontiguousarray(frame[top:bottom, left:right])
                crop = crops[t] - [left, top, left, top]
                tile = face_tiles((bottom - top, right - left), crop, hashing)[0]
                face = cut_clip([content], tile[None, :], hashing.face_size)[0]
                degraded = jpeg_copy(face, quality)
                distances.append(hamming(pdq_hash(face)[0], pdq_hash(degraded)[0]))
    return distances


def jpeg_copy(picture: Frame, quality: int) -> Frame:
    """The RGB picture saved as a JPEG of `quality` and read back."""
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def measure_face_distances(
    data: Path,
    entries: dict[str, VideoHashes],
    queries: dict[str, VideoHashes],
    faces: FaceDetector,
    rule: MatchRule,
    measurement: Measurement,
) -> None:
    """The real clip of each pair queried against the fake's entry, face tile by face tile."""
    for scene in PAIRS:
        fake, real = f"fake_{scene}.mp4", f"real_{scene}.mp4"
        if fake not in entries or real not in queries:
            continue
        good = [f for f in queries[real].faces if f.quality >= rule.min_face_quality]
        against = [f for f in entries[fake].faces if f.quality >= rule.min_face_quality]
        to_real = nearest_distances(good, against)
        jpeg = jpeg_degraded_face_distances(data / "fake" / fake, faces)
        measurement.face_distances[scene] = {
            "fake_vs_real_median": float(statistics.median(to_real)) if to_real else -1.0,
            "fake_vs_real_min": float(min(to_real)) if to_real else -1.0,
            "jpeg_median": float(statistics.median(jpeg)) if jpeg else -1.0,
            "jpeg_max": float(max(jpeg)) if jpeg else -1.0,
            "fake_face_crops": float(len(good)),
        }


def clip_paths(data: Path) -> dict[str, Path]:
    with (data / "manifest.csv").open() as manifest:
        return {Path(row["path"]).name: data / row["path"] for row in csv.DictReader(manifest)}


def hash_all(
    paths: dict[str, Path],
    faces: FaceDetector,
    cache: Path | None,
    hashing: HashingConfig | None = None,
    *,
    whole: bool = False,
) -> dict[str, VideoHashes]:
    """Hashes of every path, read back from `cache` (a JSON file) when it has them."""
    hashing = hashing or HashingConfig()
    stored: dict[str, Any] = {}
    if cache is not None and cache.exists():
        stored = json.loads(cache.read_text())
    result: dict[str, VideoHashes] = {}
    for name, path in paths.items():
        key = f"{path}|whole={whole}|{hashing}|service"
        if key not in stored:
            stored[key] = _hashes_to_json(hash_file(path, faces, hashing, whole=whole))
        result[name] = _hashes_from_json(stored[key])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(stored))
    return result


_FEATURE_LISTS = ("frames", "faces", "mirrored_frames", "mirrored_faces")
_PROBE_LISTS = ("face_probes", "mirrored_face_probes")


def _hashes_to_json(hashes: VideoHashes) -> dict[str, Any]:
    document: dict[str, Any] = {
        kind: [list(asdict(f).values()) for f in getattr(hashes, kind)] for kind in _FEATURE_LISTS
    }
    for kind in _PROBE_LISTS:
        document[kind] = [[list(asdict(f).values()) for f in p] for p in getattr(hashes, kind)]
    return document


def _hashes_from_json(document: dict[str, Any]) -> VideoHashes:
    lists = {kind: tuple(PdqFeature(*row) for row in document[kind]) for kind in _FEATURE_LISTS}
    probes = {
        kind: tuple(tuple(PdqFeature(*row) for row in p) for p in document[kind])
        for kind in _PROBE_LISTS
    }
    return VideoHashes(**lists, **probes)


def measure_all(
    data: Path,
    work: Path,
    transforms: Sequence[str],
    rule: MatchRule | None = None,
    *,
    whole_entries: bool = True,
    entry_max_frames: int = HashingConfig.entry_max_frames,
    only: Collection[str] | None = None,
) -> Measurement:
    """Hash the clips under `data` (or those of them named in `only`) and their copies
    (kept in `work`), then measure the rule."""
    rule = rule or MatchRule()
    paths = clip_paths(data)
    if only is not None:
        paths = {name: path for name, path in paths.items() if name in only}
    faces = MediaPipeFaceDetector(FaceConfig())
    cache = work / "hashes.json"
    entry_hashing = HashingConfig(entry_max_frames=entry_max_frames)
    try:
        entries = hash_all(paths, faces, cache, entry_hashing, whole=whole_entries)
        queries = hash_all(paths, faces, cache)
        copies: dict[str, dict[str, VideoHashes]] = {}
        for transform in transforms:
            copied = {
                name: transformed_copy(path, transform, work / transform / name)
                for name, path in paths.items()
            }
            copies[transform] = hash_all(copied, faces, cache)
        measurement = Measurement(
            clips=sorted(paths),
            rule=asdict(rule),
            entries=(
                f"every frame (every k-th beyond {entry_max_frames})"
                if whole_entries
                else f"the sampled windows, stride {entry_hashing.frame_stride}"
            ),
        )
        measure_robustness(entries, copies, rule, measurement)
        measure_precision(entries, queries, rule, measurement)
        measure_face_distances(data, entries, queries, faces, rule, measurement)
    finally:
        faces.close()
    return measurement


def run(args: argparse.Namespace) -> dict[str, Any]:
    meter = CpuMeter()
    measurement = measure_all(
        args.data,
        args.work,
        args.transforms,
        whole_entries=args.whole_entries,
        entry_max_frames=args.entry_max_frames,
    )
    return {"host": host(), "cpu": meter.read(), "measurement": asdict(measurement)}


def report(result: dict[str, Any]) -> str:
    measured = result["measurement"]
    clips = len(measured["clips"])
    rows = []
    for transform, matched in measured["robustness"].items():
        shares = measured["shares"][transform]
        missed = sorted(name for name, ok in matched.items() if not ok)
        rows.append(
            [
                transform,
                f"{sum(matched.values())}/{len(matched)}",
                f"{min(s[0] for s in shares.values()):.2f}",
                f"{min(s[1] for s in shares.values()):.2f}",
                ", ".join(missed) or "-",
            ]
        )
    face_rows = [
        [
            scene,
            f"{d['fake_vs_real_median']:.0f}",
            f"{d['fake_vs_real_min']:.0f}",
            f"{d['jpeg_median']:.0f}",
            f"{d['jpeg_max']:.0f}",
        ]
        for scene, d in measured["face_distances"].items()
    ]
    false = measured["false_matches"]
    closest = max(
        measured["closest"].items(), key=lambda item: (item[1][2], item[1][1]), default=None
    )
    lines = [
        f"bank match rule on {clips} shared clips: {measured['rule']}",
        f"entries: {measured['entries']}; queries: the sampled windows, stride "
        f"{HashingConfig().frame_stride}",
        cpu_line(result["cpu"]),
        "",
        "robustness: a transformed copy of each clip against the clip's own entry",
        table(["transform", "matched", "min frame share", "min face share", "missed"], rows),
        "",
        f"precision: {measured['pairs_checked']} ordered pairs of distinct clips, "
        f"{len(false)} false matches {false or ''}",
    ]
    if closest is not None:
        name, (other, frame_share, face_share) = closest
        lines.append(
            f"closest distinct pair (by face share): {name} vs {other}: "
            f"frames {frame_share:.2f}, faces {face_share:.2f}"
        )
    lines += [
        "",
        "face tiles of each real clip queried against its fake's entry (nearest tile),"
        " and of the fake against a JPEG q30 copy of themselves",
        table(["pair", "fake-real median", "fake-real min", "jpeg median", "jpeg max"], face_rows),
    ]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--transforms",
        type=lambda text: [t for t in text.split(",") if t],
        default=list(TRANSFORMS),
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/deepscreen-known-fakes"),
        help="transformed copies and cached hashes (kept between runs)",
    )
    parser.add_argument(
        "--whole-entries",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bank entries hash every frame of the clip (default), not only the sampled windows",
    )
    parser.add_argument(
        "--entry-max-frames",
        type=int,
        default=HashingConfig.entry_max_frames,
        help="entries hash every frame up to this many, then every k-th (the service's)",
    )
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(argv, parse, run, report)


if __name__ == "__main__":
    main()
