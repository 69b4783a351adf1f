"""Lookup latency and memory of the bank's Hamming indexes, by bank size, flat and multi-hash.

    python -m bench.bank [--sizes 10000,100000,1000000] [--queries 200] [--json OUT]

For each size N and each index (`FaissFlatIndex`, `FaissMultiHashIndex`), a bank of N
frame hashes (and as many face-tile hashes) is built from synthetic videos: each video is
a random base hash whose `--frames` frames lie 10-40 bits from it, as the frames of one
shot do. Then `--queries` uploads are looked up, half of them re-encoded copies of banked
videos (every hash moved 8 bits) and half unrelated videos. Figures:

* **search**: one `HammingIndex.search` of an upload's frame hashes at 31 bits, in ms
  (median, p99);
* **match**: one `Bank.match` of an upload (frames, then the candidates' faces), in ms
  (median, p99), and how many of the copies it matched (all must) and of the others (none);
* **memory**: the index's own account (`memory_bytes`, frames index) and the growth of the
  process's resident memory while the bank was built (both indexes and the entries).
* **build**: seconds to add the N hashes' entries to the bank, the work a new replica does
  when it loads a bank (the topic's reading comes on top).

FAISS runs on `--faiss-threads` OpenMP threads (default 1): on a loaded machine, two
threads made one 32-hash search of a 10k flat index take 0.4 ms or 50 ms by turns.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import CpuMeter, bench_main, cpu_line, host, table
from detector.bank import Bank, BankEntry
from detector.hash_index import FaissFlatIndex, FaissMultiHashIndex, HammingIndex
from detector.hashing import PdqFeature, VideoHashes, bits_to_hex
from schemas.decision import Decision

INDEXES: dict[str, type[FaissFlatIndex] | type[FaissMultiHashIndex]] = {
    "flat": FaissFlatIndex,
    "multihash": FaissMultiHashIndex,
}


def flip_bits(codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row of packed hashes with `counts[i]` random bits flipped."""
    bits = np.unpackbits(codes, axis=1)
    for row, count in enumerate(counts):
        bits[row, rng.choice(256, size=int(count), replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def synthetic_video(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame hashes, face hashes) of one video: near a base hash each, as one shot's are."""
    bases = rng.integers(0, 256, size=(2, 32), dtype=np.uint8)
    frame_codes = flip_bits(np.repeat(bases[:1], frames, axis=0), rng.integers(10, 40, frames), rng)
    face_codes = flip_bits(np.repeat(bases[1:], frames, axis=0), rng.integers(10, 40, frames), rng)
    return frame_codes, face_codes


def as_features(codes: np.ndarray) -> tuple[PdqFeature, ...]:
    return tuple(
        PdqFeature(5 * i, 0.2 * i, 100, digest) for i, digest in enumerate(bits_to_hex(codes))
    )


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(size: int, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    videos = size // args.frames
    index_class = INDEXES[kind]
    rss_before = rss_bytes()
    started = time.perf_counter()
    bank = Bank(index_factory=index_class)
    banked: list[tuple[np.ndarray, np.ndarray]] = []
    for number in range(videos):
        frame_codes, face_codes = synthetic_video(rng, args.frames)
        if number < args.queries // 2:
            banked.append((frame_codes, face_codes))
        bank.add(
            BankEntry.from_hashes(
                f"video-{number}",
                Decision.CONFIRMED_FAKE,
                "bench",
                VideoHashes(frames=as_features(frame_codes), faces=as_features(face_codes)),
            )
        )
    build_s = time.perf_counter() - started
    rss_growth = rss_bytes() - rss_before

    queries: list[tuple[VideoHashes, bool]] = []
    for frame_codes, face_codes in banked:
        moved = [flip_bits(c, np.full(len(c), 8), rng) for c in (frame_codes, face_codes)]
        copy = VideoHashes(frames=as_features(moved[0]), faces=as_features(moved[1]))
        queries.append((copy, True))
    while len(queries) < args.queries:
        frame_codes, face_codes = synthetic_video(rng, args.frames)
        queries.append(
            (VideoHashes(frames=as_features(frame_codes), faces=as_features(face_codes)), False)
        )

    frames_index: HammingIndex = bank._frames  # the frames index alone, for the raw search
    search_ms: list[float] = []
    match_ms: list[float] = []
    copies_matched = others_matched = 0
    for query, is_copy in queries:
        packed = np.stack([np.frombuffer(bytes.fromhex(f.pdq_hex), np.uint8) for f in query.frames])
        tick = time.perf_counter()
        frames_index.search(packed, 31)
        search_ms.append(1000 * (time.perf_counter() - tick))
        tick = time.perf_counter()
        found = bank.match(query)
        match_ms.append(1000 * (time.perf_counter() - tick))
        if is_copy:
            copies_matched += bool(found)
        else:
            others_matched += bool(found)
    return {
        "size": size,
        "index": kind,
        "videos": videos,
        "build_s": build_s,
        "index_mib": frames_index.memory_bytes() / 1024**2,
        "rss_growth_mib": rss_growth / 1024**2,
        "search_ms_median": statistics.median(search_ms),
        "search_ms_p99": percentile(search_ms, 0.99),
        "match_ms_median": statistics.median(match_ms),
        "match_ms_p99": percentile(match_ms, 0.99),
        "copies_matched": f"{copies_matched}/{len(banked)}",
        "others_matched": f"{others_matched}/{len(queries) - len(banked)}",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(args.faiss_threads)
    meter = CpuMeter()
    rows = [measure(size, kind, args) for size in args.sizes for kind in args.indexes]
    return {
        "host": host(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "frames_per_video": args.frames,
        "queries": args.queries,
        "rows": rows,
        "cpu": meter.read(),
    }


def report(result: dict[str, Any]) -> str:
    machine = result["host"]
    headers = [
        "frame hashes", "index", "build s", "index MiB", "RSS +MiB", "search ms med",
        "search p99", "match ms med", "match p99", "copies", "others",
    ]  # fmt: skip
    rows = [_row(r) for r in result["rows"]]
    return "\n".join(
        [
            "bank lookups: one upload = "
            f"{result['frames_per_video']} frame and {result['frames_per_video']} face hashes, "
            f"{result['queries']} uploads a size (half of them copies of banked videos)",
            f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs ({machine['cpu_affinity']}"
            f" usable), python {machine['python']}, faiss {result['faiss']}"
            f" ({result['faiss_threads']} threads)",
            cpu_line(result["cpu"]),
            "",
            table(headers, rows),
        ]
    )


def _row(r: dict[str, Any]) -> list[str]:
    return [
        f"{r['size']:,}", r["index"], f"{r['build_s']:.1f}", f"{r['index_mib']:.1f}",
        f"{r['rss_growth_mib']:.0f}", f"{r['search_ms_median']:.2f}",
        f"{r['search_ms_p99']:.2f}", f"{r['match_ms_median']:.2f}",
        f"{r['match_ms_p99']:.2f}", r["copies_matched"], r["others_matched"],
    ]  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[10_000, 100_000, 1_000_000],
    )
    parser.add_argument(
        "--indexes", type=lambda text: text.split(","), default=list(INDEXES), help="flat,multihash"
    )
    parser.add_argument("--frames", type=int, default=32, help="frame hashes a video")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--faiss-threads",
        type=int,
        default=1,
        help="OpenMP threads of FAISS (1: an upload's lookup is small; on a busy machine more"
        " threads spin and wait for each other)",
    )
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(argv, parse, run, report)


if __name__ == "__main__":
    main()
