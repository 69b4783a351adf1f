"""Media for the content-credentials (C2PA) tests: plain, signed, tampered and hostile.

Every writer takes the destination path and returns it. The plain media are the
astronaut's face (``skimage.data.astronaut``) at 128 x 128: a JPEG, PNG or WebP
still, or a 30-frame mp4v clip written by OpenCV. Signing is `TestAuthority.sign`;
the helpers here change a file *after* signing, or build manifests the authority
would never write.

Facts verified against c2pa-python 0.38.1 (c2pa-rs 0.91):

* :func:`tampered_copy`: one flipped byte of pixel data after signing fails
  validation with ``assertion.dataHash.mismatch`` (JPEG, PNG) or
  ``assertion.bmffHash.mismatch`` (MP4).
* :func:`reencoded_copy`: OpenCV decodes and re-encodes the pixels; the manifest
  does not survive, and the copy reads as absent.
* :func:`garbage_manifest` and :func:`corrupted_store`: a JUMBF box that
  announces a C2PA manifest store but holds random bytes; c2pa refuses it with
  ``Verify: invalid box header`` / ``Verify: expected JUMD`` (random bytes in
  place of the whole APP11 header instead read as *no* manifest at all).
* :func:`compressed_manifest`: a manifest store signed with
  ``prefer_compress_manifests`` whose thumbnail is ``decompressed_bytes`` of
  zeros. The file is ~10 KB; reading it with
  ``max_decompressed_manifest_size_in_mb`` below that size fails with
  ``Verify: output exceeds maximum size``.
* :func:`padded_manifest`: the same large thumbnail, uncompressed. c2pa reads it
  whatever ``max_decompressed_manifest_size_in_mb`` says (the bound applies to
  decompression only); the file-size limit is what bounds it.
"""

from __future__ import annotations

import io
import json
import random
import struct
from pathlib import Path

import cv2
import numpy as np

from consumer.signing import TestAuthority
from detector.sniff import sniff
from schemas.provenance import IPTC_SOURCE_TYPE_PREFIX as IPTC
from tests.support.videos import Frame, astronaut_face, write_video

__all__ = [
    "C2PA_STORE_UUID",
    "astronaut_photo",
    "compressed_manifest",
    "corrupted_store",
    "garbage_manifest",
    "jpeg_segments",
    "mp4_boxes",
    "padded_manifest",
    "plain_image",
    "plain_video",
    "reencoded_copy",
    "tampered_copy",
]

SIDE = 128

# The JUMBF description-box UUID of a C2PA manifest store ("c2pa" + the ISO suffix).
C2PA_STORE_UUID = b"c2pa" + bytes.fromhex("00110010800000aa00389b71")

_JPEG_SOS = 0xDA
_JPEG_APP11 = 0xEB


def _face(side: int = SIDE) -> Frame:
    face = cv2.resize(astronaut_face(), (side, side), interpolation=cv2.INTER_AREA)
    return np.asarray(face, dtype=np.uint8)


def plain_image(path: Path) -> Path:
    """The face as a still in the format of `path`'s suffix (.jpg, .png, .webp), no manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(_face(), cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"OpenCV could not write {path}")
    return path


def astronaut_photo(path: Path) -> Path:
    """The whole 512 x 512 astronaut photo, no manifest, in the format of `path`'s suffix.

    Unlike `plain_image`, the face sits in a real scene at a size MediaPipe finds
    (x=174..278, y=68..172): the still to screen end to end.
    """
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    photo = np.asarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    if not cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)):
        raise RuntimeError(f"OpenCV could not write {path}")
    return path


def plain_video(path: Path, frames: int = 30) -> Path:
    """The face panning across `frames` frames of a 128 x 128 mp4v clip, no manifest."""
    face = _face()
    return write_video(path, [np.roll(face, 4 * i, axis=1) for i in range(frames)])


# --------------------------------------------------------------------------- containers


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length including the marker) of each segment up to and with SOS."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    segments: list[tuple[int, int, int]] = []
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise ValueError(f"no JPEG marker at {offset}")
        marker = data[offset + 1]
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        segments.append((marker, offset, length + 2))
        if marker == _JPEG_SOS:
            break
        offset += length + 2
    return segments


def mp4_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level ISO BMFF box (32-bit sizes only)."""
    boxes: list[tuple[bytes, int, int]] = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size < 8:
            raise ValueError(f"box {kind!r} at {offset} has size {size}")
        boxes.append((kind, offset, size))
        offset += size
    return boxes


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset of the data, data length) of each PNG chunk."""
    chunks: list[tuple[bytes, int, int]] = []
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append((kind, offset + 8, length))
        offset += 12 + length
    return chunks


def _pixel_data(data: bytes, mime: str | None) -> tuple[int, int]:
    """(start, end) of the bytes holding the picture itself, clear of any manifest."""
    if mime == "image/jpeg":
        marker, offset, length = jpeg_segments(data)[-1]
        if marker != _JPEG_SOS:
            raise ValueError("JPEG without a scan")
        return offset + length, len(data) - 2  # up to the EOI marker
    if mime == "image/png":
        _, start, length = next(c for c in _png_chunks(data) if c[0] == b"IDAT")
        return start, start + length
    if mime in ("video/mp4", "video/quicktime"):
        _, start, size = next(b for b in mp4_boxes(data) if b[0] == b"mdat")
        return start + 8, start + size
    raise ValueError(f"no pixel data located for {mime}")


def tampered_copy(signed: Path, destination: Path) -> Path:
    """`signed` with one byte of its pixel data changed (after the manifest, which is intact).

    In a JPEG scan the byte is chosen so that no 0xFF (a marker) appears or vanishes:
    the file still parses, only its content hash no longer matches.
    """
    data = bytearray(signed.read_bytes())
    start, end = _pixel_data(bytes(data), sniff(signed).mime)
    middle = (start + end) // 2
    for offset in range(middle, end):
        if data[offset] < 0xFE and data[offset - 1] != 0xFF:
            data[offset] ^= 0x01
            break
    else:
        raise ValueError(f"no byte of {signed.name} can be changed safely")
    destination.write_bytes(bytes(data))
    return destination


def reencoded_copy(signed: Path, destination: Path) -> Path:
    """The pixels of `signed` decoded and encoded again by OpenCV (the way re-uploads lose C2PA)."""
    if sniff(signed).kind == "image":
        picture = cv2.imread(str(signed), cv2.IMREAD_COLOR)
        if picture is None or not cv2.imwrite(str(destination), picture):
            raise RuntimeError(f"could not re-encode {signed}")
        return destination
    capture = cv2.VideoCapture(str(signed))
    frames: list[Frame] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    finally:
        capture.release()
    return write_video(destination, frames)


# --------------------------------------------------------------------------- hostile manifests


def _jumbf_store(payload: bytes) -> bytes:
    """A JUMBF superbox labelled as a C2PA manifest store, holding `payload` as its content."""
    description = b"jumd" + C2PA_STORE_UUID + b"\x03" + b"c2pa\x00"
    description = struct.pack(">I", 4 + len(description)) + description
    body = description + payload
    return struct.pack(">I", 8 + len(body)) + b"jumb" + body


def _app11(box: bytes, sequence: int = 1) -> bytes:
    """One JPEG APP11 segment carrying (part of) a JUMBF box: CI "JP", En 1, Z `sequence`."""
    payload = b"JP" + struct.pack(">HI", 1, sequence) + box
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("one APP11 segment holds at most 65533 bytes")
    return b"\xff\xeb" + struct.pack(">H", len(payload) + 2) + payload


def garbage_manifest(plain_jpeg: Path, destination: Path, size: int = 4096, seed: int = 0) -> Path:
    """`plain_jpeg` with an APP11 manifest store whose content is `size` random bytes."""
    data = plain_jpeg.read_bytes()
    junk = random.Random(seed).randbytes(size)
    destination.write_bytes(data[:2] + _app11(_jumbf_store(junk)) + data[2:])
    return destination


def corrupted_store(signed_jpeg: Path, destination: Path, seed: int = 0) -> Path:
    """A signed JPEG whose first APP11 segment keeps the store's header, then random bytes.

    The store's superbox header and description box (the first 50 bytes of the
    segment: marker, length, CI, En, Z, jumb header, jumd) stay, so c2pa finds a
    manifest store and has to parse the garbage after them.
    """
    data = bytearray(signed_jpeg.read_bytes())
    _, offset, length = next(s for s in jpeg_segments(bytes(data)) if s[0] == _JPEG_APP11)
    keep = 4 + 8 + 8 + 30
    if bytes(data[offset + keep - 5 : offset + keep]) != b"c2pa\x00":
        raise ValueError(f"{signed_jpeg.name}: the first APP11 segment is not a C2PA store")
    data[offset + keep : offset + length] = random.Random(seed).randbytes(length - keep)
    destination.write_bytes(bytes(data))
    return destination


def _sign_with_thumbnail(
    authority: TestAuthority,
    source: Path,
    destination: Path,
    thumbnail: bytes,
    *,
    compress: bool,
) -> Path:
    import c2pa

    mime = sniff(source).mime
    if mime is None:
        raise ValueError(f"{source.name}: C2PA cannot be embedded in this format")
    manifest = {
        "claim_generator_info": [{"name": "deepscreen-tests", "version": "1.0"}],
        "title": destination.name,
        "thumbnail": {"format": "image/jpeg", "identifier": "padding"},
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": IPTC + "trainedAlgorithmicMedia",
                        }
                    ]
                },
            }
        ],
    }
    context = c2pa.Context.from_dict({"core": {"prefer_compress_manifests": compress}})
    builder = c2pa.Builder(json.dumps(manifest), context=context)
    builder.add_resource("padding", io.BytesIO(thumbnail))
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, authority.chain_pem, authority.key_pem, None)
    )
    with source.open("rb") as src, destination.open("w+b") as dst:
        builder.sign(signer, mime, src, dst)
    builder.close()
    context.close()
    return destination


def compressed_manifest(
    authority: TestAuthority, source: Path, destination: Path, decompressed_bytes: int
) -> Path:
    """A small signed file whose compressed manifest store inflates past `decompressed_bytes`."""
    return _sign_with_thumbnail(
        authority, source, destination, bytes(decompressed_bytes), compress=True
    )


def padded_manifest(
    authority: TestAuthority, source: Path, destination: Path, padding_bytes: int
) -> Path:
    """A signed file whose (uncompressed) manifest store carries `padding_bytes` of thumbnail."""
    padding = random.Random(0).randbytes(padding_bytes)
    return _sign_with_thumbnail(authority, source, destination, padding, compress=False)
