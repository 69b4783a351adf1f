"""`deepscreen hash FILE` and `deepscreen bank ...`: a video's hashes, and the bank of known fakes.

The bank commands work on a local bank file (`--bank FILE`, the export format
of `detector.bank_file`: entries with vPDQ hash lines), so a bank can be
seeded, inspected and tested without Kafka, or on the service's bank topic
(`--bootstrap-servers`, else `DEEPSCREEN_KAFKA__*` settings): entries are
published keyed by id, removals are tombstones, and listing reads the topic
from the beginning as a replica does. A file is hashed whole (every frame
of the video, every k-th beyond `entry_max_frames`, its faces tracked as
screening tracks them), as a bank entry should be; its entry id is the
file's sha256, so an upload of the very same bytes meets the ruling even
where no face can be matched.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from consumer.cli.common import app as root
from consumer.cli.common import fail

if TYPE_CHECKING:
    from consumer.settings import Settings
    from detector.bank import BankEntry
    from detector.hashing import VideoHashes

app = typer.Typer(help="The bank of known fakes: moderators' rulings with hashes.")

_CLIP_LENGTH = 20  # hashing walks the video in windows of the model's clip length
_CATCH_UP_S = 30.0

BankOption = Annotated[
    Path | None,
    typer.Option(
        "--bank",
        dir_okay=False,
        help="A local bank file (created by `bank add`/`bank import` when missing). "
        "Without it: the service's bank topic.",
    ),
]
ServersOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        help="Kafka brokers of the bank topic (default: DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS).",
    ),
]


def hash_file(path: Path) -> VideoHashes:
    """The hashes a bank entry holds for a video or still; a usage error when unreadable."""
    from detector.config import DetectorConfig
    from detector.probe import Unreadable
    from detector.routing import InProcessExtractor

    extractor = InProcessExtractor(DetectorConfig())
    try:
        return extractor.hash_whole(path, clip_length=_CLIP_LENGTH)
    except Unreadable as refused:
        raise fail(f"{path}: cannot be hashed ({refused.reason.value}: {refused.detail})") from None
    finally:
        extractor.close()


@root.command("hash")
def hash_command(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A video or image.")],
    faces: Annotated[
        bool, typer.Option("--faces", help="Print the face tiles' hashes instead of the frames'.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Frames and faces as one bank-entry-like JSON.")
    ] = False,
) -> None:
    """Print a video's perceptual hashes as a vPDQ hash file (frame,quality,pdq,timestamp)."""
    import json

    from detector.bank_file import feature_line, vpdq_text

    hashes = hash_file(path)
    if as_json:
        document = {
            "frames": [feature_line(f) for f in hashes.frames],
            "faces": [feature_line(f) for f in hashes.faces],
        }
        typer.echo(json.dumps(document, indent=1))
        return
    typer.echo(vpdq_text(hashes.faces if faces else hashes.frames), nl=False)


# -- where the bank is -----------------------------------------------------------------


@contextlib.contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    """The Kafka adapters' log lines: warnings and errors only, on stderr (stdout is output)."""
    import structlog

    before = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        yield
    finally:
        structlog.configure(**before)


def _settings(servers: str | None) -> Settings:
    from pydantic import ValidationError

    from consumer.settings import load_settings

    try:
        settings = load_settings()
    except ValidationError as error:
        raise fail(f"invalid settings:\n{error}") from error
    if servers:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": servers})
        settings = settings.model_copy(update={"kafka": kafka})
    return settings


def _local_entries(path: Path) -> list[BankEntry]:
    from detector.bank_file import InvalidBankFile, load_bank

    if not path.exists():
        return []
    try:
        return load_bank(path)
    except (InvalidBankFile, OSError) as error:
        raise fail(str(error)) from error


def _topic_entries(servers: str | None) -> list[BankEntry]:
    """The bank as a replica holds it: the topic read from the beginning."""
    from consumer.bank_topic import BankReader, KafkaBankLog
    from detector.bank import Bank

    settings = _settings(servers)
    bank = Bank()
    reader = BankReader(KafkaBankLog(settings.kafka, wait_for_topic_s=_CATCH_UP_S), bank)
    try:
        with _warnings_on_stderr():
            caught_up = reader.run_until_caught_up(_CATCH_UP_S)
    except Exception as error:
        raise fail(f"cannot read the bank topic {settings.kafka.bank_topic}: {error}") from error
    finally:
        reader.close()
    if not caught_up:
        raise fail(
            f"the bank topic {settings.kafka.bank_topic} was not read within {_CATCH_UP_S} s"
        )
    return bank.entries()


def _entries(bank_file: Path | None, servers: str | None) -> list[BankEntry]:
    return _local_entries(bank_file) if bank_file else _topic_entries(servers)


def _store(bank_file: Path | None, servers: str | None, added: list[BankEntry]) -> None:
    """Add (or replace, by id) entries in the bank file, or publish them on the topic."""
    if bank_file is not None:
        from detector.bank_file import save_bank

        kept = {entry.entry_id: entry for entry in _local_entries(bank_file)}
        kept.update({entry.entry_id: entry for entry in added})
        save_bank(bank_file, list(kept.values()))
        return
    from consumer.bank_topic import BankPublishError, KafkaBankWriter

    writer = KafkaBankWriter(_settings(servers).kafka)
    try:
        for entry in added:
            writer.publish(entry)
    except BankPublishError as error:
        raise fail(f"the bank topic did not take the entry: {error}") from error
    finally:
        writer.close()


# -- commands ----------------------------------------------------------------------------


@app.command("add")
def bank_add(
    paths: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
    decision: Annotated[
        str, typer.Option(help="confirmed_fake, false_positive or confirmed_real.")
    ] = "confirmed_fake",
    moderator: Annotated[str, typer.Option(help="Who ruled.")] = "deepscreen-cli",
    reason: Annotated[str, typer.Option(help="Why, in the moderator's words.")] = "",
    bank_file: BankOption = None,
    servers: ServersOption = None,
) -> None:
    """Hash each file whole and bank it under its sha256 with the ruling given."""
    from detector.artifact import sha256_file
    from detector.bank import BankEntry
    from schemas.decision import ALLOW_LISTING, Decision

    ruled = next((d for d in Decision if d.value == decision), None)
    if ruled is None or (ruled is not Decision.CONFIRMED_FAKE and ruled not in ALLOW_LISTING):
        raise fail("--decision must be confirmed_fake, false_positive or confirmed_real")
    now = datetime.now(UTC)
    added = []
    for path in paths:
        sha = sha256_file(path)
        entry = BankEntry.from_hashes(
            sha, ruled, moderator, hash_file(path), decided_at=now, content_sha256=sha,
            video_id=path.name[:256], reason=reason,
        )  # fmt: skip
        added.append(entry)
        typer.echo(f"{sha} {ruled.value} {path} ({len(entry.frames)} frames, "
                   f"{len(entry.faces)} faces)")  # fmt: skip
    _store(bank_file, servers, added)


@app.command("list")
def bank_list(bank_file: BankOption = None, servers: ServersOption = None) -> None:
    """One line an entry: id, ruling, moderator, time, hashes, video."""
    for entry in _entries(bank_file, servers):
        typer.echo(
            f"{entry.entry_id} {entry.decision.value} {entry.moderator} "
            f"{entry.decided_at.isoformat()} frames={len(entry.frames)} "
            f"faces={len(entry.faces)} {entry.video_id or '-'}"
        )


@app.command("remove")
def bank_remove(
    entry_id: Annotated[str, typer.Argument(help="The entry's id (`bank list`).")],
    bank_file: BankOption = None,
    servers: ServersOption = None,
) -> None:
    """Take an entry out of the bank (on the topic: a tombstone every replica applies)."""
    if bank_file is not None:
        from detector.bank_file import save_bank

        entries = _local_entries(bank_file)
        kept = [entry for entry in entries if entry.entry_id != entry_id]
        if len(kept) == len(entries):
            raise fail(f"no entry {entry_id} in {bank_file}")
        save_bank(bank_file, kept)
        return
    from consumer.bank_topic import BankPublishError, KafkaBankWriter

    writer = KafkaBankWriter(_settings(servers).kafka)
    try:
        writer.retract(entry_id)
    except BankPublishError as error:
        raise fail(f"the bank topic did not take the removal: {error}") from error
    finally:
        writer.close()


@app.command("export")
def bank_export(
    target: Annotated[Path, typer.Argument(dir_okay=False, help="The bank file to write.")],
    bank_file: BankOption = None,
    servers: ServersOption = None,
) -> None:
    """Write the whole bank as a bank file (vPDQ hash lines per entry)."""
    from detector.bank_file import save_bank

    entries = _entries(bank_file, servers)
    save_bank(target, entries)
    typer.echo(f"{len(entries)} entries → {target}")


@app.command("import")
def bank_import(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A bank file.")],
    bank_file: BankOption = None,
    servers: ServersOption = None,
) -> None:
    """Add every entry of a bank file (replacing entries of the same id)."""
    entries = _local_entries(source)
    _store(bank_file, servers, entries)
    typer.echo(f"{len(entries)} entries ← {source}")
