"""Read an event out of a Kafka message, however the producer wrapped it.

Producers differ: some send the event bare, some as a CloudEvent in structured
mode (the envelope JSON is the message value) and some in binary mode (the
attributes are `ce_*` headers and the value is the event itself). All three are
accepted, for uploads (`parse_upload`) and moderators' rulings
(`parse_decision`) alike. Anything else raises `InvalidUpload` or
`InvalidDecision` with a stable reason code, which the service turns into a
dead letter at once: retrying cannot fix it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.decision import DECISION_TYPE, ModerationDecision
from schemas.upload import VideoUploaded

MAX_PAYLOAD_BYTES = 1024 * 1024
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

EventT = TypeVar("EventT", bound=BaseModel)


class InvalidEvent(Exception):
    """The message is not a usable event; `reason` is the dead letter's reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidUpload(InvalidEvent):
    """The message is not a usable upload event."""


class InvalidDecision(InvalidEvent):
    """The message is not a usable moderation decision."""


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as lower-case name → text (last one wins; undecodable bytes replaced)."""
    return {
        name.lower(): (value or b"").decode("utf-8", "replace") for name, value in headers or ()
    }


def parse_upload(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None
) -> VideoUploaded:
    """The upload event in a message value and its headers, or `InvalidUpload`.

    Any CloudEvents `type` is accepted: upload producers name their own.
    """
    return parse_event(value, headers, VideoUploaded, invalid=InvalidUpload)


def parse_decision(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None
) -> ModerationDecision:
    """The ruling in a message value and its headers, or `InvalidDecision`.

    In an envelope, the CloudEvents `type` must be `deepscreen.decision.v1`: a
    ruling changes what is blocked, so an event of another kind on the topic
    is refused rather than read as one.
    """
    return parse_event(
        value, headers, ModerationDecision, invalid=InvalidDecision, event_type=DECISION_TYPE
    )


def parse_event(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    model: type[EventT],
    *,
    invalid: type[InvalidEvent],
    event_type: str | None = None,
) -> EventT:
    """The `model` event in a message, bare or in a CloudEvent, or `invalid`.

    `event_type`, when given, is the only CloudEvents `type` accepted.
    """
    if not value:
        raise invalid("empty_payload", "the message has no value")
    if len(value) > MAX_PAYLOAD_BYTES:
        raise invalid("payload_too_large", f"{len(value)} bytes > {MAX_PAYLOAD_BYTES}")
    attributes = header_map(headers)
    document = _json_object(value, invalid)
    if "ce_specversion" in attributes:
        _check_specversion(attributes["ce_specversion"], invalid)
        _check_type(attributes.get("ce_type"), event_type, invalid)
        return _validated(document, model, invalid)
    structured = attributes.get("content-type", "").startswith(STRUCTURED_CONTENT_TYPE)
    if structured or (
        "specversion" in document and ("data" in document or "data_base64" in document)
    ):
        return _validated(_structured_data(document, event_type, invalid), model, invalid)
    return _validated(document, model, invalid)


def _json_object(raw: bytes, invalid: type[InvalidEvent]) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid("not_json", f"the value is not JSON: {error}") from error
    except RecursionError as error:  # nesting deeper than the parser's stack
        raise invalid("not_json", "the value is not JSON we read: nested too deep") from error
    except ValueError as error:  # e.g. an integer past Python's 4,300-digit limit
        raise invalid("not_json", f"the value is not JSON we read: {error}") from error
    if not isinstance(document, dict):
        raise invalid("not_an_object", f"expected a JSON object, got {type(document).__name__}")
    return document


def _check_specversion(version: object, invalid: type[InvalidEvent]) -> None:
    if version != "1.0":
        raise invalid("unsupported_cloudevent", f"specversion {version!r}; 1.0 is supported")


def _check_type(declared: object, expected: str | None, invalid: type[InvalidEvent]) -> None:
    if expected is not None and declared != expected:
        raise invalid(
            "unexpected_event_type", f"CloudEvents type {declared!r}; {expected} expected"
        )


def _structured_data(
    envelope: dict[str, Any], event_type: str | None, invalid: type[InvalidEvent]
) -> dict[str, Any]:
    _check_specversion(envelope.get("specversion"), invalid)
    _check_type(envelope.get("type"), event_type, invalid)
    if "data_base64" in envelope:
        try:
            return _json_object(base64.b64decode(envelope["data_base64"], validate=True), invalid)
        except (binascii.Error, TypeError, ValueError) as error:
            if isinstance(error, InvalidEvent):
                raise
            raise invalid("invalid_envelope", f"data_base64: {error}") from error
    data = envelope.get("data")
    if isinstance(data, str):  # data serialised as a JSON string by some SDKs
        return _json_object(data.encode(), invalid)
    if not isinstance(data, dict):
        raise invalid("invalid_envelope", "the CloudEvent has no JSON object in `data`")
    return data


def _validated(
    document: dict[str, Any], model: type[EventT], invalid: type[InvalidEvent]
) -> EventT:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in error.errors()[:5]
        )
        raise invalid("invalid_event", problems) from error
