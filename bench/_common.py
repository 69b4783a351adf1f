"""What both benchmarks share: quiet logs, a description of the machine, plain tables."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def quiet() -> None:
    """Silence MediaPipe's C++ logs and TorchScript's deprecation notices, as `deepscreen` does."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")


def cpu_name() -> str:
    """The CPU model: the one description derived model forms record (`detector.derived`)."""
    from detector.derived import cpu_name as detector_cpu_name  # torch: only when reporting

    return detector_cpu_name()


def host() -> dict[str, Any]:
    """The machine a figure was measured on: platform, CPU, cores, Python."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
    }


def machine(device: str) -> dict[str, Any]:
    """`host()`, and torch and the device used."""
    import torch

    info: dict[str, Any] = {
        **host(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
    return info


def memory_mib(field: str = "VmRSS") -> float:
    """This process's resident memory now (`VmRSS`) or at its peak (`VmHWM`), in MiB.

    From /proc (0 elsewhere): unlike `ru_maxrss`, `VmHWM` starts afresh at exec, so a child
    of a large parent reports its own peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (`ru_maxrss` is KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


class CpuMeter:
    """CPU time during a run: this process's, other processes', and the hypervisor's steal.

    A benchmark on a shared or virtual machine is only as good as its quiet: `others_cpu_s`
    (busy time in /proc/stat not spent by this process) and `steal_cpu_s` say how much of the
    machine was taken while it ran. Linux only; elsewhere the figures are `None`.
    """

    def __init__(self, children: bool = False) -> None:
        """`children`: this process's finished child processes count as its own."""
        self._children = children
        self._stat0 = _proc_stat()
        self._self0 = self._own_cpu_s()
        self._wall0 = time.perf_counter()

    def _own_cpu_s(self) -> float:
        own = _self_cpu_s()
        if self._children:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            own += usage.ru_utime + usage.ru_stime
        return own

    def read(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall0
        own = self._own_cpu_s() - self._self0
        stat = _proc_stat()
        cpus = os.cpu_count() or 1
        figures: dict[str, float | None] = {
            "wall_s": wall,
            "own_cpu_s": own,
            "own_cpu_pct_of_machine": 100 * own / (wall * cpus) if wall else None,
            "others_cpu_s": None,
            "steal_cpu_s": None,
        }
        if stat is not None and self._stat0 is not None:
            busy = stat[0] - self._stat0[0]
            figures["others_cpu_s"] = max(0.0, busy - own)
            figures["steal_cpu_s"] = stat[1] - self._stat0[1]
        return figures


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_stat() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (ticks + [0] * 8)[:8]
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def cpu_line(figures: dict[str, Any]) -> str:
    if figures.get("others_cpu_s") is None:
        return f"CPU: this process {figures['own_cpu_s']:.1f} CPU-s"
    return (
        f"CPU: this process {figures['own_cpu_s']:.1f} CPU-s "
        f"({figures['own_cpu_pct_of_machine']:.0f}% of the machine); other processes "
        f"{figures['others_cpu_s']:.1f} CPU-s, hypervisor steal {figures['steal_cpu_s']:.1f} s"
        " (large figures here mean a contended run)"
    )


def machine_lines(info: dict[str, Any]) -> list[str]:
    gpu = f", gpu {info['gpu']} ({info['gpu_memory_gib']} GiB)" if "gpu" in info else ""
    return [
        f"machine: {info['cpu']} ({info['processor']}), {info['cpu_count']} CPUs"
        f" ({info['cpu_affinity']} usable), {info['platform']}",
        f"python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads),"
        f" device {info['device']}{gpu}",
    ]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) if rows else False
        for i in range(len(headers))
    ]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,}"  # callers round to the digits that mean something
    return str(value)


def publish_report(result: dict[str, Any], report_text: str, json_out: Path | None) -> None:
    """Print the human report, and write the figures as JSON when asked to."""
    print(report_text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {json_out}")


def report_text(
    title: str,
    result: dict[str, Any],
    details: Sequence[str],
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
) -> str:
    """A benchmark's report: what ran, on which machine, its footprint, then the table."""
    return "\n".join(
        [
            title,
            *machine_lines(result["machine"]),
            *details,
            f"peak RSS {result['peak_rss_mib']:.0f} MiB",
            cpu_line(result["cpu"]),
            "",
            table(headers, rows),
        ]
    )


def bench_main(
    argv: list[str] | None,
    parse_args: Callable[[list[str] | None], Any],
    run: Callable[[Any], dict[str, Any]],
    report: Callable[[dict[str, Any]], str],
) -> None:
    """Parse, run, print the report (and write the JSON when `--json-out` asks)."""
    quiet()
    args = parse_args(argv)
    result = run(args)
    print()
    publish_report(result, report(result), args.json_out)
