"""What every command shares: the root app, usage errors, a progress bar, quiet libraries."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator

import typer

# MediaPipe's C++ logs and TorchScript's deprecation notice are noise to a user.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)

USAGE_ERROR = 2

app = typer.Typer(
    name="deepscreen",
    help="Screen uploaded videos for deepfaked faces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; raise the result to exit with the usage-error code."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(USAGE_ERROR)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def progress(total: int, label: str = "screening") -> Iterator[Callable[[], None]]:
    """A progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
