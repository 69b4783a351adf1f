"""The bank: lookups and memory by size, a new replica's load from the topic, hashing cost.

    python -m bench.bank [--parts lookup,load,hashing] [--sizes 10000,100000,1000000]
                         [--queries 200] [--load-hashes 1000000] [--clips DIR] [--json OUT]

**lookup**: latency and memory of the bank's Hamming indexes, by bank size, flat and
multi-hash.

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

**load**: what a new replica does at start. A bank of `--load-hashes` frame hashes (as many
face-tile hashes; videos made as above) is written to a bank topic of an embedded broker
(Tansu, `consumer.embedded`), one record an entry as the service writes them
(`consumer.bank_topic.encode_entry`); then a `BankReader` over a `KafkaBankLog` (the
service's reader) reads it from the beginning into an empty `Bank` until it is caught up.
Reported: the records and bytes on the topic, the seconds until caught up, of which adding
the entries to the bank (`Bank.add`), and the process's resident memory growth.

**hashing**: the known-fakes signal's cost in screening, on the shared clips (`--clips`):
`Detector.screen_timed` (a scorer that does not run a model) hashes the frames it decodes
for the windows, so the hash stage is PDQ alone (`StageTimes.hash_s`), beside the decode and
faces stages it shares them with; and `Detector.hash_whole` (what a ruling whose hashes are
no longer cached costs: every frame decoded, every 5th hashed with its faces), in seconds
a video-minute.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import REPO_ROOT, CpuMeter, bench_main, cpu_line, host, table
from detector.bank import Bank, BankEntry
from detector.hash_index import FaissFlatIndex, FaissMultiHashIndex, HammingIndex
from detector.hashing import PdqFeature, VideoHashes, bits_to_hex
from schemas.decision import Decision

PARTS = ("lookup", "load", "hashing")
DEFAULT_CLIPS = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()

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


class _TimedBank(Bank):
    """A `Bank` that adds up the time spent in `add` (the reader's share of a load)."""

    add_s = 0.0

    def add(self, entry: BankEntry) -> None:
        tick = time.perf_counter()
        super().add(entry)
        self.add_s += time.perf_counter() - tick


def load_from_topic(args: argparse.Namespace) -> dict[str, Any]:
    """A new replica's start: a bank of `--load-hashes` frame hashes read from the bank topic."""
    import logging

    from kafka import KafkaProducer

    from consumer.bank_topic import BankReader, KafkaBankLog, encode_entry
    from consumer.embedded import EmbeddedBroker
    from consumer.settings import KafkaSettings

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # "connection refused" at start
    rng = np.random.default_rng(args.seed)
    videos = args.load_hashes // args.frames
    topic = "deepscreen.bank"
    with EmbeddedBroker() as broker:
        broker.create_topics({topic: args.load_partitions})
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20,
            batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024,
        )  # fmt: skip
        started = time.perf_counter()
        topic_bytes = 0
        for number in range(videos):
            frame_codes, face_codes = synthetic_video(rng, args.frames)
            hashes = VideoHashes(frames=as_features(frame_codes), faces=as_features(face_codes))
            key, value = encode_entry(
                BankEntry.from_hashes(f"video-{number}", Decision.CONFIRMED_FAKE, "bench", hashes)
            )
            producer.send(topic, key=key, value=value)
            topic_bytes += len(key) + len(value)
        producer.flush(timeout=600)
        producer.close()
        write_s = time.perf_counter() - started

        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, bank_topic=topic)
        rss_before = rss_bytes()
        bank = _TimedBank()
        reader = BankReader(KafkaBankLog(settings), bank)
        started = time.perf_counter()
        caught_up = reader.run_until_caught_up(args.load_timeout)
        load_s = time.perf_counter() - started
        rss_growth = rss_bytes() - rss_before
        reader.close()
    if not caught_up or len(bank) != videos:
        raise SystemExit(f"error: {len(bank)} of {videos} entries read in {load_s:.0f} s")
    return {
        "frame_hashes": videos * args.frames,
        "face_hashes": videos * args.frames,
        "records": videos,
        "partitions": args.load_partitions,
        "topic_mib": topic_bytes / 1024**2,
        "write_s": write_s,
        "load_s": load_s,
        "bank_add_s": bank.add_s,
        "rss_growth_mib": rss_growth / 1024**2,
    }


def hashing_cost(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of the hash stage a video-minute in screening, and of a whole-video hash."""
    from detector.media_files import video_files
    from detector.pipeline import Detector
    from detector.probe import Probe
    from detector.scoring import InMemoryScorer

    clips = video_files(args.clips)[: args.clip_limit or None]
    if not clips:
        raise SystemExit(f"error: no videos under {args.clips}")
    detector = Detector(InMemoryScorer(rule=lambda clip: 0.1))  # no model: not measured here
    rows: list[dict[str, Any]] = []
    try:
        detector.screen_timed(clips[0])  # MediaPipe's and PDQ's first calls: not measured
        for path in clips:
            screened = detector.screen_timed(path)
            probe = screened.extraction.probe if screened.extraction else None
            if not isinstance(probe, Probe):
                continue
            times = screened.times
            tick = time.perf_counter()
            whole = detector.hash_whole(path)
            whole_s = time.perf_counter() - tick
            rows.append(
                {
                    "clip": path.name,
                    "minutes": probe.duration_s / 60,
                    "frames_analyzed": screened.verdict.frames_analyzed,
                    "decode_s": times.decode_s,
                    "faces_s": times.faces_s,
                    "hash_s": times.hash_s,
                    "frames_hashed": len(screened.hashes.frames) if screened.hashes else 0,
                    "whole_s": whole_s,
                    "whole_frames_hashed": len(whole.frames),
                }
            )
    finally:
        detector.close()
    minutes = sum(r["minutes"] for r in rows)

    def per_minute(name: str) -> float:
        return sum(r[name] for r in rows) / minutes

    return {
        "clips": len(rows),
        "video_minutes": minutes,
        "frames_analyzed": sum(r["frames_analyzed"] for r in rows),
        "frames_hashed": sum(r["frames_hashed"] for r in rows),
        "screen_decode_s_per_min": per_minute("decode_s"),
        "screen_faces_s_per_min": per_minute("faces_s"),
        "screen_hash_s_per_min": per_minute("hash_s"),
        "whole_hash_s_per_min": per_minute("whole_s"),
        "whole_frames_hashed": sum(r["whole_frames_hashed"] for r in rows),
        "per_clip": rows,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(args.faiss_threads)
    meter = CpuMeter()
    parts = set(args.parts)
    rows = (
        [measure(size, kind, args) for size in args.sizes for kind in args.indexes]
        if "lookup" in parts
        else []
    )
    return {
        "host": host(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "frames_per_video": args.frames,
        "queries": args.queries,
        "rows": rows,
        "load": load_from_topic(args) if "load" in parts else None,
        "hashing": hashing_cost(args) if "hashing" in parts else None,
        "cpu": meter.read(),
    }


def report(result: dict[str, Any]) -> str:
    machine = result["host"]
    lines = [
        f"machine: {machine['cpu']}, {machine['cpu_count']} CPUs ({machine['cpu_affinity']}"
        f" usable), python {machine['python']}, faiss {result['faiss']}"
        f" ({result['faiss_threads']} threads)",
        cpu_line(result["cpu"]),
    ]
    if result["rows"]:
        headers = [
            "frame hashes", "index", "build s", "index MiB", "RSS +MiB", "search ms med",
            "search p99", "match ms med", "match p99", "copies", "others",
        ]  # fmt: skip
        lines += [
            "",
            "bank lookups: one upload = "
            f"{result['frames_per_video']} frame and {result['frames_per_video']} face hashes, "
            f"{result['queries']} uploads a size (half of them copies of banked videos)",
            table(headers, [_row(r) for r in result["rows"]]),
        ]
    load = result.get("load")
    if load:
        lines += [
            "",
            "a new replica loads the bank from the bank topic (embedded Tansu, BankReader)",
            _load_table(load),
        ]
    hashing = result.get("hashing")
    if hashing:
        lines += [
            "",
            f"hashing cost: {hashing['clips']} clips, {hashing['video_minutes']:.2f} video-minutes"
            f", {hashing['frames_analyzed']} frames decoded for the windows, "
            f"{hashing['frames_hashed']} of them hashed (with their faces)",
            _hashing_table(hashing),
        ]
    return "\n".join(lines)


def _load_table(load: dict[str, Any]) -> str:
    headers = [
        "frame hashes", "face hashes", "records", "partitions", "topic MiB", "caught up s",
        "of which Bank.add s", "RSS +MiB",
    ]  # fmt: skip
    row = [
        f"{load['frame_hashes']:,}", f"{load['face_hashes']:,}", f"{load['records']:,}",
        load["partitions"], f"{load['topic_mib']:.0f}", f"{load['load_s']:.1f}",
        f"{load['bank_add_s']:.1f}", f"{load['rss_growth_mib']:.0f}",
    ]  # fmt: skip
    return table(headers, [row])


def _hashing_table(hashing: dict[str, Any]) -> str:
    headers = ["seconds a video-minute", "decode", "faces", "hash (PDQ)", "total"]
    screening = [hashing[f"screen_{stage}_s_per_min"] for stage in ("decode", "faces", "hash")]
    rows = [
        ["screening (sampled windows)", *(f"{v:.2f}" for v in screening),
         f"{sum(screening):.2f}"],
        ["a ruling's content hashed whole", "", "", "", f"{hashing['whole_hash_s_per_min']:.2f}"],
    ]  # fmt: skip
    return table(headers, rows)


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
    parser.add_argument(
        "--parts", type=lambda text: [v for v in text.split(",") if v], default=list(PARTS),
        help="lookup,load,hashing",
    )  # fmt: skip
    parser.add_argument("--load-hashes", type=int, default=1_000_000, help="load: frame hashes")
    parser.add_argument("--load-partitions", type=int, default=1)
    parser.add_argument("--load-timeout", type=float, default=3600.0)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="hashing: videos")
    parser.add_argument("--clip-limit", type=int, default=0, help="hashing: first N (0: all)")
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    bench_main(argv, parse, run, report)


if __name__ == "__main__":
    main()
