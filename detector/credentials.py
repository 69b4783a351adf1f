"""Read and validate an upload's content credentials (C2PA) with the official library.

The manifest store is as untrusted as the media around it. The reader is
configured to make no network request of its own (no remote manifests, no
OCSP, no allowed hosts at all): a reference to a remote manifest is recorded,
never followed. Whatever goes wrong becomes `state = unreadable` with a
reason, never an exception: a bad manifest must not cost the upload its
verdict. The file is read through a stream, never whole into memory (c2pa-rs
hashes a large signed MP4 in blocks of up to 256 MiB); the service runs this
in the decoder worker processes (time limit, memory cap, crash isolation),
`scan` on a thread with a time limit.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from detector.config import CredentialsConfig
from detector.sniff import sniff
from detector.source_types import strongest, term
from schemas.provenance import (
    ClaimGenerator,
    CredentialSigner,
    Declaration,
    DeclaredSourceType,
    Provenance,
    ProvenanceReason,
    ProvenanceState,
    SourceTypeOrigin,
)

_UNTRUSTED = "signingCredential.untrusted"
_MAX_SOURCE_TYPES = 64
_MAX_FAILURE_CODES = 64
_MAX_INGREDIENT_DEPTH = 16
_REMOTE_URL = re.compile(r"from url (\S+)")
_TOO_LARGE_SIGNS = ("max_decompressed", "too large", "exceeds maximum size")


class CredentialsReader(Protocol):
    """Reads the content credentials of a file: in this process, or in an isolated one."""

    def read_credentials(self, path: Path) -> Provenance: ...


def reader_settings(config: CredentialsConfig) -> dict[str, Any]:
    """The c2pa settings: offline, bounded, and trusting only the configured anchors."""
    settings: dict[str, Any] = {
        "verify": {
            "verify_after_reading": True,
            "verify_trust": True,
            "remote_manifest_fetch": False,
            "ocsp_fetch": False,
        },
        "core": {
            "allowed_network_hosts": [],
            "max_decompressed_manifest_size_in_mb": config.max_manifest_mb,
        },
    }
    if config.trust_anchors_pem:
        settings["trust"] = {"trust_anchors": config.trust_anchors_pem}
    return settings


def read_credentials(path: Path, config: CredentialsConfig, max_bytes: int) -> Provenance:
    """The provenance of `path`; every failure is an `unreadable` provenance, not an error."""
    started = time.monotonic()
    trust = bool(config.trust_anchors_pem)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return unreadable(
                ProvenanceReason.FILE_TOO_LARGE, f"{size} bytes > {max_bytes}", trust, started
            )
        mime = sniff(path).mime
        if mime is None:
            return absent(trust, started, "the format carries no C2PA manifest")
        return _read(path, mime, config, started)
    except Exception as error:  # a reader bug on hostile bytes is this file's outcome
        return unreadable(
            ProvenanceReason.READER_ERROR, f"{type(error).__name__}: {error}", trust, started
        )


def _read(path: Path, mime: str, config: CredentialsConfig, started: float) -> Provenance:
    import c2pa  # the native library loads only where credentials are read

    trust = bool(config.trust_anchors_pem)
    context = c2pa.Context.from_dict(reader_settings(config))
    try:
        with path.open("rb") as stream:
            try:
                reader = c2pa.Reader.try_create(mime, stream, None, context)
            except c2pa.C2paError as error:
                return _refused(str(error), trust, started)
            if reader is None:
                return absent(trust, started)
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
                results = reader.get_validation_results() or {}
                remote_url = None if reader.is_embedded() else reader.get_remote_url()
    finally:
        context.close()
    return _provenance(store, state, results, remote_url, trust, started)


def _refused(message: str, trust: bool, started: float) -> Provenance:
    kind = message.split(":", 1)[0].strip()
    if kind in ("Remote", "RemoteManifest"):
        found = _REMOTE_URL.search(message)
        url = found.group(1)[:2048] if found else None
        return Provenance(
            present=True,
            state=ProvenanceState.UNREADABLE,
            reason=ProvenanceReason.REMOTE_NOT_FETCHED,
            reason_detail="the manifest is stored remotely; screening makes no network request",
            trust_list_configured=trust,
            remote_manifest_url=url,
            summary=f"Content credentials are stored remotely ({url or 'no URL given'}); "
            "not fetched.",
            read_ms=_elapsed_ms(started),
        )
    lowered = message.lower()
    # c2pa refuses a store that inflates past max_decompressed_manifest_size_in_mb
    # with "Verify: output exceeds maximum size"
    reason = (
        ProvenanceReason.TOO_LARGE
        if any(sign in lowered for sign in _TOO_LARGE_SIGNS)
        else ProvenanceReason.MALFORMED
    )
    return unreadable(reason, message, trust, started, present=True)


def _provenance(
    store: dict[str, Any],
    state: str | None,
    results: dict[str, Any],
    remote_url: str | None,
    trust: bool,
    started: float,
) -> Provenance:
    manifests: dict[str, Any] = store.get("manifests") or {}
    label = store.get("active_manifest")
    active: dict[str, Any] = manifests.get(label) or {} if isinstance(label, str) else {}
    failures = [code for code in _failure_codes(results, store) if code != _UNTRUSTED][
        :_MAX_FAILURE_CODES
    ]
    valid = state in ("Valid", "Trusted") and not failures
    source_types = list(_source_types(manifests, label))[:_MAX_SOURCE_TYPES]
    declaration = strongest(t.source_type for t in source_types)
    generator = _claim_generator(active)
    signer = _signer(active.get("signature_info") or {})
    provenance_state = ProvenanceState.VALID if valid else ProvenanceState.INVALID
    trusted = valid and state == "Trusted"
    return Provenance(
        present=True,
        state=provenance_state,
        failure_codes=failures,
        trusted=trusted,
        trust_list_configured=trust,
        manifests=len(manifests),
        active_manifest=label[:256] if isinstance(label, str) else None,
        claim_generator=generator,
        signer=signer,
        source_types=source_types,
        declaration=declaration,
        remote_manifest_url=remote_url[:2048] if remote_url else None,
        summary=_summary(provenance_state, trusted, declaration, source_types, signer, failures),
        read_ms=_elapsed_ms(started),
    )


def _failure_codes(results: dict[str, Any], store: dict[str, Any]) -> Iterator[str]:
    active = results.get("activeManifest") or {}
    entries = active.get("failure") if isinstance(active, dict) else None
    if entries is None:  # older stores report only a flat status list
        entries = store.get("validation_status") or []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("code"), str):
            yield entry["code"][:256]


def _source_types(manifests: dict[str, Any], active: Any) -> Iterator[DeclaredSourceType]:
    """Declared digital source types: the active manifest's actions, then its ingredients'."""
    seen: set[str] = set()
    queue: list[tuple[Any, SourceTypeOrigin, int]] = [(active, SourceTypeOrigin.ACTION, 0)]
    while queue:
        label, origin, depth = queue.pop(0)
        if not isinstance(label, str) or label in seen or depth > _MAX_INGREDIENT_DEPTH:
            continue
        seen.add(label)
        manifest = manifests.get(label)
        if not isinstance(manifest, dict):
            continue
        for assertion in manifest.get("assertions") or []:
            if not isinstance(assertion, dict):
                continue
            if not str(assertion.get("label", "")).startswith("c2pa.actions"):
                continue
            for action in (assertion.get("data") or {}).get("actions") or []:
                source = action.get("digitalSourceType") if isinstance(action, dict) else None
                if isinstance(source, str) and source:
                    yield DeclaredSourceType(
                        source_type=source[:512],
                        origin=origin,
                        action=str(action.get("action"))[:256] if action.get("action") else None,
                        manifest=label[:256],
                    )
        for ingredient in manifest.get("ingredients") or []:
            if isinstance(ingredient, dict):
                queue.append(
                    (ingredient.get("active_manifest"), SourceTypeOrigin.INGREDIENT, depth + 1)
                )


def _claim_generator(manifest: dict[str, Any]) -> ClaimGenerator | None:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict) and infos[0].get("name"):
        version = infos[0].get("version")
        return ClaimGenerator(
            name=str(infos[0]["name"])[:256], version=str(version)[:256] if version else None
        )
    legacy = manifest.get("claim_generator")  # claims v1: "name/version other/1.0"
    if isinstance(legacy, str) and legacy:
        name, _, version = legacy.split(" ", 1)[0].partition("/")
        return ClaimGenerator(name=name[:256], version=version[:256] or None)
    return None


def _signer(info: dict[str, Any]) -> CredentialSigner | None:
    if not info:
        return None
    signed_at = None
    if isinstance(info.get("time"), str):
        try:
            signed_at = datetime.fromisoformat(info["time"].replace("Z", "+00:00"))
        except ValueError:
            signed_at = None

    def text(key: str) -> str | None:
        value = info.get(key)
        return str(value)[:256] if value else None

    return CredentialSigner(
        issuer=text("issuer"),
        common_name=text("common_name"),
        algorithm=text("alg"),
        signed_at=signed_at,
    )


_DECLARED_TEXT = {
    Declaration.AI_GENERATED: "declare AI-generated content",
    Declaration.AI_COMPOSITE: "declare a composite with AI-generated content",
    Declaration.AI_EDITED: "declare algorithmic enhancement",
    Declaration.NOT_AI: "declare no AI generation",
    Declaration.NONE: "declare no digital source type",
}


def _summary(
    state: ProvenanceState,
    trusted: bool,
    declaration: Declaration,
    source_types: list[DeclaredSourceType],
    signer: CredentialSigner | None,
    failures: list[str],
) -> str:
    who = "unknown signer"
    if signer and (signer.common_name or signer.issuer):
        who = ", ".join(part for part in (signer.common_name, signer.issuer) if part)
    terms = sorted({term(t.source_type) or t.source_type for t in source_types})
    declared = _DECLARED_TEXT[declaration] + (f" ({', '.join(terms)})" if terms else "")
    if state is ProvenanceState.INVALID:
        return (
            f"Invalid content credentials ({', '.join(failures[:3]) or 'validation failed'}); "
            f"they would {declared}. Signed by {who}."
        )[:512]
    trust = "trusted" if trusted else "untrusted"
    return f"Valid content credentials, {trust} signer ({who}), {declared}."[:512]


def absent(trust: bool, started: float, detail: str | None = None) -> Provenance:
    return Provenance(
        present=False,
        state=ProvenanceState.ABSENT,
        trust_list_configured=trust,
        summary="No content credentials" + (f" ({detail})." if detail else "."),
        read_ms=_elapsed_ms(started),
    )


def unreadable(
    reason: ProvenanceReason,
    detail: str,
    trust: bool,
    started: float | None = None,
    *,
    present: bool = False,
) -> Provenance:
    return Provenance(
        present=present,
        state=ProvenanceState.UNREADABLE,
        reason=reason,
        reason_detail=detail[:1024],
        trust_list_configured=trust,
        summary=f"Content credentials could not be read ({reason.value}).",
        read_ms=_elapsed_ms(started) if started is not None else 0,
    )


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


class InProcessCredentialsReader:
    """`read_credentials` on a helper thread, abandoned after `read_timeout_s` (for `scan`).

    A thread cannot be stopped: an abandoned read runs on in the background. The
    service reads in its decoder processes instead, where an overrun is killed.
    """

    def __init__(self, config: CredentialsConfig, max_bytes: int) -> None:
        self.config = config
        self.max_bytes = max_bytes

    def read_credentials(self, path: Path) -> Provenance:
        result: list[Provenance] = []
        reader = threading.Thread(
            target=lambda: result.append(read_credentials(path, self.config, self.max_bytes)),
            name="deepscreen-credentials",
            daemon=True,
        )
        reader.start()
        reader.join(self.config.read_timeout_s)
        if result:
            return result[0]
        return unreadable(
            ProvenanceReason.READ_TIMEOUT,
            f"reading took longer than {self.config.read_timeout_s:g} s",
            bool(self.config.trust_anchors_pem),
        )


class StaticCredentialsReader:
    """The in-memory twin: the same provenance for every file (absent by default)."""

    def __init__(self, provenance: Provenance | None = None) -> None:
        self.provenance = provenance or absent(False, time.monotonic())
        self.read: list[Path] = []

    def read_credentials(self, path: Path) -> Provenance:
        self.read.append(path)
        return self.provenance


def declared(provenance: Provenance) -> Declaration:
    """The declaration that counts: only a valid manifest's."""
    if provenance.state is ProvenanceState.VALID:
        return provenance.declaration
    return Declaration.NONE
