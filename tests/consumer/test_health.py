from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from consumer.cli import app
from consumer.health import HealthServer
from consumer.metrics import Metrics


class Flags:
    ready = True


@pytest.fixture
def server() -> Iterator[HealthServer]:
    metrics = Metrics()
    metrics.flags.labels("model").inc()
    running = HealthServer(
        "127.0.0.1", 0, metrics,
        live=lambda: {"process": True},
        ready=lambda: {"model_loaded": True, "broker_reachable": Flags.ready},
    ).start()  # fmt: skip
    yield running
    running.close()
    Flags.ready = True


def get(server: HealthServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}") as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_readiness_reports_each_check(server: HealthServer) -> None:
    status, body = get(server, "/readyz")
    assert status == 200
    assert json.loads(body) == {
        "ok": True,
        "checks": {"model_loaded": True, "broker_reachable": True},
    }
    Flags.ready = False
    status, body = get(server, "/readyz")
    assert status == 503 and json.loads(body)["checks"]["broker_reachable"] is False


def test_liveness_and_metrics_are_served(server: HealthServer) -> None:
    assert get(server, "/healthz")[0] == 200
    status, body = get(server, "/metrics")
    assert status == 200
    assert b'deepscreen_flags_total{signal="model"} 1.0' in body
    assert b"deepscreen_processing_seconds_bucket" in body
    assert get(server, "/nope")[0] == 404


def test_the_healthcheck_command_exits_0_when_ready_and_1_when_not(server: HealthServer) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["healthcheck", "--port", str(server.port)]).exit_code == 0
    Flags.ready = False
    assert runner.invoke(app, ["healthcheck", "--port", str(server.port)]).exit_code == 1
    assert runner.invoke(app, ["healthcheck", "--live", "--port", str(server.port)]).exit_code == 0
    server.close()
    assert runner.invoke(app, ["healthcheck", "--port", str(server.port)]).exit_code == 1
