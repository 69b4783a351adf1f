"""Why an upload event went to the dead-letter topic, and how its dead letter is laid out.

The dead letter's Kafka value is the original bytes; this model is what
travels in its headers (`deepscreen-<field>`), so an operator can find the
source message and replay it once the cause is fixed.

Two rules keep every dead letter publishable and unambiguous:

- **Size.** A dead letter never exceeds `max_bytes` (the producer's request
  limit less room for our own headers). The original headers come first, as
  many as fit in a quarter of it (`headers_dropped` counts the rest); then the
  value, cut to a prefix when it does not fit (`value_truncated`). Its full
  size and sha256 are always in `value_bytes` and `value_sha256`, so a
  truncated original can still be matched to its source.
- **Names.** Headers in our namespace (`deepscreen-*`) are ours alone: an
  original header of that name is kept as `original-deepscreen-*`, so a
  producer cannot pass its own `deepscreen-reason` for ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

HEADER_PREFIX = "deepscreen-"
ORIGINAL_PREFIX = "original-"  # before an original header that used our namespace
HEADER_OVERHEAD_BYTES = 8  # a record header's varints, more than enough


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source_topic: str = Field(min_length=1, max_length=249)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    error_class: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=128, description="stable machine-readable code")
    detail: str = Field(default="", max_length=2048)
    attempts: int = Field(ge=1)
    failed_at: datetime
    value_bytes: int = Field(default=0, ge=0, description="size of the original value")
    value_sha256: str = Field(default="", max_length=64, description="sha256 of the original value")
    value_truncated: bool = Field(default=False, description="the value is a prefix of it")
    headers_dropped: int = Field(default=0, ge=0, description="original headers left out")

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers (`deepscreen-<field>`), values UTF-8 encoded."""
        return [
            (HEADER_PREFIX + name.replace("_", "-"), _header_text(value).encode())
            for name, value in self.model_dump(mode="json").items()
        ]

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> DeadLetter:
        fields = {
            key[len(HEADER_PREFIX) :].replace("-", "_"): value.decode()
            for key, value in headers
            if key.startswith(HEADER_PREFIX)
        }
        return cls.model_validate(fields)


@dataclass(frozen=True)
class BoundedRecord:
    """What a dead letter carries of the original: a value and headers within a size."""

    value: bytes
    headers: list[tuple[str, bytes]]
    value_bytes: int
    value_sha256: str
    value_truncated: bool
    headers_dropped: int


def bounded_original(
    value: bytes, headers: Sequence[tuple[str, bytes]], max_bytes: int
) -> BoundedRecord:
    """The original value and headers as a dead letter may carry them (see the module)."""
    header_budget = max_bytes // 4
    kept: list[tuple[str, bytes]] = []
    used = 0
    for name, header_value in headers:
        renamed = ORIGINAL_PREFIX + name if name.startswith(HEADER_PREFIX) else name
        size = len(renamed.encode()) + len(header_value) + HEADER_OVERHEAD_BYTES
        if used + size > header_budget:
            continue
        kept.append((renamed, header_value))
        used += size
    room = max(0, max_bytes - used)
    return BoundedRecord(
        value=value[:room],
        headers=kept,
        value_bytes=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
        value_truncated=len(value) > room,
        headers_dropped=len(headers) - len(kept),
    )


def _header_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)
