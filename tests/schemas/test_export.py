from __future__ import annotations

import json
from pathlib import Path

from schemas.export import CONTRACTS, json_schemas

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "jsonschema"


def test_every_contract_has_a_committed_schema_identical_to_the_models() -> None:
    """Fails when a model changes without `deepscreen schemas export schemas/jsonschema`."""
    generated = json_schemas()
    assert set(generated) == set(CONTRACTS)
    for name, document in generated.items():
        committed = json.loads((COMMITTED / f"{name}.schema.json").read_text())
        assert committed == document, f"{name}.schema.json drifted from its model"


def test_schemas_declare_draft_2020_12_and_forbid_unknown_fields_in_outputs() -> None:
    verdict = json_schemas()["screening-verdict"]
    assert verdict["$schema"].endswith("2020-12/schema")
    assert verdict["additionalProperties"] is False
    assert "suspected_deepfake" in json.dumps(verdict)
