from __future__ import annotations

from pathlib import Path

import pytest

from consumer.signing import TestAuthority as Authority
from tests.support.credentials import plain_image


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.create()


def test_an_unknown_source_type_term_is_refused(authority: Authority, tmp_path: Path) -> None:
    source = plain_image(tmp_path / "face.jpg")

    with pytest.raises(ValueError, match="notAVocabularyTerm"):
        authority.sign(source, tmp_path / "signed.jpg", "notAVocabularyTerm")
    with pytest.raises(ValueError, match="notAVocabularyTerm"):  # nor as an edit of a parent
        authority.sign(
            source,
            tmp_path / "edited.jpg",
            "notAVocabularyTerm",
            ingredient_source_type="trainedAlgorithmicMedia",
        )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["face.jpg"]  # nothing left


def test_an_unknown_ingredient_source_type_term_is_refused(
    authority: Authority, tmp_path: Path
) -> None:
    source = plain_image(tmp_path / "face.jpg")

    with pytest.raises(ValueError, match="madeUp"):
        authority.sign(source, tmp_path / "signed.jpg", ingredient_source_type="madeUp")


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("clip.mkv", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + bytes(64)),
        ("image.bmp", b"BM" + bytes(64)),
        ("notes.txt", b"plain text, no media format\n"),
    ],
)
def test_a_format_c2pa_cannot_embed_into_is_refused(
    authority: Authority, tmp_path: Path, name: str, head: bytes
) -> None:
    source = tmp_path / name
    source.write_bytes(head)

    with pytest.raises(ValueError, match="cannot be embedded"):
        authority.sign(source, tmp_path / f"signed-{name}")
    assert not (tmp_path / f"signed-{name}").exists()


def test_the_authority_root_is_a_pem_ca_certificate_and_the_chain_ends_with_it(
    authority: Authority,
) -> None:
    from cryptography import x509

    root = x509.load_pem_x509_certificate(authority.root_pem)
    leaf, issuer = x509.load_pem_x509_certificates(authority.chain_pem)

    assert issuer == root
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == root.subject
