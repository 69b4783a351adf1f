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


def test_ci_runs_the_static_checks_then_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.DOTALL)
    test_command = next(c for c in commands if "pytest" in c)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, "the README's test command, verbatim"
    checks = [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy"]
    positions = [ci.index(check) for check in checks]
    assert positions == sorted(positions) and positions[-1] < ci.index(test_command)
