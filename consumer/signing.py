"""Sign media with a C2PA manifest under a throwaway certificate authority.

deepscreen only reads credentials in production; signing exists so that the
demo, the tests and the benchmarks can make uploads whose credentials declare
what we need (AI-generated, a camera capture, ...) without any real signing
key. `TestAuthority` is a self-made CA with an ES256 signing certificate; its
signatures validate, and chain to a trust list only when its root is on it.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from detector.sniff import sniff
from detector.source_types import IPTC_DECLARATIONS
from schemas.provenance import IPTC_SOURCE_TYPE_PREFIX


@dataclass(frozen=True)
class TestAuthority:
    """A root CA (`root_pem`, for a trust list) and a leaf signing certificate under it."""

    root_pem: bytes
    chain_pem: bytes  # leaf, then root
    key_pem: bytes
    signer_name: str
    organisation: str

    @classmethod
    def create(
        cls,
        signer_name: str = "deepscreen test signer",
        organisation: str = "deepscreen test CA",
        ocsp_url: str | None = None,
    ) -> TestAuthority:
        """A new CA and ES256 leaf, valid from yesterday for 30 days (`ocsp_url`: its AIA)."""
        now = datetime.datetime.now(datetime.UTC)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _name(f"{organisation} root", organisation)
        root = (
            _certificate(root_name, root_name, root_key, now, authority=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            _certificate(_name(signer_name, organisation), root_name, key, now, authority=False)
            # C2PA requires an EKU for signers; email protection is one it accepts
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
        )
        if ocsp_url:
            leaf = leaf.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(ocsp_url),
                        )
                    ]
                ),
                critical=False,
            )
        signed_leaf = leaf.sign(root_key, hashes.SHA256())
        pem = serialization.Encoding.PEM
        return cls(
            root_pem=root.public_bytes(pem),
            chain_pem=signed_leaf.public_bytes(pem) + root.public_bytes(pem),
            key_pem=key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            signer_name=signer_name,
            organisation=organisation,
        )

    def sign(
        self,
        source: Path,
        destination: Path,
        source_type: str = "trainedAlgorithmicMedia",
        *,
        generator: tuple[str, str] = ("deepscreen-demo", "1.0"),
        ingredient_source_type: str | None = None,
        remote_url: str | None = None,
    ) -> Path:
        """`source` with a manifest whose `c2pa.created` action declares `source_type`.

        `source_type` is an IPTC term (or a full URI). `ingredient_source_type`
        makes the file an edit of a parent ingredient whose own manifest declares
        that type: the actions are `c2pa.opened` (the parent), then `c2pa.edited`
        declaring `source_type`. `remote_url` stores the manifest
        outside the file, leaving only a reference to that URL in it.
        """
        import c2pa

        mime = sniff(source).mime
        if mime is None:
            raise ValueError(f"{source.name}: C2PA cannot be embedded in this format")
        declared = _uri(source_type)  # refused before any file is written
        if ingredient_source_type is not None:
            parent = destination.with_name(f".parent-{destination.name}")
            self.sign(source, parent, ingredient_source_type, generator=generator)
            manifest = _manifest(generator, "c2pa.opened", None, destination.name)
            actions = manifest["assertions"][0]["data"]["actions"]
            actions[0]["parameters"] = {"ingredientIds": ["parent"]}
            actions.append({"action": "c2pa.edited", "digitalSourceType": declared})
            builder = c2pa.Builder(json.dumps(manifest))
            try:
                with parent.open("rb") as stream:
                    builder.add_ingredient(
                        json.dumps(
                            {"title": parent.name, "relationship": "parentOf", "label": "parent"}
                        ),
                        mime,
                        stream,
                    )
            finally:
                parent.unlink(missing_ok=True)  # the builder holds what it needs of it
        else:
            manifest = _manifest(generator, "c2pa.created", declared, destination.name)
            builder = c2pa.Builder(json.dumps(manifest))
        if remote_url:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem, self.key_pem, None)
        )
        with source.open("rb") as src, destination.open("w+b") as dst:
            builder.sign(signer, mime, src, dst)
        builder.close()
        return destination


def _uri(source_type: str) -> str:
    if source_type.startswith("http"):
        return source_type
    if source_type not in IPTC_DECLARATIONS:
        raise ValueError(f"{source_type!r} is not an IPTC digital source type term")
    return IPTC_SOURCE_TYPE_PREFIX + source_type


def _manifest(
    generator: tuple[str, str], action: str, source_type: str | None, title: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": action}
    if source_type:
        entry["digitalSourceType"] = source_type
    return {
        "claim_generator_info": [{"name": generator[0], "version": generator[1]}],
        "title": title,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [entry]}}],
    }


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    *,
    authority: bool,
) -> x509.CertificateBuilder:
    """What the root and the leaf share: names, key, a validity from yesterday for 30 days."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certificates=authority), critical=True)
    )


def _name(common_name: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    )


def _key_usage(*, sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certificates,
        crl_sign=sign_certificates,
        encipher_only=False,
        decipher_only=False,
    )
