from __future__ import annotations

import pytest

from schemas import FLAG_TYPE, DeepfakeFlag, flag_event, verdict_event
from schemas.model import ModelInfo
from schemas.verdict import VERDICT_SCHEMA_VERSION
from tests.schemas.factories import MODEL, unreadable, verdict


def test_a_flag_is_a_cloudevent_around_the_verdict() -> None:
    flag = flag_event(verdict(), source="urn:deepscreen:test")
    document = flag.model_dump(mode="json")
    assert document["specversion"] == "1.0"
    assert document["type"] == FLAG_TYPE == "deepscreen.flag.v1"
    assert document["subject"] == "v-1"
    assert document["datacontenttype"] == "application/json"
    assert document["data"]["score"] == 0.97
    assert DeepfakeFlag.model_validate_json(flag.model_dump_json()) == flag


def test_the_same_video_content_and_model_give_the_same_event_id() -> None:
    first = flag_event(verdict(processing_ms=1))
    again = flag_event(verdict(processing_ms=999))
    assert first.id == again.id


@pytest.mark.parametrize(
    "change",
    [
        {"video_id": "v-2"},
        {"content_sha256": "c" * 64},
        {"model": ModelInfo(**{**MODEL.model_dump(), "sha256": "d" * 64})},
    ],
)
def test_another_video_content_or_model_gives_another_event_id(change: dict[str, object]) -> None:
    assert flag_event(verdict()).id != flag_event(verdict(**change)).id


def test_flag_and_verdict_events_of_one_video_have_different_ids() -> None:
    assert flag_event(verdict()).id != verdict_event(verdict()).id


def test_only_a_verdict_with_an_action_is_flagged() -> None:
    with pytest.raises(ValueError, match="only a verdict with an action"):
        flag_event(unreadable())
    assert verdict_event(unreadable()).type == "deepscreen.verdict.v1"


def test_events_name_the_versioned_schema_of_their_data() -> None:
    assert flag_event(verdict()).dataschema == (
        f"https://deepscreen.dev/schemas/v{VERDICT_SCHEMA_VERSION}/deepfake-flag.schema.json"
    )
    assert verdict_event(verdict()).dataschema.endswith(  # type: ignore[union-attr]
        f"/v{VERDICT_SCHEMA_VERSION}/verdict-event.schema.json"
    )
