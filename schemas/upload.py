"""The input contract: one uploaded video, as the platform's pipeline announces it.

Producers are other teams' services, so the model ignores fields it does not
know (they may add some) but bounds every field it reads.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

ALLOWED_URI_SCHEMES = ("file", "http", "https", "s3")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

VideoId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def known_uri_scheme(uri: str) -> str:
    """`uri` itself when its scheme is one deepscreen fetches from, else `ValueError`."""
    match = _SCHEME.match(uri)
    if match is None or match.group(1).lower() not in ALLOWED_URI_SCHEMES:
        raise ValueError(f"uri scheme must be one of {', '.join(ALLOWED_URI_SCHEMES)}")
    return uri


class VideoUploaded(BaseModel):
    """A video-upload event (`media.uploads`); the Kafka key is `video_id`."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    video_id: VideoId
    uri: str = Field(min_length=1, max_length=4096, description="file://, http(s):// or s3://")
    uploaded_at: datetime
    uploader_id: str | None = Field(default=None, max_length=256)
    content_type: str | None = Field(default=None, max_length=128)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: Sha256Hex | None = None
    metadata: dict[
        Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=1024)]
    ] = Field(default_factory=dict, max_length=64)

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        return known_uri_scheme(uri)

    @field_validator("sha256", mode="before")
    @classmethod
    def _lowercase_hex(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
