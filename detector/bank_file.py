"""A bank on disk, and vPDQ hash files in and out.

A bank file is JSON (`schemas.bank.BankFile`): entries with their ruling and
their frame and face hashes as vPDQ reference hash-file lines. It lets a bank
be used and tested without Kafka (`--bank FILE`) and exchanged whole.

For exchange with vPDQ users, one video's hash is also read and written as
vPDQ's own hash file (`vpdq_text` / `parse_vpdq`): one line a frame,
`frame_number,quality,pdq_hex,timestamp` as `vpdq-hash-video` writes it.
The reader also takes python-threatexchange's compact form
(`pdq_hex,quality,timestamp`, frame numbers then counted from 0), which its
VPDQ signal stores as a JSON list of such strings.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from detector.bank import BankEntry
from detector.hashing import PdqFeature, VideoHashes
from schemas.bank import BankEntryRecord, BankFile, VideoHashesRecord
from schemas.decision import Decision


class InvalidBankFile(Exception):
    """The file is not a bank file or a vPDQ hash this code reads."""


def feature_line(feature: PdqFeature) -> str:
    """A feature as a vPDQ reference hash-file line (timestamp to the millisecond)."""
    return f"{feature.frame_number},{feature.quality},{feature.pdq_hex},{feature.timestamp_s:.3f}"


def vpdq_text(features: Iterable[PdqFeature]) -> str:
    """A vPDQ hash file: one `frame_number,quality,pdq_hex,timestamp` line a feature."""
    return "".join(feature_line(feature) + "\n" for feature in features)


def parse_vpdq(text: str) -> tuple[PdqFeature, ...]:
    """Features of a vPDQ hash file, or of threatexchange's compact lines; `InvalidBankFile`."""
    features: list[PdqFeature] = []
    for number, raw in enumerate(line.strip() for line in text.splitlines() if line.strip()):
        parts = raw.split(",")
        try:
            if len(parts) == 4:  # the reference implementation's hash file
                frame, quality, digest, timestamp = parts
                features.append(
                    PdqFeature(int(frame), float(timestamp), int(quality), digest.lower())
                )
            elif len(parts) == 3:  # threatexchange's VpdqCompactFeature
                digest, quality, timestamp = parts
                features.append(PdqFeature(number, float(timestamp), int(quality), digest.lower()))
            else:
                raise ValueError(f"{len(parts)} fields")
        except ValueError as error:
            raise InvalidBankFile(f"line {number + 1} is not a vPDQ feature: {error}") from error
    return tuple(features)


def entry_to_record(entry: BankEntry) -> BankEntryRecord:
    """The entry as the bank topic and bank files carry it."""
    return BankEntryRecord(
        id=entry.entry_id,
        decision=entry.decision.value,  # never `retracted`: a BankEntry refuses it
        moderator=entry.moderator,
        decided_at=entry.decided_at,
        reason=entry.reason,
        content_sha256=entry.content_sha256,
        video_id=entry.video_id,
        uri=entry.uri,
        answers_event_id=entry.answers_event_id,
        decision_event_id=entry.decision_event_id,
        frames=[feature_line(f) for f in entry.frames],
        faces=[feature_line(f) for f in entry.faces],
    )


def record_to_entry(record: BankEntryRecord) -> BankEntry:
    """The inverse of `entry_to_record`."""
    return BankEntry(
        entry_id=record.id,
        decision=Decision(record.decision),
        moderator=record.moderator,
        decided_at=record.decided_at,
        frames=parse_vpdq("\n".join(record.frames)),
        faces=parse_vpdq("\n".join(record.faces)),
        content_sha256=record.content_sha256,
        video_id=record.video_id,
        uri=record.uri,
        reason=record.reason,
        answers_event_id=record.answers_event_id,
        decision_event_id=record.decision_event_id,
    )


def hashes_to_record(hashes: VideoHashes, hashing: str) -> VideoHashesRecord:
    """A video's hashes as vPDQ lines (the verdict cache keeps them so)."""

    def lines(features: Iterable[PdqFeature]) -> list[str]:
        return [feature_line(f) for f in features]

    return VideoHashesRecord(
        hashing=hashing,
        frames=lines(hashes.frames),
        faces=lines(hashes.faces),
        face_probes=[lines(probes) for probes in hashes.face_probes],
        mirrored_frames=lines(hashes.mirrored_frames),
        mirrored_faces=lines(hashes.mirrored_faces),
        mirrored_face_probes=[lines(probes) for probes in hashes.mirrored_face_probes],
        whole=hashes.whole,
    )


def record_to_hashes(record: VideoHashesRecord) -> VideoHashes:
    """The inverse of `hashes_to_record`; `InvalidBankFile` when a line is not a feature."""

    def features(lines: Sequence[str]) -> tuple[PdqFeature, ...]:
        return parse_vpdq("\n".join(lines))

    return VideoHashes(
        frames=features(record.frames),
        faces=features(record.faces),
        face_probes=tuple(features(probes) for probes in record.face_probes),
        mirrored_frames=features(record.mirrored_frames),
        mirrored_faces=features(record.mirrored_faces),
        mirrored_face_probes=tuple(features(p) for p in record.mirrored_face_probes),
        whole=record.whole,
    )


def save_bank(path: Path, entries: Sequence[BankEntry]) -> None:
    """Write the entries as a bank file, atomically (a reader never sees half a file)."""
    document = BankFile(entries=[entry_to_record(entry) for entry in entries])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(document.model_dump_json(indent=1, exclude_none=True))
            out.write("\n")
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_bank(path: Path) -> list[BankEntry]:
    """The entries of a bank file; `InvalidBankFile` when it is not one."""
    try:
        document = BankFile.model_validate_json(path.read_bytes())
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise InvalidBankFile(f"{path} is not a bank file: {problems}") from error
    return [record_to_entry(record) for record in document.entries]
