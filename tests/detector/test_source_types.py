from __future__ import annotations

import pytest

from detector.source_types import IPTC_DECLARATIONS, declaration_of, strongest, term
from schemas.provenance import IPTC_SOURCE_TYPE_PREFIX, Declaration

HTTP = "http://cv.iptc.org/newscodes/digitalsourcetype/"
HTTPS = "https://cv.iptc.org/newscodes/digitalsourcetype/"


def terms_declaring(declaration: Declaration) -> set[str]:
    return {name for name, says in IPTC_DECLARATIONS.items() if says is declaration}


def test_exactly_four_terms_declare_generative_ai() -> None:
    assert terms_declaring(Declaration.AI_GENERATED) == {
        "trainedAlgorithmicMedia",
        "algorithmicMedia",
    }
    assert terms_declaring(Declaration.AI_COMPOSITE) == {
        "compositeWithTrainedAlgorithmicMedia",
        "compositeSynthetic",
    }


def test_algorithmic_enhancement_is_recorded_as_an_ai_edit() -> None:
    assert terms_declaring(Declaration.AI_EDITED) == {"algorithmicallyEnhanced"}


def test_capture_creation_and_human_edits_declare_no_ai() -> None:
    assert terms_declaring(Declaration.NOT_AI) == {
        "digitalCapture",
        "computationalCapture",
        "negativeFilm",
        "positiveFilm",
        "print",
        "humanEdits",
        "minorHumanEdits",
        "compositeCapture",
        "composite",
        "digitalCreation",
        "dataDrivenMedia",
        "screenCapture",
        "virtualRecording",
        "digitalArt",
        "softwareImage",
    }


@pytest.mark.parametrize(("name", "declaration"), sorted(IPTC_DECLARATIONS.items()))
@pytest.mark.parametrize("prefix", [HTTP, HTTPS])
def test_every_term_declares_the_same_under_http_and_https(
    prefix: str, name: str, declaration: Declaration
) -> None:
    assert term(prefix + name) == name
    assert declaration_of(prefix + name) is declaration


def test_the_schema_prefix_is_the_vocabulary_prefix() -> None:
    assert IPTC_SOURCE_TYPE_PREFIX == HTTP


def test_a_trailing_slash_is_not_part_of_the_term() -> None:
    assert term(HTTP + "trainedAlgorithmicMedia/") == "trainedAlgorithmicMedia"
    assert declaration_of(HTTPS + "compositeSynthetic/") is Declaration.AI_COMPOSITE


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/digitalsourcetype/trainedAlgorithmicMedia",
        "trainedAlgorithmicMedia",  # a bare term is not an IPTC URI
        "ftp://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
        HTTP,
        HTTP + "notAVocabularyTerm",
        "",
    ],
)
def test_an_unknown_uri_declares_nothing(uri: str) -> None:
    assert declaration_of(uri) is Declaration.NONE


def test_only_iptc_uris_have_a_term() -> None:
    assert term("http://example.com/digitalsourcetype/trainedAlgorithmicMedia") is None
    assert term(HTTP) is None
    assert term(HTTP + "notAVocabularyTerm") == "notAVocabularyTerm"


@pytest.mark.parametrize(
    ("source_types", "declaration"),
    [
        ([], Declaration.NONE),
        (["http://example.com/other"], Declaration.NONE),
        ([HTTP + "digitalCapture"], Declaration.NOT_AI),
        ([HTTP + "digitalCapture", HTTP + "algorithmicallyEnhanced"], Declaration.AI_EDITED),
        (
            [HTTP + "algorithmicallyEnhanced", HTTPS + "compositeSynthetic"],
            Declaration.AI_COMPOSITE,
        ),
        (
            [HTTP + "compositeSynthetic", HTTP + "humanEdits", HTTP + "trainedAlgorithmicMedia"],
            Declaration.AI_GENERATED,
        ),
        ([HTTP + "trainedAlgorithmicMedia", HTTP + "compositeSynthetic"], Declaration.AI_GENERATED),
        (["http://example.com/other", HTTP + "humanEdits"], Declaration.NOT_AI),
    ],
)
def test_the_strongest_declaration_of_a_set_of_terms_wins(
    source_types: list[str], declaration: Declaration
) -> None:
    assert strongest(source_types) is declaration
    assert strongest(reversed(source_types)) is declaration  # whatever the order
    assert strongest(iter(source_types)) is declaration  # any iterable, read once
