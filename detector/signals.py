"""Each screening signal's own finding, and the action the operator's policy gives it.

Signals are independent: the content credentials say what the upload declares
about itself, the model what it sees in the faces. Each becomes a
`SignalResult`; the verdict's action is the strictest of them
(`schemas.verdict.deciding_signal`). Pure functions, no I/O.
"""

from __future__ import annotations

from detector.config import ActionPolicy
from detector.credentials import declared
from schemas.model import Thresholds
from schemas.provenance import Declaration, Provenance, ProvenanceState
from schemas.verdict import Action, Outcome, Reason, Signal, SignalResult


def credentials_result(provenance: Provenance, policy: ActionPolicy) -> SignalResult:
    """`declared_synthetic` for a valid manifest declaring generative AI; invalid per policy."""
    declaration = declared(provenance)
    if declaration in (Declaration.AI_GENERATED, Declaration.AI_COMPOSITE):
        generated = declaration is Declaration.AI_GENERATED
        return SignalResult(
            signal=Signal.CONTENT_CREDENTIALS,
            outcome=Outcome.DECLARED_SYNTHETIC,
            reason=Reason.DECLARED_AI_GENERATED if generated else Reason.DECLARED_AI_COMPOSITE,
            action=policy.declared_ai if generated else policy.declared_composite,
            summary=provenance.summary,
        )
    invalid = provenance.state is ProvenanceState.INVALID
    if invalid and policy.invalid_credentials is not Action.NONE:
        return SignalResult(
            signal=Signal.CONTENT_CREDENTIALS,
            outcome=Outcome.CREDENTIALS_INVALID,
            reason=Reason.INVALID_CONTENT_CREDENTIALS,
            action=policy.invalid_credentials,
            summary=provenance.summary,
        )
    return SignalResult(signal=Signal.CONTENT_CREDENTIALS, outcome=None, summary=provenance.summary)


def model_result(
    score: float | None,
    thresholds: Thresholds,
    policy: ActionPolicy,
    *,
    refused: tuple[Outcome, Reason] | None = None,
) -> SignalResult:
    """The model's finding: a scored face, or why it could not score (`refused`)."""
    if refused is not None:
        outcome, reason = refused
        return SignalResult(
            signal=Signal.MODEL, outcome=outcome, reason=reason, summary=_refusal(outcome, reason)
        )
    if score is None:
        raise ValueError("a scored model result needs a score")
    if score >= thresholds.block:
        return SignalResult(
            signal=Signal.MODEL,
            outcome=Outcome.SUSPECTED_DEEPFAKE,
            action=policy.model_block,
            summary=f"face score {score:.4f} >= block threshold {thresholds.block:.4f}",
        )
    if score >= thresholds.review:
        return SignalResult(
            signal=Signal.MODEL,
            outcome=Outcome.SUSPECTED_DEEPFAKE,
            action=policy.model_review,
            summary=f"face score {score:.4f} >= review threshold {thresholds.review:.4f}",
        )
    return SignalResult(
        signal=Signal.MODEL,
        outcome=Outcome.LIKELY_REAL,
        summary=f"face score {score:.4f} < review threshold {thresholds.review:.4f}",
    )


def _refusal(outcome: Outcome, reason: Reason) -> str:
    if outcome is Outcome.NO_FACE:
        return f"no face to score ({reason.value})"
    return f"media not screened by the model ({reason.value})"
