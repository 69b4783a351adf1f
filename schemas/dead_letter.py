"""Why an upload event went to the dead-letter topic.

The dead letter's Kafka value is the original bytes, untouched; this model is
what travels in its headers, so an operator can find the source message and
replay it once the cause is fixed.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

HEADER_PREFIX = "deepscreen-"


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

    def to_headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers (`deepscreen-<field>`), values UTF-8 encoded."""
        return [
            (HEADER_PREFIX + name.replace("_", "-"), _header_text(value).encode())
            for name, value in self.model_dump(mode="json").items()
        ]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]]) -> DeadLetter:
        fields = {
            key[len(HEADER_PREFIX) :].replace("-", "_"): value.decode()
            for key, value in headers
            if key.startswith(HEADER_PREFIX)
        }
        return cls.model_validate(fields)


def _header_text(value: object) -> str:
    return value if isinstance(value, str) else str(value)
