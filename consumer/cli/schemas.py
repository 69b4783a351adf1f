"""`deepscreen schemas ...`: the event contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The event contracts.", no_args_is_help=True)


@app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(file_okay=False)]) -> None:
    """Write the JSON Schema of every contract into DIRECTORY."""
    from schemas.export import json_schemas

    directory.mkdir(parents=True, exist_ok=True)
    for name, document in json_schemas().items():
        target = directory / f"{name}.schema.json"
        target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        typer.echo(str(target))
