"""The `deepscreen` command line.

`scan`, `serve`, `healthcheck` and `demo` (`service`) screen and run the
service; `model ...` (`model`) makes, trains, evaluates and calibrates
artifacts; `hash` and `bank ...` (`bank`) hash videos and keep the bank of
known fakes, in a file or on the bank topic; `schemas export` (`schemas`)
writes the JSON Schemas of the contracts. Commands only parse options, call
plain functions of `consumer`, `detector` or `detector.training`, and print.
Exit code 2 means the command was used wrongly (a missing path, an unusable
model), with a message; a video that cannot be read is a verdict, printed like
any other, and exits 0.
"""

from __future__ import annotations

# `service` puts its commands on the root app as it is imported.
from consumer.cli import bank, model, schemas, service
from consumer.cli.common import app

app.add_typer(bank.app, name="bank")
app.add_typer(model.app, name="model")
app.add_typer(schemas.app, name="schemas")

__all__ = ["app", "bank", "model", "schemas", "service"]
