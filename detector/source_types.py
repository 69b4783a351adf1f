"""The IPTC digital source type vocabulary, and what each term declares about AI.

C2PA manifests declare how media was made with a term of the IPTC NewsCodes
vocabulary (https://cv.iptc.org/newscodes/digitalsourcetype/). Only the terms
that say a generative or algorithmic model made the content (alone, or as part
of a composite) lead to an action; the rest are recorded. The README's table
is this mapping.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from schemas.provenance import Declaration

_PREFIXES: Final = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/",
    "https://cv.iptc.org/newscodes/digitalsourcetype/",
)

# Every current term of the vocabulary, and the retired ones still seen in files.
IPTC_DECLARATIONS: Final[dict[str, Declaration]] = {
    "trainedAlgorithmicMedia": Declaration.AI_GENERATED,
    "algorithmicMedia": Declaration.AI_GENERATED,
    "compositeWithTrainedAlgorithmicMedia": Declaration.AI_COMPOSITE,
    "compositeSynthetic": Declaration.AI_COMPOSITE,
    "algorithmicallyEnhanced": Declaration.AI_EDITED,
    "digitalCapture": Declaration.NOT_AI,
    "computationalCapture": Declaration.NOT_AI,
    "negativeFilm": Declaration.NOT_AI,
    "positiveFilm": Declaration.NOT_AI,
    "print": Declaration.NOT_AI,
    "humanEdits": Declaration.NOT_AI,
    "minorHumanEdits": Declaration.NOT_AI,
    "compositeCapture": Declaration.NOT_AI,
    "composite": Declaration.NOT_AI,
    "digitalCreation": Declaration.NOT_AI,
    "dataDrivenMedia": Declaration.NOT_AI,
    "screenCapture": Declaration.NOT_AI,
    "virtualRecording": Declaration.NOT_AI,
    "digitalArt": Declaration.NOT_AI,  # retired: now digitalCreation
    "softwareImage": Declaration.NOT_AI,  # retired
}

# Strongest first: the declaration of a set of terms is the strongest among them.
_STRENGTH: Final = (
    Declaration.AI_GENERATED,
    Declaration.AI_COMPOSITE,
    Declaration.AI_EDITED,
    Declaration.NOT_AI,
    Declaration.NONE,
)


def term(source_type: str) -> str | None:
    """The vocabulary term of an IPTC URI (http or https), or None for another URI."""
    for prefix in _PREFIXES:
        if source_type.startswith(prefix):
            return source_type[len(prefix) :].strip("/") or None
    return None


def declaration_of(source_type: str) -> Declaration:
    """What one declared source type says; an unknown URI says nothing."""
    name = term(source_type)
    return IPTC_DECLARATIONS.get(name, Declaration.NONE) if name else Declaration.NONE


def strongest(source_types: Iterable[str]) -> Declaration:
    declared = {declaration_of(source_type) for source_type in source_types}
    return next((d for d in _STRENGTH if d in declared), Declaration.NONE)
