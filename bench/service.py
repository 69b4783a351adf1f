"""The service itself: uploads a second through Kafka, the cache and the decoder processes.

    python -m bench.service [--uploads N] [--videos DIR] [--hit-video FILE] [--replicas N]
                            [--phases ...] [--json OUT]

Each phase runs in a fresh Python process of its own (so that its CPU time and peak RSS are
its own): an `EmbeddedBroker` (Tansu), and the service from `build_app` on a thread of that
process, with its real Kafka consumer and producer, its real `UriFetcher`, the verdict cache,
decoding in `extraction_workers` isolated worker processes and an untrained reference model
(ResNeXt50+LSTM, 112 px) on the CPU.

* cache hit (in-process cache, and Redis when one answers on 127.0.0.1:6379): one video is
  screened once to fill the cache, then N uploads of those same bytes (distinct video ids):
  each is fetched, hashed, found in the cache and its verdict republished; no video work.
* end to end: every video under `--videos` published once, screened from scratch.

The group join and a warm-up screening come first and are not measured. The uploads are then
published while a gate in front of the fetcher holds the service back, so the clock (and the
CPU meter) starts with a backlog on the topic and the publisher's own work is not counted.

`--replicas 2` runs a second replica of the service in a process of its own, in the same
consumer group (one uploads partition each), with the same cache and gate: what a platform
gets from scaling out on one machine. Its CPU is counted with the children.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._common import (
    REPO_ROOT,
    CpuMeter,
    machine,
    machine_lines,
    peak_rss_mib,
    publish_report,
    quiet,
    table,
)

if TYPE_CHECKING:
    from consumer.broker import EventSink, Headers, PublishError
    from consumer.embedded import EmbeddedBroker
    from consumer.media import FetchedMedia, MediaFetcher
    from consumer.metrics import Metrics
    from consumer.settings import Settings

DEFAULT_VIDEOS = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
UPLOADS, FLAGS, VERDICTS, DLQ = "media.uploads", "moderation.flags", "screening.verdicts", "dlq"
UPLOAD_PARTITIONS = 2
EXTRACTION_WORKERS = 2
PHASES = {
    "cache-memory": "cache hit, in-process cache",
    "cache-redis": "cache hit, Redis cache",
    "end-to-end": "end to end, distinct videos",
}
WARMUP_TIMEOUT_S = 600.0
PHASE_TIMEOUT_S = 3600.0


# -- what the phase process measures ---------------------------------------------------------


class WatchedSink:
    """The real `KafkaEventSink`, noting when each event was acknowledged by the broker.

    Records on `outcomes` (`outcome_topics`) are outcomes, one an upload. `done` is set once
    `expect(n)` outcomes have been acknowledged.
    """

    def __init__(self, inner: EventSink, outcomes: tuple[str, ...], shared: Any = None) -> None:
        """`shared`: a `multiprocessing.Value("i")` every replica's sink counts outcomes into."""
        self._inner = inner
        self._outcomes = outcomes
        self._shared = shared
        self._lock = threading.Lock()
        self.done = threading.Event()
        self._target = 0
        self.outcomes = 0
        self.first_outcome: float | None = None
        self.last_outcome: float | None = None
        self.last_event: float | None = None
        self.times: list[float] = []  # of each outcome

    def expect(self, outcomes: int) -> None:
        with self._lock:
            self._target = outcomes
            self.outcomes = 0
            self.first_outcome = self.last_outcome = self.last_event = None
            self.times = []
            self.done.clear()

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        self._inner.send(topic, key, value, headers)  # returns once the broker has it
        self._acknowledged(topic)

    def send_async(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        acknowledged: Callable[[], None],
        failed: Callable[[PublishError], None],
    ) -> None:
        def noted() -> None:
            self._acknowledged(topic)
            acknowledged()

        self._inner.send_async(topic, key, value, headers, noted, failed)

    def _acknowledged(self, topic: str) -> None:
        now = time.perf_counter()
        with self._lock:
            self.last_event = now
            if topic in self._outcomes:
                self.outcomes += 1
                self.first_outcome = self.first_outcome or now
                self.last_outcome = now
                self.times.append(now)
                if self.outcomes >= self._target:
                    self.done.set()
        if self._shared is not None and topic in self._outcomes:
            with self._shared.get_lock():
                self._shared.value += 1

    def flush(self, timeout_s: float) -> None:
        self._inner.flush(timeout_s)

    def close(self) -> None:
        self._inner.close()


class GatedFetcher:
    """The real fetcher behind a gate: while it is shut, workers wait before fetching."""

    def __init__(self, inner: MediaFetcher, gate: Any = None) -> None:
        """`gate`: an event shared with other replicas (a `multiprocessing.Event`)."""
        self._inner = inner
        self._open = gate if gate is not None else threading.Event()
        self._open.set()

    def shut(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def fetch(self, uri: str) -> contextlib.AbstractContextManager[FetchedMedia]:
        self._open.wait()
        return self._inner.fetch(uri)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str
    cpu_s: float  # user + system, its own and that of its children it has reaped


def processes() -> dict[int, Proc]:
    """Every process in /proc, with its parent and CPU seconds."""
    hz = os.sysconf("SC_CLK_TCK")
    found: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        found[int(entry.name)] = Proc(int(entry.name), int(fields[1]), name, ticks / hz)
    return found


def descendants(table_: dict[int, Proc], root: int, exclude: set[int]) -> list[Proc]:
    """The live processes under `root`, leaving out `exclude` and everything under them."""
    children: dict[int, list[Proc]] = {}
    for proc in table_.values():
        children.setdefault(proc.ppid, []).append(proc)
    found: list[Proc] = []
    stack = [root]
    while stack:
        for proc in children.get(stack.pop(), []):
            if proc.pid not in exclude:
                found.append(proc)
                stack.append(proc.pid)
    return found


def vm_hwm_mib(pid: int) -> float | None:
    """Peak RSS (`VmHWM`) of a live process in MiB; None for a zombie or a vanished one.

    Unlike `ru_maxrss`, it is the peak of the process's own address space: a child started
    by fork + exec from a large parent does not inherit the parent's RSS as its peak.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak_rss(pid: int) -> bool:
    """Set `VmHWM` back to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class TreeSample:
    """CPU seconds of this process's children (the decoder workers) and of the broker."""

    children_cpu_s: float
    broker_cpu_s: float
    redis_cpu_s: float  # every redis-server on the machine (not ours: counted as "others")
    children: list[Proc]

    @classmethod
    def take(cls, broker_pid: int | None) -> TreeSample:
        # Reaped children are in RUSAGE_CHILDREN, live ones in /proc (their CPU reaches
        # RUSAGE_CHILDREN only once they are waited for): the sum is continuous across a reap.
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        table_ = processes()
        exclude = {broker_pid} if broker_pid else set()
        live = descendants(table_, os.getpid(), exclude)
        broker: list[Proc] = []
        if broker_pid in table_:
            broker = [table_[broker_pid], *descendants(table_, broker_pid, set())]
        return cls(
            children_cpu_s=reaped.ru_utime + reaped.ru_stime + sum(p.cpu_s for p in live),
            broker_cpu_s=sum(p.cpu_s for p in broker),
            redis_cpu_s=sum(p.cpu_s for p in table_.values() if p.name == "redis-server"),
            children=live,
        )


def outcome_topics(settings: Settings) -> tuple[str, ...]:
    """The topics whose records are outcomes, one an upload: each verdict on the audit topic
    where there is one, else the flag (in the cache phases every upload is flagged), and
    dead letters."""
    kafka = settings.kafka
    return (kafka.verdicts_topic or kafka.flags_topic, kafka.dlq_topic)


def counters(metrics: Metrics) -> dict[str, float]:
    """Every counter of the service's registry, `name{label=value}` → value."""
    values: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.type != "counter":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def in_flight(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("deepscreen_in_flight") or 0.0


def await_outcome(sink: WatchedSink, metrics: Metrics, timeout_s: float) -> None:
    """Until `sink` has its expected outcomes. An upload screened with no outcome published
    (a verdict that asks for no action, and no audit topic) stops the benchmark."""
    deadline = time.monotonic() + timeout_s
    while not sink.done.wait(0.1):
        screened = sum(
            value for name, value in counters(metrics).items()
            if name.startswith("deepscreen_verdicts_total")
        )  # fmt: skip
        if screened and in_flight(metrics) == 0 and not sink.done.wait(2.0):
            raise SystemExit(
                "error: the verdict asks for no action, so nothing is published for it without"
                " the audit topic: give --verdicts-topic (or another --hit-video)"
            )
        if time.monotonic() > deadline:
            return


def wait_idle(metrics: Metrics, timeout_s: float = 60.0) -> None:
    """Until no upload is in flight (a verdict's flag is sent after the verdict)."""
    deadline = time.monotonic() + timeout_s
    while in_flight(metrics) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"uploads still in flight after {timeout_s:.0f} s")
        time.sleep(0.001)


def upload_event(video_id: str, path: Path) -> bytes:
    event = {
        "video_id": video_id,
        "uri": path.resolve().as_uri(),
        "uploaded_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(event).encode()


def publish(
    bootstrap: str, uploads: Sequence[tuple[str, Path]], *, partitioned: bool = False
) -> None:
    """`partitioned`: the i-th upload to partition i (modulo), not by its key."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(
                UPLOADS,
                key=video_id.encode(),
                value=upload_event(video_id, path),
                partition=i % UPLOAD_PARTITIONS if partitioned else None,
            )
            for i, (video_id, path) in enumerate(uploads)
        ]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=10)


def warm_copy(video: Path, scratch: Path) -> Path:
    """`video` plus an empty MP4 `free` box: still the same video, but other bytes (no hit)."""
    copy = scratch / f"warmup-{video.name}"
    shutil.copyfile(video, copy)
    with copy.open("ab") as file:
        file.write((8).to_bytes(4, "big") + b"free")
    return copy


def redis_cleanup(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def say(text: str) -> None:
    print(text, flush=True)


def phase_settings(
    broker: EmbeddedBroker,
    group_id: str,
    cache_url: str,
    prefix: str,
    model: Path,
    videos: Path,
    scratch: Path,
    verdicts_topic: bool,
) -> Settings:
    """The service's settings in a phase: those of every replica of it. `verdicts_topic`:
    every verdict is published to the audit topic too (the service's default: not)."""
    from consumer.embedded import embedded_kafka_settings
    from consumer.settings import (
        DetectorSettings,
        HttpSettings,
        MediaSettings,
        RedisSettings,
        Settings,
    )

    return Settings(
        kafka=embedded_kafka_settings(
            broker,
            group_id=group_id,
            uploads=UPLOADS,
            flags=FLAGS,
            verdicts=VERDICTS if verdicts_topic else "",
            dlq=DLQ,
        ),
        redis=RedisSettings(url=cache_url, key_prefix=prefix, verdict_ttl_s=3600),
        media=MediaSettings(file_roots=(videos.resolve(), scratch.resolve())),
        detector=DetectorSettings(
            model_path=model, device="cpu", extraction_workers=EXTRACTION_WORKERS
        ),
        http=HttpSettings(host="127.0.0.1", port=0),
        log_level="error",
    )


def replica_main(
    settings_json: str, gate: Any, stop: Any, shared: Any, ready: Any, out: Any
) -> None:
    """Another replica of the phase's service, in a process of its own (the same group, cache
    and topics): warmed up, then `ready`; it fetches only while `gate` is set; at `stop` it
    puts the times of its outcomes on `out`."""
    from consumer.app import build_app, fetch_policy
    from consumer.broker import KafkaEventSink
    from consumer.logs import configure_logging
    from consumer.media import UriFetcher
    from consumer.settings import Settings

    quiet()
    configure_logging("error", "console")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = Settings.model_validate_json(settings_json)
    sink = WatchedSink(KafkaEventSink(settings.kafka), outcome_topics(settings), shared)
    fetcher = GatedFetcher(UriFetcher(fetch_policy(settings)), gate)
    app = build_app(settings, serve_http=False, sink=sink, fetcher=fetcher)
    thread = threading.Thread(target=app.service.run, name="service", daemon=True)
    sink.expect(1)
    thread.start()
    while not stop.is_set():
        if sink.done.is_set():
            ready.set()
        stop.wait(0.05)
    app.service.stop()
    thread.join(120)
    out.put(list(sink.times))


def run_phase(
    kind: str,
    model: Path,
    videos: Path,
    uploads: int,
    redis_url: str,
    hit: Path | None = None,
    replicas: int = 1,
    verdicts_topic: bool = False,
) -> dict[str, Any]:
    """One phase, in this (fresh) process; returns its figures. `hit`: the file re-uploaded
    in the cache phases (default: the first video). `replicas`: the service in this process
    and `replicas - 1` processes more, in one consumer group. `verdicts_topic`: the cache
    phases publish every verdict to the audit topic too (the end-to-end phase always does:
    an upload without a flag has no other outcome to time)."""
    from consumer.app import build_app, fetch_policy
    from consumer.broker import KafkaEventSink
    from consumer.embedded import EmbeddedBroker
    from consumer.logs import configure_logging
    from consumer.media import UriFetcher
    from consumer.settings import KafkaSettings
    from detector.artifact import read_metadata

    configure_logging("error", "console")
    files = sorted(videos.glob("**/*.mp4"))
    if not files:
        raise SystemExit(f"error: no **/*.mp4 under {videos}")
    label = PHASES[kind]
    prefix = f"bench-service:{uuid.uuid4().hex[:12]}"
    cache_url = redis_url if kind == "cache-redis" else ""

    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-service-")))
        kafka_log = logging.getLogger("kafka")
        kafka_log.setLevel(logging.CRITICAL)  # "connection refused" while Tansu starts
        broker = stack.enter_context(EmbeddedBroker())
        known = KafkaSettings()  # the bank and decisions topics the service reads at start
        broker.create_topics({UPLOADS: UPLOAD_PARTITIONS, FLAGS: 1, VERDICTS: 1, DLQ: 1,
                              known.bank_topic: 1, known.decisions_topic: 1})  # fmt: skip
        kafka_log.setLevel(logging.NOTSET)
        settings = phase_settings(
            broker, f"bench-{uuid.uuid4().hex[:8]}", cache_url, prefix, model, videos,
            scratch, verdicts_topic=verdicts_topic or kind == "end-to-end",
        )  # fmt: skip
        if kind == "end-to-end":
            warm = warm_copy(files[0], scratch)
            work = [(f"video-{i:03d}-{path.stem}", path) for i, path in enumerate(files)]
        else:
            warm = hit or files[0]
            work = [(f"hit-{i:05d}", warm) for i in range(uploads)]

        # Other replicas: processes of their own, fetching only while the shared gate is open.
        spawn = multiprocessing.get_context("spawn")
        gate, stop, shared, out = spawn.Event(), spawn.Event(), spawn.Value("i", 0), spawn.Queue()
        ready = [spawn.Event() for _ in range(replicas - 1)]
        others = [
            spawn.Process(
                target=replica_main,
                args=(settings.model_dump_json(), gate, stop, shared, flag, out),
                daemon=False,  # it starts decoder processes of its own
            )
            for flag in ready
        ]
        other_times: list[float] = []
        for other in others:
            other.start()
        tick = time.perf_counter()
        sink = WatchedSink(
            KafkaEventSink(settings.kafka), outcome_topics(settings), shared if others else None
        )
        fetcher = GatedFetcher(UriFetcher(fetch_policy(settings)), gate)
        app = build_app(settings, serve_http=False, sink=sink, fetcher=fetcher)
        build_s = time.perf_counter() - tick
        metrics = app.metrics
        thread = threading.Thread(target=app.service.run, name="service", daemon=True)
        removed = 0
        try:
            tick = time.perf_counter()
            thread.start()
            # The group join and a first screening (model, decoders, cache): not measured.
            # With other replicas, one warm-up a partition, again until every replica has
            # had one (the group may still be settling who holds which partition).
            sink.expect(1)
            rounds = 0
            while not (sink.done.is_set() and all(flag.is_set() for flag in ready)):
                if time.perf_counter() - tick > WARMUP_TIMEOUT_S:
                    raise TimeoutError(f"not every replica warmed up in {WARMUP_TIMEOUT_S} s")
                spread = UPLOAD_PARTITIONS if others else 1
                publish(broker.bootstrap, [(f"warmup-{rounds}-{p}", warm) for p in range(spread)],
                        partitioned=bool(others))  # fmt: skip
                rounds += 1
                await_outcome(sink, metrics, WARMUP_TIMEOUT_S if not others else 20.0)
                for flag in ready:
                    flag.wait(max(0.0, 20.0 - (time.perf_counter() - tick)))
            wait_idle(metrics)
            if others:
                time.sleep(1.0)  # the other replicas' last acknowledgements
            warmup_s = time.perf_counter() - tick
            say(f"[{label}] {replicas} replica(s) joined and warmed up in {warmup_s:.1f} s;"
                f" publishing {len(work)}")  # fmt: skip

            fetcher.shut()
            with shared.get_lock():
                shared.value = 0
            sink.expect(len(work))
            before = counters(metrics)  # before any of `work` is consumed
            publish(broker.bootstrap, work)
            tree0 = TreeSample.take(broker.pid)
            # Peak RSS of the wall alone: before it, note the peak so far, then reset it.
            service_pids = [os.getpid(), *(p.pid for p in tree0.children)]
            setup_peaks = {pid: vm_hwm_mib(pid) for pid in service_pids}
            peak_reset = all([reset_peak_rss(pid) for pid in service_pids])
            meter = CpuMeter()
            started = time.perf_counter()
            fetcher.open()
            if others:
                while shared.value < len(work):
                    if time.perf_counter() - started > PHASE_TIMEOUT_S:
                        raise TimeoutError(f"{shared.value} of {len(work)} outcomes")
                    time.sleep(0.005)
            elif not sink.done.wait(PHASE_TIMEOUT_S):
                got = sink.outcomes
                raise TimeoutError(f"{got} of {len(work)} outcomes in {PHASE_TIMEOUT_S:.0f} s")
            wait_idle(metrics)
            cpu = meter.read()
            tree1 = TreeSample.take(broker.pid)
            after = counters(metrics)
            wall_peaks = {pid: vm_hwm_mib(pid) for pid in [os.getpid(), *setup_peaks]}
            ru_maxrss_self = peak_rss_mib()
            new_children = {p.pid for p in tree1.children} - set(setup_peaks)
        finally:
            fetcher.open()
            stop.set()
            for _ in others:
                with contextlib.suppress(Exception):
                    other_times += out.get(timeout=150)
            for other in others:
                other.join(30)
            app.service.stop()
            thread.join(120)
            if cache_url:
                with contextlib.suppress(Exception):
                    removed = redis_cleanup(cache_url, prefix)
        if thread.is_alive():
            raise RuntimeError("the service did not stop within 120 s")

    times = sorted(t for t in [*sink.times, *other_times] if t >= started)
    assert times, "no outcome was measured"
    first_outcome, last_outcome = times[0], times[-1]
    end = max(sink.last_event or last_outcome, last_outcome) if not others else last_outcome
    wall_s = end - started
    span_s = last_outcome - first_outcome
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    clips = int(delta.get("deepscreen_clips_scored_total", 0))
    self_cpu = float(cpu["own_cpu_s"] or 0.0)
    children_cpu = tree1.children_cpu_s - tree0.children_cpu_s
    broker_cpu = tree1.broker_cpu_s - tree0.broker_cpu_s
    redis_cpu = tree1.redis_cpu_s - tree0.redis_cpu_s
    others = cpu["others_cpu_s"]
    # CpuMeter counts only this process as its own: take the decoder workers and the broker
    # out of its "other processes", so that those are the processes outside the benchmark.
    outside = None if others is None else max(0.0, others - children_cpu - broker_cpu)
    me = os.getpid()
    child_peaks = [v for pid, v in wall_peaks.items() if pid != me and v is not None]
    child_setup_peaks = [v for pid, v in setup_peaks.items() if pid != me and v is not None]
    gaps = sorted(1000 * (b - a) for a, b in itertools.pairwise(times))
    count = len(work)
    metadata = read_metadata(model)
    say(f"[{label}] {count} uploads in {wall_s:.2f} s")
    return {
        "phase": kind,
        "label": label,
        "machine": machine("cpu"),
        "model": {
            "name": metadata.name,
            "input_size": metadata.input_size,
            "trained": metadata.trained,
        },
        "uploads": count,
        "replicas": replicas,
        "cache": f"redis ({cache_url}, prefix {prefix})" if cache_url else "in-process",
        "video": str(hit or files[0]) if kind != "end-to-end" else None,
        "video_bytes": (hit or files[0]).stat().st_size if kind != "end-to-end" else None,
        "videos_dir": str(videos),
        "build_app_s": build_s,
        "join_and_warmup_s": warmup_s,
        "wall_s": wall_s,
        "uploads_per_s": count / wall_s,
        "first_to_last_verdict_s": span_s,
        "first_to_last_per_s": (count - 1) / span_s if span_s > 0 else None,
        "verdict_gap_ms": {
            "median": statistics.median(gaps) if gaps else None,
            "p90": gaps[int(0.9 * (len(gaps) - 1))] if gaps else None,
            "max": gaps[-1] if gaps else None,
        },
        "clips": clips,
        "clips_per_s": clips / wall_s,
        "counters": delta,
        "cpu_self_s": self_cpu,
        "cpu_children_s": children_cpu,
        "cpu_total_s": self_cpu + children_cpu,
        "cpu_ms_per_upload": 1000 * (self_cpu + children_cpu) / count,
        "cores_busy": (self_cpu + children_cpu) / wall_s,
        "broker_cpu_s": broker_cpu,
        "redis_server_cpu_s": redis_cpu if cache_url else None,
        "cpu_meter": {**cpu, "others_cpu_s": outside},
        "peak_rss_reset_at_start": peak_reset,
        "peak_rss_self_mib": wall_peaks.get(me) or ru_maxrss_self,
        "peak_rss_children_mib": max(child_peaks, default=None),
        "peak_rss_self_before_mib": setup_peaks.get(me),
        "peak_rss_children_before_mib": max(child_setup_peaks, default=None),
        "ru_maxrss_self_mib": ru_maxrss_self,
        "children": [
            {"pid": pid, "peak_rss_mib": peak, "peak_rss_before_mib": setup_peaks.get(pid)}
            for pid, peak in wall_peaks.items()
            if pid != me
        ],
        "children_started_during_wall": sorted(new_children),
        "redis_keys_removed": removed,
    }


# -- the driver: one process a phase, then the report ----------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.service", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--uploads", type=int, default=300, help="uploads of the cache-hit phases")
    parser.add_argument(
        "--videos",
        type=Path,
        default=DEFAULT_VIDEOS,
        help=f"videos (**/*.mp4) for the end-to-end phase; default {DEFAULT_VIDEOS}",
    )
    parser.add_argument(
        "--hit-video",
        type=Path,
        help="the file re-uploaded in the cache-hit phases; default: the first of --videos",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=sorted(PHASES),
        help="run only these phases (default: all)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help=f"service replicas in one consumer group (processes of their own; at most"
        f" {UPLOAD_PARTITIONS}, the uploads topic's partitions)",
    )
    parser.add_argument(
        "--verdicts-topic",
        action="store_true",
        help="the cache phases also publish every verdict to the audit topic (the service's"
        " default, and this benchmark's, is flags only; the end-to-end phase always does)",
    )
    parser.add_argument("--json", type=Path, dest="json_out", help="write all figures here")
    # Internal: the driver runs each phase as `--phase KIND` in a process of its own.
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.uploads < 2:
        parser.error("--uploads must be at least 2")
    if not 1 <= args.replicas <= UPLOAD_PARTITIONS:
        parser.error(f"--replicas is between 1 and {UPLOAD_PARTITIONS}")
    return args


def redis_available(url: str = DEFAULT_REDIS) -> bool:
    from consumer.demo import local_redis_url

    return bool(local_redis_url(url))


def write_reference_model(path: Path) -> None:
    """`init_reference` in a process of its own: this one stays small (no torch), so the phase
    processes it starts do not begin life with its RSS."""
    code = (
        "import sys; from pathlib import Path; from bench._common import quiet; quiet();"
        " from detector.training.export import init_reference;"
        " init_reference(Path(sys.argv[1]), input_size=112)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, check=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from consumer.settings import KafkaSettings  # the service's default max_in_flight

    files = sorted(args.videos.glob("**/*.mp4"))
    if not files:
        raise SystemExit(f"error: no **/*.mp4 under {args.videos}")
    redis_url = DEFAULT_REDIS if redis_available() else ""
    kinds = ["cache-memory", *(["cache-redis"] if redis_url else []), "end-to-end"]
    if args.phases:
        kinds = [kind for kind in kinds if kind in args.phases]
    if not redis_url:
        say(f"note: no Redis answers at {DEFAULT_REDIS}; the Redis cache phase is skipped")
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        model = Path(scratch) / "reference-112.pt"
        write_reference_model(model)
        for kind in kinds:
            result = Path(scratch) / f"{kind}.json"
            command = [
                sys.executable, "-m", "bench.service", "--phase", kind, "--model", str(model),
                "--videos", str(args.videos), "--uploads", str(args.uploads),
                "--redis-url", redis_url, "--result", str(result),
                "--replicas", str(args.replicas),
                *(["--hit-video", str(args.hit_video)] if args.hit_video else []),
                *(["--verdicts-topic"] if args.verdicts_topic else []),
            ]  # fmt: skip
            subprocess.run(command, cwd=REPO_ROOT, check=True)
            phases.append(json.loads(result.read_text()))
    return {
        "benchmark": "service",
        "machine": phases[0]["machine"],
        "config": {
            "uploads": args.uploads,
            "videos_dir": str(args.videos),
            "videos": len(files),
            "cache_video": str(args.hit_video or files[0]),
            "cache_video_bytes": (args.hit_video or files[0]).stat().st_size,
            "redis": redis_url or None,
            "model": phases[0]["model"],
            "device": "cpu",
            "max_in_flight": KafkaSettings().max_in_flight,
            "replicas": args.replicas,
            "verdicts_topic_in_cache_phases": args.verdicts_topic,
            "extraction_workers": EXTRACTION_WORKERS,
            "upload_partitions": UPLOAD_PARTITIONS,
            "detector": "DetectorSettings defaults otherwise (windows 8, batch 32, wait 20 ms)",
        },
        "phases": phases,
    }


def _mib(value: float | None) -> int | str:
    return "?" if value is None else round(value)


def report(result: dict[str, Any]) -> str:
    c = result["config"]
    model = c["model"]
    phases = result["phases"]
    cpus = result["machine"]["cpu_count"] or 1
    throughput = [
        (
            p["label"],
            p["uploads"],
            round(p["wall_s"], 2),
            round(p["uploads_per_s"], 2),
            round(p["first_to_last_per_s"] or 0.0, 2),
            p["clips"],
            round(p["clips_per_s"], 2),
            round(p["join_and_warmup_s"], 1),
        )
        for p in phases
    ]
    resources = [
        (
            p["label"],
            round(p["cpu_self_s"], 2),
            round(p["cpu_children_s"], 2),
            round(p["cpu_ms_per_upload"], 1),
            round(p["cores_busy"], 2),
            _mib(p["peak_rss_self_mib"]),
            _mib(p["peak_rss_children_mib"]),
            _mib(p["peak_rss_self_before_mib"]),
            _mib(p["peak_rss_children_before_mib"]),
        )
        for p in phases
    ]
    details: list[str] = []
    for p in phases:
        meter = p["cpu_meter"]
        counted = ", ".join(
            f"{k.removeprefix('deepscreen_').removesuffix('_total')} {v:g}"
            for k, v in sorted(p["counters"].items())
        )
        redis = p["redis_server_cpu_s"]
        others = meter["others_cpu_s"]
        steal = meter["steal_cpu_s"]
        gap = p["verdict_gap_ms"]
        details += [
            f"{p['label']}: {counted}",
            f"  gap between consecutive verdicts: median {gap['median'] or 0:.1f} ms,"
            f" p90 {gap['p90'] or 0:.1f} ms, max {gap['max'] or 0:.1f} ms",
            f"  CPU in the wall: service {p['cpu_total_s']:.2f} CPU-s"
            f" ({100 * p['cpu_total_s'] / (p['wall_s'] * cpus):.0f}% of {cpus} CPUs);"
            f" broker {p['broker_cpu_s']:.2f} CPU-s;"
            + (f" redis-server {redis:.2f} CPU-s (in others);" if redis is not None else "")
            + (
                f" other processes {others:.2f} CPU-s, hypervisor steal {steal:.2f} s"
                if others is not None and steal is not None
                else ""
            ),
        ]
    return "\n".join(
        [
            "deepscreen service benchmark (in-process service, embedded Kafka broker)",
            *machine_lines(result["machine"]),
            f"model {model['name']} ({model['input_size']} px, trained={model['trained']}) on the"
            f" CPU; replicas={c.get('replicas', 1)} (one process each), max_in_flight="
            f"{c['max_in_flight']} each, extraction_workers="
            f"{c['extraction_workers']}, uploads topic: {c['upload_partitions']} partitions",
            f"cache-hit video {c['cache_video']} ({c['cache_video_bytes']:,} bytes), published:"
            f" {'flag and verdict' if c.get('verdicts_topic_in_cache_phases') else 'flag'};"
            f" end to end: {c['videos']} videos under {c['videos_dir']} (flags and verdicts)",
            "",
            table(
                [
                    "phase",
                    "uploads",
                    "wall s",
                    "uploads/s",
                    "first→last /s",
                    "clips",
                    "clips/s",
                    "join+warm-up s",
                ],
                throughput,
            ),
            "",
            "CPU and peak RSS: the service process (self) and its children (its decoder workers;"
            " with --replicas, the other replicas and theirs too)",
            table(
                [
                    "phase",
                    "CPU self s",
                    "CPU children s",
                    "CPU ms/upload",
                    "cores busy",
                    "RSS self MiB",
                    "RSS children MiB",
                    "before: self",
                    "before: children",
                ],
                resources,
            ),
            "",
            "counters during the wall (the metrics of the replica in the phase process) and the"
            " machine's CPU:",
            *details,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    quiet()
    args = parse_args(argv)
    if args.phase:
        if args.model is None or args.result is None:
            raise SystemExit("error: --phase needs --model and --result")
        figures = run_phase(
            args.phase, args.model, args.videos, args.uploads, args.redis_url, args.hit_video,
            args.replicas, args.verdicts_topic,
        )  # fmt: skip
        args.result.write_text(json.dumps(figures, indent=2) + "\n")
        return
    result = run(args)
    publish_report(result, report(result), args.json_out)


if __name__ == "__main__":
    main()
