"""The project's own metadata agrees with itself: one Python floor for pip, ruff and mypy."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO


def test_ruff_and_mypy_check_against_the_python_floor_pip_enforces() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    floor = re.fullmatch(r">=(\d+)\.(\d+),<\d+\.\d+", project["project"]["requires-python"])
    assert floor, "requires-python names a floor and a ceiling"
    major, minor = floor.groups()
    assert project["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert project["tool"]["mypy"]["python_version"] == f"{major}.{minor}"


def test_the_image_builds_on_the_python_floor() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    floor = project["project"]["requires-python"].split(",")[0].removeprefix(">=")
    assert f"ARG PYTHON_IMAGE=python:{floor}-" in (REPO / "Dockerfile").read_text()
