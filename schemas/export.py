"""JSON Schemas of every contract, for consumers written in other languages.

Pure: returns documents; the CLI writes them (`deepscreen schemas export DIR`),
and a test checks that the committed copies in `schemas/jsonschema/` match.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas.bank import BankEntryRecord, BankFile
from schemas.cloudevents import (
    FLAG_DATASCHEMA,
    SCHEMA_BASE,
    VERDICT_DATASCHEMA,
    DeepfakeFlag,
    VerdictEvent,
)
from schemas.dead_letter import DeadLetter
from schemas.decision import DECISION_DATASCHEMA, DecisionEvent, ModerationDecision
from schemas.model import ModelMetadata
from schemas.upload import VideoUploaded
from schemas.verdict import ScreeningVerdict

CONTRACTS: dict[str, type[BaseModel]] = {
    "video-uploaded": VideoUploaded,
    "screening-verdict": ScreeningVerdict,
    "deepfake-flag": DeepfakeFlag,
    "verdict-event": VerdictEvent,
    "dead-letter": DeadLetter,
    "model-metadata": ModelMetadata,
    "moderation-decision": ModerationDecision,
    "decision-event": DecisionEvent,
    "bank-entry": BankEntryRecord,
    "bank-file": BankFile,
}
# Events that name their schema (`dataschema`) are identified by that versioned URI.
_VERSIONED_IDS = {
    "deepfake-flag": FLAG_DATASCHEMA,
    "verdict-event": VERDICT_DATASCHEMA,
    "moderation-decision": DECISION_DATASCHEMA,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name (without `.schema.json`) → JSON Schema (draft 2020-12) document."""
    documents: dict[str, dict[str, Any]] = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="serialization")
        documents[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": _VERSIONED_IDS.get(name, f"{SCHEMA_BASE}/{name}.schema.json"),
            **schema,
        }
    return documents
