"""Read a `VideoUploaded` out of a Kafka message, however the producer wrapped it.

Producers differ: some send the event bare, some as a CloudEvent in structured
mode (the envelope JSON is the message value) and some in binary mode (the
attributes are `ce_*` headers and the value is the event itself). All three are
accepted. Anything else raises `InvalidUpload` with a stable reason code, which
the service turns into a dead letter at once: retrying cannot fix it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from schemas.upload import VideoUploaded

MAX_PAYLOAD_BYTES = 1024 * 1024
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


class InvalidUpload(Exception):
    """The message is not a usable upload event; `reason` is the dead letter's reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as lower-case name → text (last one wins; undecodable bytes replaced)."""
    return {
        name.lower(): (value or b"").decode("utf-8", "replace") for name, value in headers or ()
    }


def parse_upload(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None
) -> VideoUploaded:
    """The upload event in a message value and its headers, or `InvalidUpload`."""
    if not value:
        raise InvalidUpload("empty_payload", "the message has no value")
    if len(value) > MAX_PAYLOAD_BYTES:
        raise InvalidUpload("payload_too_large", f"{len(value)} bytes > {MAX_PAYLOAD_BYTES}")
    attributes = header_map(headers)
    document = _json_object(value)
    if "ce_specversion" in attributes:
        _check_specversion(attributes["ce_specversion"])
        return _validated(document)
    structured = attributes.get("content-type", "").startswith(STRUCTURED_CONTENT_TYPE)
    if structured or (
        "specversion" in document and ("data" in document or "data_base64" in document)
    ):
        return _validated(_structured_data(document))
    return _validated(document)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidUpload("not_json", f"the value is not JSON: {error}") from error
    except RecursionError as error:  # nesting deeper than the parser's stack
        raise InvalidUpload("not_json", "the value is not JSON we read: nested too deep") from error
    except ValueError as error:  # e.g. an integer past Python's 4,300-digit limit
        raise InvalidUpload("not_json", f"the value is not JSON we read: {error}") from error
    if not isinstance(document, dict):
        raise InvalidUpload(
            "not_an_object", f"expected a JSON object, got {type(document).__name__}"
        )
    return document


def _check_specversion(version: object) -> None:
    if version != "1.0":
        raise InvalidUpload("unsupported_cloudevent", f"specversion {version!r}; 1.0 is supported")


def _structured_data(envelope: dict[str, Any]) -> dict[str, Any]:
    _check_specversion(envelope.get("specversion"))
    if "data_base64" in envelope:
        try:
            return _json_object(base64.b64decode(envelope["data_base64"], validate=True))
        except (binascii.Error, TypeError, ValueError) as error:
            if isinstance(error, InvalidUpload):
                raise
            raise InvalidUpload("invalid_envelope", f"data_base64: {error}") from error
    data = envelope.get("data")
    if isinstance(data, str):  # data serialised as a JSON string by some SDKs
        return _json_object(data.encode())
    if not isinstance(data, dict):
        raise InvalidUpload("invalid_envelope", "the CloudEvent has no JSON object in `data`")
    return data


def _validated(document: dict[str, Any]) -> VideoUploaded:
    try:
        return VideoUploaded.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise InvalidUpload("invalid_event", problems) from error
