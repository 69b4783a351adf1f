"""A throwaway ``redis-server`` on a free loopback port, restartable on the same port.

Persistence is off (``--save "" --appendonly no``), so a stopped server forgets everything:
``stop()`` then ``start()`` simulates "Redis went away and came back empty" on the same URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from consumer.embedded import die_with_parent, free_port

REDIS_SERVER = "/usr/bin/redis-server"

_LOG_TAIL_LINES = 40


def _kill(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to ``proc`` (SIGKILL after 5 s if it is still alive) and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


class RedisServer:
    """``redis-server`` as a child process (``daemonize no``) on ``127.0.0.1``.

    The port is chosen on the first :meth:`start` and kept for later starts, so :attr:`url`
    stays valid across ``stop()``/``start()``. Logs go to :attr:`log_path` (kept after stop).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        startup_timeout_s: float = 10.0,
        log_dir: Path | None = None,
        binary: str = REDIS_SERVER,
    ) -> None:
        self._port = port
        self.startup_timeout_s = startup_timeout_s
        self.binary = binary
        self._log_dir = log_dir
        self._workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=log_dir))
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.log_path: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return self
        if self._port is None:
            self._port = free_port()
        self._spawn()
        try:
            self._wait_ready()
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(
                f"redis-server on port {self._port} did not start: {exc}; "
                f"log {self.log_path}:\n{tail}"
            ) from None
        return self

    def stop(self) -> None:
        """Shut the server down (SIGTERM; nothing is saved). Safe to call twice."""
        self._reap(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server, like a crash."""
        self._reap(signal.SIGKILL)

    def close(self) -> None:
        """Stop and delete the working directory (logs outside ``log_dir`` are kept)."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("redis-server not started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` for :attr:`url` (caller closes it)."""
        return redis.Redis.from_url(self.url, **kwargs)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "<no log>"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _spawn(self) -> None:
        port = self.port
        fd, log_name = tempfile.mkstemp(prefix=f"redis-{port}-", suffix=".log", dir=self._log_dir)
        self.log_path = Path(log_name)
        cmd = [
            self.binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self._workdir),
            "--logfile",
            "",
        ]
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._finalizer = weakref.finalize(self, _kill, self._proc, signal.SIGKILL)

    def _reap(self, sig: signal.Signals) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _kill(self._proc, sig)
            self._proc = None

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
            )
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            finally:
                client.close()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no PING reply within {self.startup_timeout_s} s")
            time.sleep(0.02)
