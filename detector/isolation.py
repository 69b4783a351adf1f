"""Decode untrusted media in worker processes, so a decoder crash cannot take the service down.

FFmpeg and MediaPipe are native code fed with attacker-controlled bytes. Each
worker process owns one MediaPipe detector and screens one video at a time,
so when a worker dies (a segfault, the OOM killer, an abort) the video that
killed it is known: it becomes `unreadable` / `decoder_crashed`, the worker is
replaced, and every other video goes on. A worker that overruns the decode
time limit is killed the same way (`decode_timeout`). Each worker's address
space is capped (`memory_limit_mb` above what it uses after start-up).

The same workers read each upload's content credentials (C2PA), which are
as untrusted as the pixels: a read over `read_timeout_s` is killed like a
decode and the credentials are `unreadable` / `read_timeout`, a crash is
`reader_crashed`, and the upload still gets its verdict.

Workers start with `spawn` (no inherited threads or CUDA state) and never
import torch: only the face clips, as uint8 arrays, come back over the pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from detector.config import DetectorConfig, IsolationConfig
from detector.credentials import read_credentials, unreadable
from detector.extraction import Extraction
from detector.faces import FaceDetector, MediaPipeFaceDetector
from detector.hashing import VideoHashes
from detector.probe import Unreadable
from detector.routing import extract_clips, hash_media
from schemas.provenance import Provenance, ProvenanceReason
from schemas.verdict import Reason

# Runs in the worker: (path, clip_length, input_size, config, face detector) → Extraction.
ExtractFn = Callable[[Path, int, int, DetectorConfig, FaceDetector], Extraction]
_KILL_GRACE_S = 5.0
_START_TIMEOUT_S = 120.0
# `close()`: idle workers get this long to exit, then every worker left (busy ones too)
# is killed and waited for up to `_CLOSE_KILL_WAIT_S`; at most the sum in all.
_CLOSE_GRACE_S = 0.5
_CLOSE_KILL_WAIT_S = 0.5


def default_extract(
    path: Path, clip_length: int, input_size: int, config: DetectorConfig, faces: FaceDetector
) -> Extraction:
    return extract_clips(
        path, clip_length=clip_length, input_size=input_size, config=config, faces=faces
    )


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection


class IsolatedExtractor:
    """`Extractor` over a pool of worker processes, one video per worker at a time."""

    def __init__(
        self,
        config: DetectorConfig,
        workers: int = IsolationConfig.workers,
        memory_limit_mb: int = IsolationConfig.memory_limit_mb,
        extract: ExtractFn = default_extract,
        on_crash: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._memory_limit_mb = memory_limit_mb
        self._extract = extract
        self._on_crash = on_crash
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []  # every live worker, idle or busy (for `close`)
        starting = [self._spawn() for _ in range(workers)]  # start-up overlaps
        for worker in starting:
            self._idle.put(self._await_ready(worker))

    def extract(self, path: Path, *, clip_length: int, input_size: int) -> Extraction:
        extraction: Extraction = self._decode(("extract", str(path), clip_length, input_size))
        return extraction

    def hash_whole(self, path: Path, *, clip_length: int) -> VideoHashes:
        """`routing.hash_media` in a worker: a crash or an overrun is `Unreadable`, as a decode."""
        hashes: VideoHashes = self._decode(("hash", str(path), clip_length))
        return hashes

    def _decode(self, request: tuple[Any, ...]) -> Any:
        """The worker's answer to a decoding request; `Unreadable` for a refusal, a crash
        or an overrun."""
        limit_s = self.config.limits.decode_timeout_s
        try:
            # The worker enforces the decode limit itself; this is the backstop for a hang.
            kind, *payload = self._call(request, limit_s + _KILL_GRACE_S)
        except _Overran:
            raise Unreadable(
                Reason.DECODE_TIMEOUT,
                f"the decoder did not answer within {limit_s:.0f} s and was killed",
            ) from None
        except _Died as died:
            raise Unreadable(
                Reason.DECODER_CRASHED,
                f"the decoder process died (exit code {died.exit_code}) on this file",
            ) from None
        if kind == "ok":
            return payload[0]
        if kind == "unreadable":
            raise Unreadable(Reason(payload[0]), payload[1])
        raise Unreadable(Reason.DECODE_FAILED, f"{payload[0]}: {payload[1]}")

    def read_credentials(self, path: Path) -> Provenance:
        """The content credentials of `path`, read in a worker within `read_timeout_s`."""
        credentials = self.config.credentials
        trust = bool(credentials.trust_anchors_pem)
        try:
            kind, *payload = self._call(("credentials", str(path)), credentials.read_timeout_s)
        except _Overran:
            return unreadable(
                ProvenanceReason.READ_TIMEOUT,
                f"reading took longer than {credentials.read_timeout_s:g} s; the reader was killed",
                trust,
            )
        except _Died as died:
            return unreadable(
                ProvenanceReason.READER_CRASHED,
                f"the reader process died (exit code {died.exit_code}) on this file",
                trust,
            )
        if kind == "ok":
            provenance: Provenance = payload[0]
            return provenance
        return unreadable(ProvenanceReason.READER_ERROR, f"{payload[0]}: {payload[1]}", trust)

    def _call(self, request: tuple[Any, ...], timeout_s: float) -> tuple[Any, ...]:
        """`request` answered by an idle worker; `_Overran` / `_Died` when it did not answer."""
        if self._closed.is_set():
            raise RuntimeError("the extractor is closed")
        worker = self._idle.get()
        try:
            worker.connection.send(request)
            if not worker.connection.poll(timeout_s):
                worker = self._replace(worker)
                raise _Overran
            try:
                reply: tuple[Any, ...] = worker.connection.recv()
            except (EOFError, OSError):
                exit_code = self._exit_code(worker)
                worker = self._replace(worker)
                if self._on_crash:
                    self._on_crash()
                raise _Died(exit_code) from None
        except BrokenPipeError:
            worker = self._replace(worker)
            raise
        finally:
            if self._closed.is_set():
                self._stop(worker)
            else:
                self._idle.put(worker)
        return reply

    def close(self) -> None:
        """Stop every worker within about a second, in parallel; those that do not exit are killed.

        Idle workers are asked to exit; busy ones (a video still decoding when the
        service has stopped) are killed, and their callers get an error, not a
        verdict, and no replacement is started.
        """
        self._closed.set()
        idle: list[_Worker] = []
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in idle:
            with contextlib.suppress(OSError, ValueError):
                worker.connection.send(None)
        _join_all([w.process for w in idle], _CLOSE_GRACE_S)
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
        _join_all([w.process for w in workers], _CLOSE_KILL_WAIT_S)
        for worker in idle:
            self._stop(worker)  # already gone: only forgets it and closes its pipe

    def _start_worker(self) -> _Worker:
        return self._await_ready(self._spawn())

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child, self.config, self._memory_limit_mb, self._extract),
            name="deepscreen-decoder",
            daemon=True,
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        with self._lock:
            self._workers.append(worker)
        return worker

    def _await_ready(self, worker: _Worker) -> _Worker:
        process, parent = worker.process, worker.connection
        # A worker that cannot start (MediaPipe broken, no memory) is the service's
        # problem, not a video's: fail loudly here instead of blaming the next upload.
        ready = parent.poll(_START_TIMEOUT_S)
        try:
            message = parent.recv() if ready else None
        except (EOFError, OSError):
            message = None
        if message != "ready":
            process.kill()
            process.join(timeout=_KILL_GRACE_S)
            raise RuntimeError(f"a decoder worker failed to start (exit code {process.exitcode})")
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        self._stop(worker)
        if self._closed.is_set():  # `close()` killed it: no verdict for this video, no new worker
            raise RuntimeError("the extractor was closed while this video was being decoded")
        return self._start_worker()

    @staticmethod
    def _exit_code(worker: _Worker) -> int | None:
        worker.process.join(timeout=_KILL_GRACE_S)
        return worker.process.exitcode

    def _stop(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError, ValueError):
            worker.connection.send(None)
        worker.process.join(timeout=1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=_KILL_GRACE_S)
        worker.connection.close()
        with self._lock:
            self._workers = [w for w in self._workers if w is not worker]


class _Overran(Exception):
    """The worker did not answer in time and was replaced."""


class _Died(Exception):
    """The worker died on the request and was replaced."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def _join_all(processes: list[BaseProcess], timeout_s: float) -> None:
    """Wait for all of `processes` to end, `timeout_s` in all (not each)."""
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))


def _worker_main(
    connection: Connection, config: DetectorConfig, memory_limit_mb: int, extract: ExtractFn
) -> None:
    import av  # noqa: F401  (the decoder, loaded before the address-space cap like MediaPipe)
    import c2pa  # noqa: F401
    import cv2

    cv2.setLogLevel(2)  # errors only: a bad upload is a verdict, not log noise
    faces = MediaPipeFaceDetector(config.faces)
    _cap_address_space(memory_limit_mb)
    connection.send("ready")
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return  # the service went away
        if request is None:
            faces.close()
            return
        if request[0] == "credentials":
            connection.send(("ok", read_credentials(Path(request[1]), config.credentials,
                                                    config.limits.max_bytes)))  # fmt: skip
            continue
        reply: tuple[Any, ...]
        try:
            if request[0] == "hash":
                _, path, clip_length = request
                hashed = hash_media(Path(path), clip_length=clip_length, config=config, faces=faces)
                reply = ("ok", hashed)
            else:
                _, path, clip_length, input_size = request
                reply = ("ok", extract(Path(path), clip_length, input_size, config, faces))
        except Unreadable as refused:
            reply = ("unreadable", refused.reason.value, refused.detail)
        except MemoryError:
            reply = ("unreadable", Reason.DECODE_FAILED.value, "out of memory while decoding")
        except Exception as error:  # any decoder failure is this video's verdict
            reply = ("error", type(error).__name__, str(error)[:500])
        connection.send(reply)


def _cap_address_space(extra_mb: int) -> None:
    """Limit the address space to what the worker uses now plus `extra_mb`."""
    with Path("/proc/self/statm").open() as statm:
        used_bytes = int(statm.read().split()[0]) * resource.getpagesize()
    limit = used_bytes + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
