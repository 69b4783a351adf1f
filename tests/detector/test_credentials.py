from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.signing import TestAuthority as Authority
from detector import credentials
from detector.config import CredentialsConfig
from detector.credentials import (
    InProcessCredentialsReader,
    StaticCredentialsReader,
    declared,
    read_credentials,
    reader_settings,
)
from schemas.provenance import IPTC_SOURCE_TYPE_PREFIX as IPTC
from schemas.provenance import (
    ClaimGenerator,
    Declaration,
    DeclaredSourceType,
    Provenance,
    ProvenanceReason,
    ProvenanceState,
    SourceTypeOrigin,
)
from tests.support.credentials import (
    compressed_manifest,
    corrupted_store,
    garbage_manifest,
    padded_manifest,
    plain_image,
    plain_video,
    reencoded_copy,
    tampered_copy,
)

UNLIMITED = 1 << 30
OFFLINE = CredentialsConfig()
GENERATOR = ("studio-x", "2.5")


@pytest.fixture(scope="session")
def authority() -> Authority:
    return Authority.create(signer_name="Example Studio signer", organisation="Example CA")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unsigned media by suffix: jpg, png, webp (stills) and mp4 (a 30-frame clip)."""
    root = tmp_path_factory.mktemp("plain")
    media = {suffix: plain_image(root / f"face.{suffix}") for suffix in ("jpg", "png", "webp")}
    media["mp4"] = plain_video(root / "face.mp4")
    return media


def read(path: Path, config: CredentialsConfig = OFFLINE) -> Provenance:
    return read_credentials(path, config, UNLIMITED)


def trusting(authority: Authority) -> CredentialsConfig:
    return CredentialsConfig(trust_anchors_pem=authority.root_pem.decode())


# --------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "mp4"])
def test_media_declared_ai_generated_is_valid_and_declares_ai(
    authority: Authority, plain: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    signed = authority.sign(plain[suffix], tmp_path / f"signed.{suffix}", generator=GENERATOR)

    provenance = read(signed)

    assert provenance.present
    assert provenance.state is ProvenanceState.VALID
    assert provenance.failure_codes == []
    assert provenance.declaration is Declaration.AI_GENERATED
    assert declared(provenance) is Declaration.AI_GENERATED
    assert provenance.manifests == 1
    assert provenance.active_manifest is not None
    assert provenance.source_types == [
        DeclaredSourceType(
            source_type=IPTC + "trainedAlgorithmicMedia",
            origin=SourceTypeOrigin.ACTION,
            action="c2pa.created",
            manifest=provenance.active_manifest,
        )
    ]
    assert provenance.claim_generator == ClaimGenerator(name="studio-x", version="2.5")
    assert provenance.signer is not None
    assert provenance.signer.common_name == "Example Studio signer"
    assert provenance.signer.issuer == "Example CA"
    assert provenance.remote_manifest_url is None
    assert "AI-generated" in provenance.summary


@pytest.mark.parametrize(
    ("term", "declaration"),
    [
        ("compositeWithTrainedAlgorithmicMedia", Declaration.AI_COMPOSITE),
        ("compositeSynthetic", Declaration.AI_COMPOSITE),
        ("algorithmicMedia", Declaration.AI_GENERATED),
        ("algorithmicallyEnhanced", Declaration.AI_EDITED),
        ("digitalCapture", Declaration.NOT_AI),
        ("humanEdits", Declaration.NOT_AI),
    ],
)
def test_the_declared_source_type_decides_the_declaration(
    authority: Authority,
    plain: dict[str, Path],
    tmp_path: Path,
    term: str,
    declaration: Declaration,
) -> None:
    provenance = read(authority.sign(plain["png"], tmp_path / "signed.png", term))

    assert provenance.state is ProvenanceState.VALID
    assert [t.source_type for t in provenance.source_types] == [IPTC + term]
    assert provenance.declaration is declaration
    assert declared(provenance) is declaration


def test_an_ingredient_declaring_ai_makes_an_edit_of_it_ai_generated(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    signed = authority.sign(
        plain["jpg"],
        tmp_path / "edited.jpg",
        "humanEdits",
        ingredient_source_type="trainedAlgorithmicMedia",
    )

    provenance = read(signed)

    assert provenance.state is ProvenanceState.VALID
    assert provenance.manifests == 2
    own, inherited = provenance.source_types
    assert (own.source_type, own.origin, own.action) == (
        IPTC + "humanEdits",
        SourceTypeOrigin.ACTION,
        "c2pa.edited",
    )
    assert own.manifest == provenance.active_manifest
    assert (inherited.source_type, inherited.origin, inherited.action) == (
        IPTC + "trainedAlgorithmicMedia",
        SourceTypeOrigin.INGREDIENT,
        "c2pa.created",
    )
    assert inherited.manifest not in (None, provenance.active_manifest)
    assert provenance.declaration is Declaration.AI_GENERATED


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("suffix", "code"),
    [
        ("jpg", "assertion.dataHash.mismatch"),
        ("png", "assertion.dataHash.mismatch"),
        ("mp4", "assertion.bmffHash.mismatch"),
    ],
)
def test_content_changed_after_signing_is_invalid_with_the_failure_code(
    authority: Authority, plain: dict[str, Path], tmp_path: Path, suffix: str, code: str
) -> None:
    signed = authority.sign(plain[suffix], tmp_path / f"signed.{suffix}")
    tampered = tampered_copy(signed, tmp_path / f"tampered.{suffix}")

    provenance = read(tampered, trusting(authority))

    assert provenance.present
    assert provenance.state is ProvenanceState.INVALID
    assert code in provenance.failure_codes
    assert not provenance.trusted  # a trusted signer does not vouch for changed content
    assert provenance.declaration is Declaration.AI_GENERATED  # what it would have declared
    assert declared(provenance) is Declaration.NONE  # ... counts for nothing
    assert code in provenance.summary


@pytest.mark.parametrize("suffix", ["jpg", "mp4"])
def test_a_reencoded_copy_has_no_credentials(
    authority: Authority, plain: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    signed = authority.sign(plain[suffix], tmp_path / f"signed.{suffix}")
    copy = reencoded_copy(signed, tmp_path / f"copy.{suffix}")

    provenance = read(copy)

    assert provenance.state is ProvenanceState.ABSENT
    assert not provenance.present
    assert provenance.source_types == []
    assert declared(provenance) is Declaration.NONE


def test_a_signer_is_trusted_only_when_it_chains_to_a_configured_anchor(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    signed = authority.sign(plain["jpg"], tmp_path / "signed.jpg")
    stranger = Authority.create(organisation="Another CA")

    no_list = read(signed)
    on_list = read(signed, trusting(authority))
    off_list = read(signed, trusting(stranger))

    assert (no_list.state, no_list.trusted, no_list.trust_list_configured) == (
        ProvenanceState.VALID,
        False,
        False,
    )
    assert (on_list.state, on_list.trusted, on_list.trust_list_configured) == (
        ProvenanceState.VALID,
        True,
        True,
    )
    assert (off_list.state, off_list.trusted, off_list.trust_list_configured) == (
        ProvenanceState.VALID,
        False,
        True,
    )
    # an untrusted signer is reported as `trusted`, not as a validation failure
    assert off_list.failure_codes == []
    assert "untrusted signer" in off_list.summary
    assert "trusted signer" in on_list.summary and "untrusted" not in on_list.summary
    # the declaration of a valid manifest counts whether or not its signer is trusted
    assert declared(off_list) is declared(on_list) is Declaration.AI_GENERATED


# --------------------------------------------------------------------------- hostile stores


def test_a_manifest_store_of_random_bytes_is_unreadable_as_malformed(
    plain: dict[str, Path], tmp_path: Path
) -> None:
    provenance = read(garbage_manifest(plain["jpg"], tmp_path / "garbage.jpg"))

    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.MALFORMED
    assert provenance.present
    assert provenance.reason_detail  # c2pa's own words, for the operator
    assert declared(provenance) is Declaration.NONE


def test_a_signed_store_overwritten_with_random_bytes_is_unreadable_as_malformed(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    signed = authority.sign(plain["jpg"], tmp_path / "signed.jpg")

    provenance = read(corrupted_store(signed, tmp_path / "corrupted.jpg"))

    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.MALFORMED


def test_a_store_that_inflates_past_the_manifest_limit_is_unreadable_as_too_large(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    bomb = compressed_manifest(
        authority, plain["jpg"], tmp_path / "bomb.jpg", decompressed_bytes=3 << 20
    )
    assert bomb.stat().st_size < 64 << 10  # a small file: the size is in the inflating

    refused = read(bomb, CredentialsConfig(max_manifest_mb=1))
    read_in_full = read(bomb, CredentialsConfig(max_manifest_mb=16))

    assert refused.state is ProvenanceState.UNREADABLE
    assert refused.reason is ProvenanceReason.TOO_LARGE
    assert refused.present
    assert read_in_full.state is ProvenanceState.VALID  # the limit, not the file, refused it


def test_an_uncompressed_store_is_bounded_by_the_file_size_limit(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    # max_manifest_mb bounds decompression only: c2pa reads an uncompressed store of any size
    padded = padded_manifest(authority, plain["jpg"], tmp_path / "padded.jpg", 3 << 20)
    size = padded.stat().st_size

    assert read(padded, CredentialsConfig(max_manifest_mb=1)).state is ProvenanceState.VALID
    refused = read_credentials(padded, OFFLINE, max_bytes=size - 1)
    assert refused.reason is ProvenanceReason.FILE_TOO_LARGE


def test_a_file_over_the_size_limit_is_refused_without_being_opened(
    authority: Authority,
    plain: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = authority.sign(plain["jpg"], tmp_path / "signed.jpg")
    size = signed.stat().st_size
    assert read_credentials(signed, OFFLINE, max_bytes=size).state is ProvenanceState.VALID

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_open)
    provenance = read_credentials(signed, OFFLINE, max_bytes=size - 1)

    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.FILE_TOO_LARGE
    assert provenance.reason_detail == f"{size} bytes > {size - 1}"


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("clip.mkv", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + bytes(64)),  # Matroska
        ("image.bmp", b"BM" + bytes(64)),
        ("notes.jpg", b"not an image at all, whatever the name says\n"),
        ("empty.mp4", b""),
    ],
)
def test_a_format_without_c2pa_support_has_no_credentials(
    tmp_path: Path, name: str, head: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(head)

    provenance = read(path)

    assert provenance.state is ProvenanceState.ABSENT
    assert not provenance.present


def test_the_format_is_taken_from_the_bytes_not_the_name(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    signed = authority.sign(plain["jpg"], tmp_path / "signed.jpg")
    misnamed = signed.rename(tmp_path / "signed.mp4")

    assert read(misnamed).state is ProvenanceState.VALID


def test_a_remote_manifest_is_recorded_not_fetched(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    url = "https://credentials.example/manifests/face.c2pa"
    signed = authority.sign(plain["jpg"], tmp_path / "remote.jpg", remote_url=url)

    provenance = read(signed)

    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.REMOTE_NOT_FETCHED
    assert provenance.present
    assert provenance.remote_manifest_url == url
    assert url in provenance.summary


def test_a_reader_failure_is_an_unreadable_provenance_not_an_exception(
    authority: Authority,
    plain: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import c2pa

    signed = authority.sign(plain["jpg"], tmp_path / "signed.jpg")

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("native reader fell over")

    monkeypatch.setattr(c2pa.Reader, "try_create", crash)
    provenance = read(signed, trusting(authority))

    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.READER_ERROR
    assert provenance.reason_detail == "RuntimeError: native reader fell over"
    assert provenance.trust_list_configured
    missing = read(tmp_path / "missing.jpg")
    assert missing.reason is ProvenanceReason.READER_ERROR


def test_the_reader_settings_are_offline_and_bounded() -> None:
    settings = reader_settings(CredentialsConfig(max_manifest_mb=3))

    assert settings["verify"]["remote_manifest_fetch"] is False
    assert settings["verify"]["ocsp_fetch"] is False
    assert settings["verify"]["verify_trust"] is True
    assert settings["core"]["allowed_network_hosts"] == []
    assert settings["core"]["max_decompressed_manifest_size_in_mb"] == 3
    assert "trust" not in settings  # no anchors configured: nothing is trusted
    anchored = reader_settings(CredentialsConfig(trust_anchors_pem="PEM"))
    assert anchored["trust"] == {"trust_anchors": "PEM"}


# --------------------------------------------------------------------------- no network


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request 404 and records it on the server."""

    server: Listener

    def _record(self) -> None:
        self.server.requests.append((self.command, self.path))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _record  # noqa: N815 (http.server's names)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Listener(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Recorder)
        self.requests: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def network_bait(
    listener: Listener, plain: dict[str, Path], root: Path
) -> tuple[Authority, list[Path]]:
    """Files whose credentials point at `listener`: OCSP in the signer's AIA, a remote store."""
    watched = Authority.create(ocsp_url=f"{listener.url}/ocsp")
    return watched, [
        watched.sign(plain["jpg"], root / "ocsp.jpg"),
        watched.sign(plain["mp4"], root / "ocsp.mp4"),
        watched.sign(plain["jpg"], root / "remote.jpg", remote_url=f"{listener.url}/manifest.c2pa"),
    ]


def test_reading_makes_no_network_request(
    listener: Listener,
    plain: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched, (ocsp_jpg, ocsp_mp4, remote) = network_bait(listener, plain, tmp_path)
    listener.requests.clear()

    def no_connect(self: socket.socket, *args: object) -> None:
        raise AssertionError(f"a Python socket connected to {args}")

    with monkeypatch.context() as guarded:
        guarded.setattr(socket.socket, "connect", no_connect)
        guarded.setattr(socket.socket, "connect_ex", no_connect)
        read_with = {
            config: [read(path, config) for path in (ocsp_jpg, ocsp_mp4, remote)]
            for config in (OFFLINE, trusting(watched))
        }
    time.sleep(0.2)  # a request in flight would have reached the handler by now

    assert listener.requests == []
    for config, (jpg, mp4, stored_remotely) in read_with.items():
        assert (jpg.state, mp4.state) == (ProvenanceState.VALID, ProvenanceState.VALID)
        assert jpg.trusted is mp4.trusted is (config is not OFFLINE)
        assert stored_remotely.reason is ProvenanceReason.REMOTE_NOT_FETCHED
        assert stored_remotely.remote_manifest_url == f"{listener.url}/manifest.c2pa"


def test_the_listener_sees_a_reader_with_c2pas_defaults_go_online(
    listener: Listener, plain: dict[str, Path], tmp_path: Path
) -> None:
    """The control for the test above: the same files do make requests when fetching is on."""
    import c2pa

    _, bait = network_bait(listener, plain, tmp_path)
    listener.requests.clear()

    for path, mime in zip(bait, ("image/jpeg", "video/mp4", "image/jpeg"), strict=True):
        context = c2pa.Context.from_dict(
            {"verify": {"remote_manifest_fetch": True, "ocsp_fetch": True}}
        )
        try:
            with path.open("rb") as stream:
                reader = c2pa.Reader.try_create(mime, stream, None, context)
                if reader is not None:
                    reader.close()
        except c2pa.C2paError:
            pass  # the listener answers 404: the remote store is not found
        finally:
            context.close()
    deadline = time.monotonic() + 5
    while len(listener.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    paths = [path for _, path in listener.requests]
    assert "/manifest.c2pa" in paths  # the remote store was fetched
    assert len([p for p in paths if p != "/manifest.c2pa"]) >= 2  # OCSP, once per signed file


# --------------------------------------------------------------------------- readers


def test_the_in_process_reader_returns_what_read_credentials_reads(
    authority: Authority, plain: dict[str, Path], tmp_path: Path
) -> None:
    signed = authority.sign(plain["mp4"], tmp_path / "signed.mp4")
    reader = InProcessCredentialsReader(trusting(authority), max_bytes=UNLIMITED)

    provenance = reader.read_credentials(signed)

    assert (provenance.state, provenance.trusted) == (ProvenanceState.VALID, True)
    assert provenance.declaration is Declaration.AI_GENERATED
    small = InProcessCredentialsReader(OFFLINE, max_bytes=10)
    assert small.read_credentials(signed).reason is ProvenanceReason.FILE_TOO_LARGE


def test_the_in_process_reader_gives_up_after_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()

    def slow_read(path: Path, config: CredentialsConfig, max_bytes: int) -> Provenance:
        released.wait(10)
        return credentials.absent(False, time.monotonic())

    monkeypatch.setattr(credentials, "read_credentials", slow_read)
    config = CredentialsConfig(trust_anchors_pem="PEM", read_timeout_s=0.05)
    reader = InProcessCredentialsReader(config, max_bytes=UNLIMITED)
    started = time.monotonic()
    try:
        provenance = reader.read_credentials(tmp_path / "slow.jpg")
    finally:
        released.set()

    assert time.monotonic() - started < 2
    assert provenance.state is ProvenanceState.UNREADABLE
    assert provenance.reason is ProvenanceReason.READ_TIMEOUT
    assert provenance.reason_detail == "reading took longer than 0.05 s"
    assert provenance.trust_list_configured
    assert declared(provenance) is Declaration.NONE


def test_the_static_reader_answers_the_same_for_every_file_and_records_them(
    tmp_path: Path,
) -> None:
    default = StaticCredentialsReader()
    assert default.read_credentials(tmp_path / "a.jpg").state is ProvenanceState.ABSENT
    assert default.read == [tmp_path / "a.jpg"]

    valid = Provenance(
        present=True,
        state=ProvenanceState.VALID,
        declaration=Declaration.AI_GENERATED,
        summary="valid",
    )
    reader = StaticCredentialsReader(valid)
    assert reader.read_credentials(tmp_path / "b.mp4") is valid
    assert reader.read_credentials(tmp_path / "c.png") is valid
    assert reader.read == [tmp_path / "b.mp4", tmp_path / "c.png"]


@pytest.mark.parametrize(
    ("state", "reason", "counts"),
    [
        (ProvenanceState.VALID, None, True),
        (ProvenanceState.INVALID, None, False),
        (ProvenanceState.UNREADABLE, ProvenanceReason.MALFORMED, False),
    ],
)
def test_only_a_valid_manifest_declaration_counts(
    state: ProvenanceState, reason: ProvenanceReason | None, counts: bool
) -> None:
    provenance = Provenance(
        present=True,
        state=state,
        reason=reason,
        declaration=Declaration.AI_COMPOSITE,
        summary="x",
    )

    assert declared(provenance) is (Declaration.AI_COMPOSITE if counts else Declaration.NONE)
