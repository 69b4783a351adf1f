"""Reading content credentials (C2PA): ms a file, and peak memory on a 2 GiB video.

    python -m bench.credentials [--data DIR] [--runs N] [--signed-clips N] [--big-gib G]
                                [--big-source FILE] [--tmp DIR] [--json OUT]

Part 1 times `detector.credentials.read_credentials` on every file of each group: the shared
clips as they are (no manifest), and fixtures signed in a temporary directory with a
`TestAuthority` (copies of a few shared clips, and JPEG and PNG images of `skimage`'s
astronaut). Part 2 makes a ~2 GiB MP4 (a shared clip looped with ffmpeg `-c copy`) and a
signed copy of it in a temporary directory, and reads each in a fresh Python process that
reports its own peak RSS against its RSS before the read. Every temporary file is deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._common import REPO_ROOT, CpuMeter, cpu_line, host, publish_report, quiet, table

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()
MIB = 1024**2
GIB = 1024**3
SIGNER = "deepscreen bench signer"
ORGANISATION = "deepscreen bench CA"


@dataclass(frozen=True)
class FileTiming:
    group: str
    name: str
    bytes: int
    runs_ms: list[float]  # wall time of each read_credentials call
    median_ms: float
    state: str
    trusted: bool
    declaration: str


@dataclass(frozen=True)
class MemoryRead:
    """One read in a fresh process: its RSS before, its peak during, the time it took."""

    label: str
    path: str
    bytes: int
    baseline_rss_mib: float  # VmRSS after importing c2pa and deepscreen's reader
    peak_rss_mib: float  # VmHWM after the read (reset to the baseline just before it)
    peak_minus_baseline_mib: float
    hwm_reset: bool  # whether /proc/self/clear_refs could reset VmHWM before the read
    import_hwm_mib: float  # VmHWM before the reset: the peak of the imports
    child_ru_maxrss_mib: float  # the child's own ru_maxrss (may carry the parent's peak)
    read_s: float
    read_ms_field: int  # Provenance.read_ms
    state: str
    trusted: bool
    summary: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.credentials",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"videos (**/*.mp4); default {DEFAULT_DATA}"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed reads a file (median)")
    parser.add_argument(
        "--signed-clips", type=int, default=4, help="shared clips to sign (spread over sizes)"
    )
    parser.add_argument(
        "--big-gib", type=float, default=2.0, help="size of the big MP4 in GiB (0: skip part 2)"
    )
    parser.add_argument(
        "--big-source", type=Path, help="clip looped into the big MP4; default: the largest"
    )
    parser.add_argument(
        "--tmp", type=Path, help=f"where the temporary files go; default {tempfile.gettempdir()}"
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write all figures here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.signed_clips < 0 or args.big_gib < 0:
        parser.error("--signed-clips and --big-gib cannot be negative")
    return args


def machine() -> dict[str, Any]:
    """The machine, and the c2pa library (no torch here: this benchmark never loads it)."""
    import c2pa

    return {
        **host(),
        "c2pa_python": c2pa.__version__,
        "c2pa_rs": c2pa.sdk_version(),
    }


# --- part 1: ms a file ----------------------------------------------------------------------


def time_reads(
    group: str, files: list[tuple[str, Path]], config: Any, max_bytes: int, runs: int
) -> list[FileTiming]:
    from detector.credentials import read_credentials

    timings = []
    for name, path in files:
        runs_ms = []
        provenance = None
        for _ in range(runs):
            tick = time.perf_counter()
            provenance = read_credentials(path, config, max_bytes)
            runs_ms.append((time.perf_counter() - tick) * 1000)
        assert provenance is not None
        timings.append(
            FileTiming(
                group=group,
                name=name,
                bytes=path.stat().st_size,
                runs_ms=runs_ms,
                median_ms=statistics.median(runs_ms),
                state=provenance.state.value,
                trusted=provenance.trusted,
                declaration=provenance.declaration.value,
            )
        )
    return timings


def spread(files: list[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the size order: the smallest, ..., the largest."""
    by_size = sorted(files, key=lambda p: (p.stat().st_size, str(p)))
    if count >= len(by_size):
        return by_size
    if count == 1:
        return [by_size[-1]]
    picks = {round(i * (len(by_size) - 1) / (count - 1)) for i in range(count)}
    return [by_size[i] for i in sorted(picks)]


def make_images(scratch: Path) -> list[tuple[str, Path]]:
    """The astronaut (512 px) and a 2048 px upscale of it, as JPEG (quality 90) and PNG."""
    import numpy as np
    from PIL import Image
    from skimage import data

    pixels = np.asarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    small = Image.fromarray(pixels)
    large = small.resize((2048, 2048), Image.Resampling.LANCZOS)
    images = []
    for image in (small, large):
        side = image.size[0]
        jpeg = scratch / f"astronaut-{side}.jpg"
        image.save(jpeg, quality=90)
        png = scratch / f"astronaut-{side}.png"
        image.save(png)
        images += [(jpeg.name, jpeg), (png.name, png)]
    return images


def group_rows(timings: list[FileTiming]) -> list[dict[str, Any]]:
    groups: dict[str, list[FileTiming]] = {}
    for t in timings:
        groups.setdefault(t.group, []).append(t)
    rows = []
    for group, members in groups.items():
        medians = [t.median_ms for t in members]
        states: dict[str, int] = {}
        for t in members:
            key = t.state + (" trusted" if t.trusted else "")
            states[key] = states.get(key, 0) + 1
        rows.append(
            {
                "group": group,
                "files": len(members),
                "median_bytes": statistics.median(t.bytes for t in members),
                "max_bytes": max(t.bytes for t in members),
                "median_ms": statistics.median(medians),
                "worst_ms": max(medians),
                "worst_single_run_ms": max(max(t.runs_ms) for t in members),
                "states": states,
            }
        )
    return rows


# --- part 2: a 2 GiB file in a fresh process ------------------------------------------------


def make_big_mp4(source: Path, destination: Path, target_bytes: int) -> dict[str, Any]:
    """`source` looped with ffmpeg (`-stream_loop`, `-c copy`) to at least `target_bytes`."""
    import imageio_ffmpeg

    copies = max(1, math.ceil(target_bytes / source.stat().st_size))
    tick = time.perf_counter()
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            *("-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-stream_loop", str(copies - 1), "-i", str(source)),
            *("-map", "0", "-c", "copy", str(destination)),
        ],
        check=True,
        timeout=1800,
    )
    return {
        "source": str(source),
        "copies": copies,
        "bytes": destination.stat().st_size,
        "make_s": time.perf_counter() - tick,
    }


def in_child(*args: str) -> dict[str, Any]:
    """Run `child_main(args)` in a fresh Python process; its last stdout line is its JSON."""
    code = "import sys; from bench.credentials import child_main; child_main(sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child_main(argv: list[str]) -> None:
    """In the fresh process: `read PATH MAX_BYTES ROOT_PEM` or `sign SRC DST CA_DIR`."""
    import c2pa  # noqa: F401  (in the baseline: the native library is loaded)

    from consumer.signing import TestAuthority
    from detector.config import CredentialsConfig
    from detector.credentials import read_credentials

    mode, *rest = argv
    baseline = _status_mib("VmRSS")
    import_hwm = _status_mib("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
        reset = True
    except OSError:
        reset = False
    tick = time.perf_counter()
    figures: dict[str, Any] = {}
    if mode == "read":
        path, max_bytes, root = Path(rest[0]), int(rest[1]), Path(rest[2]).read_text()
        provenance = read_credentials(path, CredentialsConfig(trust_anchors_pem=root), max_bytes)
        figures = {
            "state": provenance.state.value,
            "trusted": provenance.trusted,
            "read_ms_field": provenance.read_ms,
            "summary": provenance.summary,
        }
    elif mode == "sign":
        source, destination, ca_dir = Path(rest[0]), Path(rest[1]), Path(rest[2])
        authority = TestAuthority(
            root_pem=(ca_dir / "root.pem").read_bytes(),
            chain_pem=(ca_dir / "chain.pem").read_bytes(),
            key_pem=(ca_dir / "key.pem").read_bytes(),
            signer_name=SIGNER,
            organisation=ORGANISATION,
        )
        authority.sign(source, destination)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - tick
    peak = _status_mib("VmHWM")
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                **figures,
                "baseline_rss_mib": baseline,
                "peak_rss_mib": peak,
                "hwm_reset": reset,
                "import_hwm_mib": import_hwm,
                "child_ru_maxrss_mib": ru_maxrss,
                "seconds": seconds,
            }
        )
    )


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_read(label: str, path: Path, max_bytes: int, root_pem: Path) -> MemoryRead:
    child = in_child("read", str(path), str(max_bytes), str(root_pem))
    return MemoryRead(
        label=label,
        path=str(path),
        bytes=path.stat().st_size,
        baseline_rss_mib=child["baseline_rss_mib"],
        peak_rss_mib=child["peak_rss_mib"],
        peak_minus_baseline_mib=child["peak_rss_mib"] - child["baseline_rss_mib"],
        hwm_reset=child["hwm_reset"],
        import_hwm_mib=child["import_hwm_mib"],
        child_ru_maxrss_mib=child["child_ru_maxrss_mib"],
        read_s=child["seconds"],
        read_ms_field=child["read_ms_field"],
        state=child["state"],
        trusted=child["trusted"],
        summary=child["summary"],
    )


def big_file_part(
    args: argparse.Namespace, clips: list[Path], scratch: Path, ca_dir: Path, max_bytes: int
) -> dict[str, Any]:
    target = round(args.big_gib * GIB)
    source = args.big_source or max(clips, key=lambda p: p.stat().st_size)
    free = shutil.disk_usage(scratch).free
    needed = 2 * target + 256 * MIB  # the big file and its signed copy
    if free < needed:
        return {"skipped": f"{free / GIB:.1f} GiB free in {scratch}, {needed / GIB:.1f} needed"}
    big = scratch / "big.mp4"
    signed = scratch / "big-signed.mp4"
    small_signed = scratch / f"small-signed-{source.name}"
    try:
        print(f"making a {args.big_gib:g} GiB MP4 from {source.name} ...", flush=True)
        made = make_big_mp4(source, big, target)
        print(f"  {made['bytes']:,} bytes in {made['make_s']:.1f} s; signing ...", flush=True)
        sign = in_child("sign", str(big), str(signed), str(ca_dir))
        print(f"  signed in {sign['seconds']:.1f} s; reading in fresh processes ...", flush=True)
        in_child("sign", str(source), str(small_signed), str(ca_dir))
        root = ca_dir / "root.pem"
        reads = [
            memory_read(f"{source.name}, no manifest", source, max_bytes, root),
            memory_read(f"{source.name}, signed", small_signed, max_bytes, root),
            memory_read("big MP4, no manifest", big, max_bytes, root),
            memory_read("big MP4, signed", signed, max_bytes, root),
        ]
        return {
            "big_file": made,
            "signing": {
                "seconds": sign["seconds"],
                "bytes_out": signed.stat().st_size,
                "baseline_rss_mib": sign["baseline_rss_mib"],
                "peak_rss_mib": sign["peak_rss_mib"],
                "peak_minus_baseline_mib": sign["peak_rss_mib"] - sign["baseline_rss_mib"],
            },
            "reads": [asdict(r) for r in reads],
        }
    finally:
        for path in (big, signed, small_signed):
            path.unlink(missing_ok=True)


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from consumer.signing import TestAuthority
    from detector.config import CredentialsConfig
    from detector.credentials import read_credentials

    clips = sorted(args.data.glob("**/*.mp4"))
    if not clips:
        raise SystemExit(f"error: no **/*.mp4 under {args.data}")
    max_bytes = max(3 * GIB, round(args.big_gib * GIB) + GIB)
    tick = time.perf_counter()
    import c2pa  # noqa: F401  (timed: the native library loads here)

    import_ms = (time.perf_counter() - tick) * 1000
    info = machine()
    meter = CpuMeter()
    children0 = _children_cpu_s()
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="bench-credentials-", dir=args.tmp))
    try:
        authority = TestAuthority.create(SIGNER, ORGANISATION)
        ca_dir = scratch / "ca"
        ca_dir.mkdir()
        (ca_dir / "root.pem").write_bytes(authority.root_pem)
        (ca_dir / "chain.pem").write_bytes(authority.chain_pem)
        (ca_dir / "key.pem").write_bytes(authority.key_pem)
        config = CredentialsConfig(trust_anchors_pem=authority.root_pem.decode())

        tick = time.perf_counter()
        first = read_credentials(clips[0], config, max_bytes)  # loads the native library
        first_read_ms = (time.perf_counter() - tick) * 1000

        sign_ms: dict[str, float] = {}

        def signed_copy(name: str, source: Path) -> tuple[str, Path]:
            destination = scratch / f"signed-{source.name}"
            tick = time.perf_counter()
            authority.sign(source, destination)
            sign_ms[name] = (time.perf_counter() - tick) * 1000
            return name, destination

        images = make_images(scratch)
        signed_clips = [
            signed_copy(str(p.relative_to(args.data)), p) for p in spread(clips, args.signed_clips)
        ]
        signed_images = [signed_copy(name, path) for name, path in images]
        groups = [
            ("unsigned clips (MP4)", [(str(p.relative_to(args.data)), p) for p in clips]),
            ("signed clips (MP4)", signed_clips),
            ("unsigned images", images),
            ("signed JPEG", [(n, p) for n, p in signed_images if n.endswith(".jpg")]),
            ("signed PNG", [(n, p) for n, p in signed_images if n.endswith(".png")]),
        ]
        timings: list[FileTiming] = []
        for group, files in groups:
            if files:
                print(f"timing {group}: {len(files)} files x {args.runs} reads", flush=True)
                timings += time_reads(group, files, config, max_bytes, args.runs)
        part1_s = time.perf_counter() - started

        big: dict[str, Any] = {"skipped": "--big-gib 0"}
        if args.big_gib > 0:
            big = big_file_part(args, clips, scratch, ca_dir, max_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wall_s = time.perf_counter() - started
    cpu: dict[str, Any] = dict(meter.read())
    cpu["children_cpu_s"] = _children_cpu_s() - children0
    if cpu["others_cpu_s"] is not None:  # /proc/stat counts the children with the others
        cpu["others_cpu_s"] = max(0.0, cpu["others_cpu_s"] - cpu["children_cpu_s"])
    return {
        "benchmark": "credentials",
        "machine": info,
        "config": {
            "data": str(args.data),
            "clips": len(clips),
            "runs": args.runs,
            "signed_clips": args.signed_clips,
            "big_gib": args.big_gib,
            "max_bytes": max_bytes,
            "trust_anchors": "the bench TestAuthority's root",
            "scratch": str(scratch),
        },
        "import_c2pa_ms": import_ms,
        "first_read_ms": first_read_ms,
        "first_read_state": first.state.value,
        "sign_ms": sign_ms,
        "groups": group_rows(timings),
        "files": [asdict(t) for t in timings],
        "part1_s": part1_s,
        "big": big,
        "scratch_removed": not scratch.exists(),
        "wall_s": wall_s,
        "cpu": cpu,
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(result: dict[str, Any]) -> str:
    info = result["machine"]
    config = result["config"]
    lines = [
        "deepscreen content-credentials benchmark (detector.credentials.read_credentials)",
        f"machine: {info['cpu']} ({info['processor']}), {info['cpu_count']} CPUs"
        f" ({info['cpu_affinity']} usable), {info['platform']}",
        f"python {info['python']}, c2pa-python {info['c2pa_python']} (c2pa-rs {info['c2pa_rs']})",
        f"clips {config['clips']} under {config['data']}; {config['runs']} timed reads a file"
        f" (median); trust anchors: {config['trust_anchors']}",
        f"import c2pa {result['import_c2pa_ms']:.0f} ms; first read in the process (not in the"
        f" table) {result['first_read_ms']:.1f} ms",
        f"wall {result['wall_s']:.1f} s (part 1 {result['part1_s']:.1f} s);"
        f" temporary files removed: {'yes' if result['scratch_removed'] else 'NO'}",
        cpu_line(result["cpu"]),
        f"     its child processes (ffmpeg, signing, the fresh readers)"
        f" {result['cpu']['children_cpu_s']:.1f} CPU-s, not counted in the other processes",
        "",
        "ms a file (median of the runs of each file; then median and worst over the files)",
        table(
            ["group", "files", "median size", "largest", "median ms", "worst ms", "read as"],
            [
                [
                    g["group"],
                    g["files"],
                    _size(g["median_bytes"]),
                    _size(g["max_bytes"]),
                    round(g["median_ms"], 2),
                    round(g["worst_ms"], 2),
                    ", ".join(f"{n} {state}" for state, n in g["states"].items()),
                ]
                for g in result["groups"]
            ],
        ),
        "",
        table(
            ["group", "file", "size", "median ms", "runs ms", "state", "declaration"],
            [
                [
                    t["group"],
                    t["name"],
                    _size(t["bytes"]),
                    round(t["median_ms"], 2),
                    " ".join(f"{ms:.1f}" for ms in t["runs_ms"]),
                    t["state"] + (" (trusted)" if t["trusted"] else ""),
                    t["declaration"],
                ]
                for t in result["files"]
            ],
        ),
        "",
    ]
    big = result["big"]
    if "skipped" in big:
        return "\n".join([*lines, f"peak memory on a big file: skipped ({big['skipped']})"])
    made, sign = big["big_file"], big["signing"]
    lines += [
        f"peak memory: one read in a fresh process each; baseline = its RSS after importing c2pa"
        f" and the reader; max_bytes {config['max_bytes']:,}",
        f"big MP4: {Path(made['source']).name} looped {made['copies']}x with ffmpeg -c copy"
        f" -> {made['bytes']:,} bytes ({made['bytes'] / GIB:.2f} GiB) in {made['make_s']:.1f} s",
        f"signing it (TestAuthority.sign, fresh process): {sign['seconds']:.1f} s, peak RSS"
        f" {sign['peak_rss_mib']:.0f} MiB ({sign['peak_minus_baseline_mib']:+.0f} MiB over"
        f" {sign['baseline_rss_mib']:.0f} MiB)",
        "",
        table(
            ["file", "size", "read s", "baseline MiB", "peak MiB", "peak - base", "state"],
            [
                [
                    r["label"],
                    _size(r["bytes"]),
                    round(r["read_s"], 3),
                    round(r["baseline_rss_mib"], 1),
                    round(r["peak_rss_mib"], 1),
                    round(r["peak_minus_baseline_mib"], 1),
                    r["state"] + (" (trusted)" if r["trusted"] else ""),
                ]
                for r in big["reads"]
            ],
        ),
    ]
    if not all(r["hwm_reset"] for r in big["reads"]):
        lines.append("note: VmHWM could not be reset before a read; its peak includes the imports")
    return "\n".join(lines)


def _size(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.0f} KiB"


def main(argv: list[str] | None = None) -> None:
    quiet()
    args = parse_args(argv)
    result = run(args)
    print()
    publish_report(result, report(result), args.json_out)


if __name__ == "__main__":
    main()
