"""structlog set-up: one JSON object per line on stdout (or readable lines for a terminal)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(level: str = "info", fmt: str = "json", *, stderr: bool = False) -> None:
    """structlog to stdout (the service's logs are its output), or to stderr for the
    commands that print their results on stdout.

    The stream is looked up at each message, not bound now, so that a replaced
    `sys.stdout`/`sys.stderr` (a test runner's, since closed) is never written to.
    """
    name = "stderr" if stderr else "stdout"
    out: TextIO = getattr(sys, name)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_args: structlog.PrintLogger(getattr(sys, name)),
        cache_logger_on_first_use=False,
    )
    # kafka-python logs connection churn at INFO; keep its warnings and errors.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
