"""What an upload's own content credentials (C2PA) say about how it was made.

Generators and editing tools embed a signed C2PA manifest that declares, among
other things, the IPTC "digital source type" of the media: captured by a
camera, edited, or made by a generative model. Platforms label such content
from this declaration alone, with no model. `Provenance` is what deepscreen
read from the manifest store and how far it could be trusted; it is recorded
in every verdict, whether or not it changed the verdict's action.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

IPTC_SOURCE_TYPE_PREFIX: Final = "http://cv.iptc.org/newscodes/digitalsourcetype/"

ShortText = Annotated[str, Field(max_length=256)]


class ProvenanceState(str, Enum):
    """How far the manifest store could be read and validated."""

    ABSENT = "absent"  # no manifest store in the file
    VALID = "valid"  # signature and content hashes check out (trust: see `trusted`)
    INVALID = "invalid"  # it does not: `failure_codes` say what failed
    UNREADABLE = "unreadable"  # it could not be read: `reason` says why


class ProvenanceReason(str, Enum):
    """Why credentials are `unreadable` (machine-readable, stable)."""

    MALFORMED = "malformed_manifest"  # the store or the asset around it does not parse
    TOO_LARGE = "manifest_too_large"
    FILE_TOO_LARGE = "file_too_large"
    REMOTE_NOT_FETCHED = "remote_manifest_not_fetched"  # screening makes no network request
    READ_TIMEOUT = "read_timeout"
    READER_CRASHED = "reader_crashed"
    READER_ERROR = "reader_error"


class Declaration(str, Enum):
    """What the declared digital source types amount to (the README maps the IPTC vocabulary)."""

    AI_GENERATED = "ai_generated"  # trainedAlgorithmicMedia, algorithmicMedia
    AI_COMPOSITE = "ai_composite"  # compositeWithTrainedAlgorithmicMedia, compositeSynthetic
    AI_EDITED = "ai_edited"  # algorithmicallyEnhanced, ...: recorded, no action by default
    NOT_AI = "not_ai"  # only capture, creation and edit types
    NONE = "none"  # no digital source type declared


class SourceTypeOrigin(str, Enum):
    ACTION = "action"  # an action of the active manifest (c2pa.created, c2pa.edited, ...)
    INGREDIENT = "ingredient"  # an action of an ingredient's manifest


class DeclaredSourceType(BaseModel):
    """One digital source type the manifest store declares, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_type: str = Field(max_length=512, description="the IPTC URI as written")
    origin: SourceTypeOrigin
    action: ShortText | None = Field(default=None, description="e.g. c2pa.created")
    manifest: ShortText | None = Field(default=None, description="label of the declaring manifest")


class ClaimGenerator(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ShortText
    version: ShortText | None = None


class CredentialSigner(BaseModel):
    """Who signed the active manifest, as its certificate says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: ShortText | None = Field(default=None, description="organisation of the certificate")
    common_name: ShortText | None = None
    algorithm: ShortText | None = None
    signed_at: datetime | None = Field(
        default=None, description="from a trusted timestamp, when the manifest carries one"
    )


class Provenance(BaseModel):
    """The content credentials of one upload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    present: bool = Field(description="a manifest store (or a reference to a remote one) exists")
    state: ProvenanceState
    reason: ProvenanceReason | None = None
    reason_detail: str | None = Field(default=None, max_length=1024)
    failure_codes: list[ShortText] = Field(
        default_factory=list,
        max_length=64,
        description="C2PA validation failure codes of the active manifest (e.g. "
        "assertion.dataHash.mismatch); signingCredential.untrusted is reported as `trusted`",
    )
    trusted: bool = Field(
        default=False, description="the signer chains to a configured trust anchor"
    )
    trust_list_configured: bool = False
    manifests: int = Field(default=0, ge=0, description="manifests in the store")
    active_manifest: ShortText | None = None
    claim_generator: ClaimGenerator | None = None
    signer: CredentialSigner | None = None
    source_types: list[DeclaredSourceType] = Field(default_factory=list, max_length=64)
    declaration: Declaration = Declaration.NONE
    remote_manifest_url: str | None = Field(default=None, max_length=2048)
    summary: str = Field(max_length=512, description="one line a moderator can read")
    read_ms: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Provenance:
        if (self.state is ProvenanceState.UNREADABLE) != (self.reason is not None):
            raise ValueError("unreadable credentials, and only they, carry a reason")
        if self.state is ProvenanceState.ABSENT and self.present:
            raise ValueError("absent credentials are not present")
        if self.state in (ProvenanceState.VALID, ProvenanceState.INVALID) and not self.present:
            raise ValueError("validated credentials must be present")
        if self.trusted and self.state is not ProvenanceState.VALID:
            raise ValueError("only valid credentials can be trusted")
        return self
