"""`python -m consumer.cli`: the `deepscreen` command without the installed script."""

from consumer.cli import app

app()
