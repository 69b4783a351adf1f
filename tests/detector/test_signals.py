"""Each signal's finding and the action the operator's policy gives it (no media, no model)."""

from __future__ import annotations

import pytest

from detector.config import ActionPolicy
from detector.signals import credentials_result, model_result
from schemas import Action, Outcome, Reason, Thresholds
from schemas.provenance import (
    Declaration,
    DeclaredSourceType,
    Provenance,
    ProvenanceReason,
    ProvenanceState,
    SourceTypeOrigin,
)
from schemas.verdict import Signal, SignalResult, deciding_signal

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
DEFAULT = ActionPolicy()
THRESHOLDS = Thresholds(review=0.6, block=0.9)

_TERMS = {
    Declaration.AI_GENERATED: "trainedAlgorithmicMedia",
    Declaration.AI_COMPOSITE: "compositeWithTrainedAlgorithmicMedia",
    Declaration.AI_EDITED: "algorithmicallyEnhanced",
    Declaration.NOT_AI: "digitalCapture",
}


def credentials(
    state: ProvenanceState,
    declaration: Declaration = Declaration.NONE,
    *,
    trusted: bool = False,
    failure_codes: tuple[str, ...] = (),
) -> Provenance:
    """Provenance as the reader would report it: `declaration` from one declared type."""
    declared: list[DeclaredSourceType] = []
    if declaration in _TERMS:
        declared.append(
            DeclaredSourceType(
                source_type=IPTC + _TERMS[declaration],
                origin=SourceTypeOrigin.ACTION,
                action="c2pa.created",
                manifest="urn:c2pa:test",
            )
        )
    present = state is not ProvenanceState.ABSENT
    return Provenance(
        present=present,
        state=state,
        reason=ProvenanceReason.MALFORMED if state is ProvenanceState.UNREADABLE else None,
        failure_codes=list(failure_codes),
        trusted=trusted,
        manifests=1 if present else 0,
        source_types=declared,
        declaration=declaration,
        summary=f"{state.value} credentials declaring {declaration.value}",
    )


VALID, INVALID = ProvenanceState.VALID, ProvenanceState.INVALID
ABSENT, UNREADABLE = ProvenanceState.ABSENT, ProvenanceState.UNREADABLE


# --------------------------------------------------------------------------- content credentials


@pytest.mark.parametrize("trusted", [False, True])
def test_a_valid_manifest_declaring_ai_generation_is_declared_synthetic_and_labelled(
    trusted: bool,
) -> None:
    provenance = credentials(VALID, Declaration.AI_GENERATED, trusted=trusted)
    result = credentials_result(provenance, DEFAULT)
    assert result.signal is Signal.CONTENT_CREDENTIALS
    assert (result.outcome, result.reason, result.action) == (
        Outcome.DECLARED_SYNTHETIC,
        Reason.DECLARED_AI_GENERATED,
        Action.LABEL,
    )  # trust is recorded in the provenance; the label does not depend on it
    assert result.summary == provenance.summary


def test_a_valid_manifest_declaring_an_ai_composite_is_declared_ai_composite() -> None:
    result = credentials_result(credentials(VALID, Declaration.AI_COMPOSITE), DEFAULT)
    assert (result.outcome, result.reason, result.action) == (
        Outcome.DECLARED_SYNTHETIC,
        Reason.DECLARED_AI_COMPOSITE,
        Action.LABEL,
    )


@pytest.mark.parametrize(
    "declaration", [Declaration.AI_EDITED, Declaration.NOT_AI, Declaration.NONE]
)
def test_a_valid_manifest_declaring_no_generation_is_recorded_only(
    declaration: Declaration,
) -> None:
    result = credentials_result(credentials(VALID, declaration), DEFAULT)
    assert (result.outcome, result.reason, result.action) == (None, None, Action.NONE)
    assert result.summary  # the moderator still reads what the credentials say


@pytest.mark.parametrize("declaration", [Declaration.AI_GENERATED, Declaration.AI_COMPOSITE])
@pytest.mark.parametrize("state", [INVALID, UNREADABLE])
def test_only_a_valid_manifest_s_declaration_counts(
    state: ProvenanceState, declaration: Declaration
) -> None:
    provenance = credentials(state, declaration, failure_codes=("assertion.dataHash.mismatch",))
    result = credentials_result(provenance, DEFAULT)
    assert (result.outcome, result.action) == (None, Action.NONE)


def test_absent_credentials_report_nothing() -> None:
    result = credentials_result(credentials(ABSENT), DEFAULT)
    assert (result.outcome, result.reason, result.action) == (None, None, Action.NONE)


@pytest.mark.parametrize("action", [Action.LABEL, Action.REVIEW, Action.BLOCK])
def test_invalid_credentials_ask_for_an_action_only_when_the_operator_says_so(
    action: Action,
) -> None:
    provenance = credentials(
        INVALID, Declaration.AI_GENERATED, failure_codes=("assertion.dataHash.mismatch",)
    )
    assert credentials_result(provenance, DEFAULT).outcome is None  # default: recorded only

    strict = ActionPolicy(invalid_credentials=action)
    result = credentials_result(provenance, strict)
    assert (result.outcome, result.reason, result.action) == (
        Outcome.CREDENTIALS_INVALID,
        Reason.INVALID_CONTENT_CREDENTIALS,
        action,
    )
    # unreadable or absent credentials are not invalid ones
    for other in (credentials(UNREADABLE), credentials(ABSENT), credentials(VALID)):
        assert credentials_result(other, strict).outcome is None


def test_the_policy_sets_the_action_of_each_declaration() -> None:
    policy = ActionPolicy(declared_ai=Action.BLOCK, declared_composite=Action.REVIEW)
    generated = credentials_result(credentials(VALID, Declaration.AI_GENERATED), policy)
    composite = credentials_result(credentials(VALID, Declaration.AI_COMPOSITE), policy)
    assert (generated.outcome, generated.action) == (Outcome.DECLARED_SYNTHETIC, Action.BLOCK)
    assert (composite.outcome, composite.action) == (Outcome.DECLARED_SYNTHETIC, Action.REVIEW)

    # an operator may record declarations without acting on them
    silent = ActionPolicy(declared_ai=Action.NONE)
    recorded = credentials_result(credentials(VALID, Declaration.AI_GENERATED), silent)
    assert (recorded.outcome, recorded.reason, recorded.action) == (
        Outcome.DECLARED_SYNTHETIC,
        Reason.DECLARED_AI_GENERATED,
        Action.NONE,
    )
    assert deciding_signal([recorded]) is None


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    ("score", "outcome", "action"),
    [
        (0.0, Outcome.LIKELY_REAL, Action.NONE),
        (0.5999, Outcome.LIKELY_REAL, Action.NONE),
        (0.6, Outcome.SUSPECTED_DEEPFAKE, Action.REVIEW),
        (0.8999, Outcome.SUSPECTED_DEEPFAKE, Action.REVIEW),
        (0.9, Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK),
        (1.0, Outcome.SUSPECTED_DEEPFAKE, Action.BLOCK),
    ],
)
def test_the_model_s_score_against_its_thresholds_decides_its_outcome_and_action(
    score: float, outcome: Outcome, action: Action
) -> None:
    result = model_result(score, THRESHOLDS, DEFAULT)
    assert result.signal is Signal.MODEL
    assert (result.outcome, result.reason, result.action) == (outcome, None, action)
    assert f"{score:.4f}" in result.summary


def test_the_policy_sets_the_action_of_each_model_threshold() -> None:
    policy = ActionPolicy(model_review=Action.LABEL, model_block=Action.REVIEW)
    assert model_result(0.7, THRESHOLDS, policy).action is Action.LABEL
    assert model_result(0.95, THRESHOLDS, policy).action is Action.REVIEW
    assert model_result(0.1, THRESHOLDS, policy).action is Action.NONE


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.NO_FACE, Reason.NO_FACE_DETECTED),
        (Outcome.NO_FACE, Reason.NO_STABLE_FACE_TRACK),
        (Outcome.UNREADABLE, Reason.RESOLUTION_TOO_LARGE),
        (Outcome.UNREADABLE, Reason.DECODER_CRASHED),
    ],
)
def test_a_model_that_could_not_score_says_why_and_asks_for_nothing(
    outcome: Outcome, reason: Reason
) -> None:
    strict = ActionPolicy(model_review=Action.BLOCK, model_block=Action.BLOCK)
    result = model_result(None, THRESHOLDS, strict, refused=(outcome, reason))
    assert (result.outcome, result.reason, result.action) == (outcome, reason, Action.NONE)
    assert reason.value in result.summary


def test_a_scored_model_result_needs_a_score() -> None:
    with pytest.raises(ValueError, match="needs a score"):
        model_result(None, THRESHOLDS, DEFAULT)


# --------------------------------------------------------------------------- combined


def _results(provenance: Provenance, score: float) -> list[SignalResult]:
    return [credentials_result(provenance, DEFAULT), model_result(score, THRESHOLDS, DEFAULT)]


def test_the_strictest_signal_decides_and_a_tie_goes_to_the_credentials() -> None:
    declared = credentials(VALID, Declaration.AI_GENERATED)
    deciding = deciding_signal(_results(declared, 0.1))
    assert deciding is not None and deciding.signal is Signal.CONTENT_CREDENTIALS

    deciding = deciding_signal(_results(declared, 0.95))  # block beats label
    assert deciding is not None
    assert (deciding.signal, deciding.action) == (Signal.MODEL, Action.BLOCK)

    tie = ActionPolicy(model_review=Action.LABEL)
    results = [credentials_result(declared, tie), model_result(0.7, THRESHOLDS, tie)]
    deciding = deciding_signal(results)
    assert deciding is not None and deciding.signal is Signal.CONTENT_CREDENTIALS

    assert deciding_signal(_results(credentials(ABSENT), 0.1)) is None
