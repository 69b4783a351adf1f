"""`deepscreen serve` as a child process, configured for the tests' broker, topics and media."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from consumer.embedded import free_port
from tests.conftest import REPO


class ServeProcess:
    def __init__(self, bootstrap: str, topic_env: dict[str, str], media: Path, model: Path,
                 **env: str) -> None:  # fmt: skip
        self.port = free_port()
        self.env = {
            **os.environ,
            **topic_env,
            "DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DEEPSCREEN_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "DEEPSCREEN_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            "DEEPSCREEN_KAFKA__MAX_POLL_INTERVAL_MS": "30000",
            "DEEPSCREEN_KAFKA__COMMIT_INTERVAL_S": "0.2",
            "DEEPSCREEN_KAFKA__MAX_IN_FLIGHT": "2",
            "DEEPSCREEN_MEDIA__FILE_ROOTS": f'["{media}"]',
            "DEEPSCREEN_DETECTOR__MODEL_PATH": str(model),
            "DEEPSCREEN_DETECTOR__WINDOWS": "2",
            "DEEPSCREEN_DETECTOR__EXTRACTION_WORKERS": "1",
            "DEEPSCREEN_HTTP__HOST": "127.0.0.1",
            "DEEPSCREEN_HTTP__PORT": str(self.port),
            "DEEPSCREEN_DRAIN_SECONDS": "30",
            "DEEPSCREEN_REDIS__URL": "",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "serve"],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def ready(self) -> bool:
        result = subprocess.run(
            [sys.executable, "-m", "consumer.cli", "healthcheck", "--port", str(self.port)],
            cwd=REPO, env=self.env, capture_output=True, timeout=30,
        )  # fmt: skip
        return result.returncode == 0

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            assert self.process and self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.5)

    def output(self) -> str:
        if self.process and self.process.stdout and self.process.poll() is not None:
            return self.process.stdout.read().decode(errors="replace")[-4000:]
        return ""

    def kill(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def reap(self) -> None:
        """SIGKILL it if it still runs, and wait."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
