"""Fetch the video an upload event points at, within limits we set, into a temporary file.

The URI in an upload event comes from outside, so fetching it is an attack surface: a
`file://` URI could name any file the service can read, and an `http://` URI could make
the service call an internal address (SSRF) or stream without end. Every fetch here is
therefore checked against a `FetchPolicy` (which roots, which hosts, which addresses, how
many bytes, how long) and either yields a temporary file with its SHA-256, or raises a
`FetchError` whose `reason` is a stable code and whose `retryable` tells the consumer
whether to try the message again or dead-letter it.

The temporary file lives only inside the `with`: it is removed on exit, also when the
fetch itself fails half way. A local file is hashed where it lies and copied only when
`path` is first asked for (a re-upload served from the verdict cache never is); the
copy is checked against the hash, so what is screened is what was hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import mimetypes
import os
import re
import socket
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, overload
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from detector.config import MediaLimits

__all__ = [
    "FetchError",
    "FetchPolicy",
    "FetchedMedia",
    "InMemoryFetcher",
    "MediaFetcher",
    "UriFetcher",
    "is_host_allowed",
    "is_public_address",
]

_CHUNK = 64 * 1024
_FILE_CHUNK = 1024 * 1024  # a local file: fewer, larger reads (hashing releases the GIL)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "deepscreen-fetcher/1"
_SPACE_OR_CONTROL = re.compile("[\x00-\x20\x7f]")  # not allowed anywhere in a URI

# Ranges that are not the public Internet, listed here rather than left to `ipaddress`
# flags alone, whose answers changed between Python patch releases.
_BLOCKED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this" network, unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT, shared address space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",
        "2001::/23",  # IETF protocol assignments, Teredo included
        "2001:db8::/32",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """What a fetch may touch; the defaults refuse every source until one is configured.

    These defaults are the fetch's only ones: `MediaSettings` takes its defaults from
    them, and the byte limit is the detector's (`MediaLimits.max_bytes`).
    """

    file_roots: tuple[Path, ...] = ()
    # Exact hostnames, or `*.example.com` for any name below example.com (not itself).
    allowed_hosts: tuple[str, ...] = ()
    allow_private_addresses: bool = False
    # A regular file with more than one hard link under a file root may be another name
    # of a file outside the roots (no resolving can tell), so it is refused unless allowed.
    allow_hard_links: bool = False
    max_bytes: int = MediaLimits.max_bytes
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 300.0
    max_redirects: int = 3
    temp_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.max_redirects < 0:
            raise ValueError("max_bytes and max_redirects must not be negative")
        if min(self.connect_timeout_s, self.read_timeout_s, self.total_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")


class FetchError(Exception):
    """The media could not be fetched; `reason` is a stable snake_case code.

    `retryable` is True only where trying again later may succeed (timeouts, dropped
    connections, HTTP 5xx and 429); everything else fails the same way again.
    """

    def __init__(self, reason: str, detail: str, *, retryable: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only flag would otherwise be lost when the error crosses processes.
        return (_rebuild_fetch_error, (self.reason, self.detail, self.retryable))


def _rebuild_fetch_error(reason: str, detail: str, retryable: bool) -> FetchError:
    return FetchError(reason, detail, retryable=retryable)


@dataclass(frozen=True)
class FetchedMedia:
    """A fetched video: its hash, and a temporary file that exists only inside the fetch's
    `with` (`path`; made on first use for a local file, which may raise `FetchError`)."""

    sha256: str
    size_bytes: int
    content_type: str | None
    file: Callable[[], Path] = field(repr=False)

    @property
    def path(self) -> Path:
        return self.file()


class MediaFetcher(Protocol):
    def fetch(self, uri: str) -> contextlib.AbstractContextManager[FetchedMedia]:
        """The media at `uri` in a temporary file, removed when the `with` exits."""
        ...


def is_public_address(
    address: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> bool:
    """Whether `address` is on the public Internet (not loopback, private, link-local...).

    IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that address,
    so `::ffff:127.0.0.1` is loopback.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:  # `fe80::1%eth0`: the zone does not change the range
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    if any(ip.version == network.version and ip in network for network in _BLOCKED_NETWORKS):
        return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def is_host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether `host` is one of `patterns`: exact names, or `*.suffix` for names below it."""
    host = _normal_host(host)
    for pattern in patterns:
        pattern = _normal_host(pattern)
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern or _same_ip(host, pattern):
            return True
    return False


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


class _Sink:
    """The temporary file being written, hashed and counted as the bytes arrive."""

    def __init__(self, file: BinaryIO, path: Path, max_bytes: int) -> None:
        self._file = file
        self._path = path
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self._max_bytes:
            raise FetchError(
                "too_large", f"more than {self._max_bytes} bytes (limit), fetch aborted"
            )
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise FetchError("temp_storage_error", str(exc), retryable=True) from exc
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self, content_type: str | None) -> FetchedMedia:
        try:
            self._file.close()
        except OSError as exc:
            raise FetchError("temp_storage_error", str(exc), retryable=True) from exc
        path = self._path
        return FetchedMedia(self._hash.hexdigest(), self.size, content_type, lambda: path)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def _temporary_media(temp_dir: Path | None, max_bytes: int) -> Iterator[_Sink]:
    """A sink over a fresh temporary file that is removed however the block ends."""
    try:
        fd, name = tempfile.mkstemp(prefix="deepscreen-", suffix=".media", dir=temp_dir)
    except OSError as exc:
        raise FetchError("temp_storage_error", str(exc), retryable=True) from exc
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield _Sink(file, path, max_bytes)
    finally:
        path.unlink(missing_ok=True)


class InMemoryFetcher:
    """The twin of `UriFetcher` for tests: media and failures come from a dict."""

    def __init__(
        self,
        media: Mapping[str, bytes | FetchError],
        *,
        temp_dir: Path | None = None,
        content_type: str | None = None,
    ) -> None:
        self._media = dict(media)
        self._temp_dir = temp_dir
        self._content_type = content_type
        self.fetched: list[str] = []

    @contextlib.contextmanager
    def fetch(self, uri: str) -> Iterator[FetchedMedia]:
        self.fetched.append(uri)
        entry = self._media.get(uri)
        if entry is None:
            raise FetchError("not_found", f"no media configured for {uri}")
        if isinstance(entry, FetchError):
            # A fresh error each time, so tracebacks of earlier fetches do not pile up.
            raise FetchError(entry.reason, entry.detail, retryable=entry.retryable)
        with _temporary_media(self._temp_dir, max_bytes=len(entry)) as sink:
            sink.write(entry)
            yield sink.finish(self._content_type)


class UriFetcher:
    """Fetches `file://`, `http://` and `https://` URIs under a `FetchPolicy`.

    `tls_context` replaces the system trust store, for a private CA; hostnames are
    verified either way.
    """

    def __init__(
        self, policy: FetchPolicy | None = None, *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._tls = tls_context
        # Resolved once: resolving is a system call a path component, on every fetch.
        self._roots = [root.resolve() for root in self.policy.file_roots]
        self._root_prefixes = [(str(r), str(r).rstrip(os.sep) + os.sep) for r in self._roots]

    @contextlib.contextmanager
    def fetch(self, uri: str) -> Iterator[FetchedMedia]:
        parts = _split(uri)
        if parts.scheme == "file":
            path = self._checked_file_path(parts)
            fd = self._open_file(path)
            open_ = [True]
            try:
                with contextlib.ExitStack() as later:
                    yield self._hash_file(path, fd, later, open_)
            finally:
                open_.clear()
                os.close(fd)
        elif parts.scheme in _DEFAULT_PORTS:
            with _temporary_media(self.policy.temp_dir, self.policy.max_bytes) as sink:
                yield sink.finish(self._download(uri, sink))
        elif parts.scheme == "s3":
            raise FetchError(
                "unsupported_scheme", "s3:// is not supported by this build (no S3 client)"
            )
        else:
            raise FetchError("unsupported_scheme", f"scheme {parts.scheme!r} is not supported")

    # file://

    def _checked_file_path(self, parts: SplitResult) -> str:
        if parts.netloc not in ("", "localhost"):
            raise FetchError("invalid_uri", f"a file URI must not name a host ({parts.netloc})")
        try:
            raw = unquote(parts.path, errors="strict")
        except UnicodeDecodeError as exc:
            raise FetchError("invalid_uri", "the path is not UTF-8 once decoded") from exc
        if "\x00" in raw or not raw.startswith("/"):
            raise FetchError("invalid_uri", "a file URI needs an absolute path")
        if not self._roots:
            raise FetchError("outside_file_roots", "no file roots are configured")
        try:
            # Judged before existence, so a refused path does not reveal whether it exists;
            # opening it (`_open_file`) refuses a symlink swapped in since.
            path = real_path(raw)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise FetchError("file_unreadable", f"{raw}: {exc}") from exc
        if not any(path == root or path.startswith(prefix) for root, prefix in self._root_prefixes):
            raise FetchError("outside_file_roots", f"{raw} is outside the file roots")
        return path

    def _open_file(self, path: str) -> int:
        """An open descriptor of the regular file at `path`, within the policy's limits."""
        # No following a symlink swapped in since resolving, and no blocking on a FIFO.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError as exc:
            raise FetchError("not_found", f"{path} does not exist") from exc
        except PermissionError as exc:
            raise FetchError("permission_denied", f"{path} cannot be read") from exc
        except OSError as exc:
            raise FetchError("file_unreadable", f"{path}: {exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FetchError("not_a_regular_file", f"{path} is not a regular file")
            # The open file's own count (not the path's): the name may have been relinked.
            if info.st_nlink > 1 and not self.policy.allow_hard_links:
                raise FetchError(
                    "hard_link",
                    f"{path} has {info.st_nlink} links (hard links are refused: another "
                    "name may lie outside the file roots; allow_hard_links allows them)",
                )
            if info.st_size > self.policy.max_bytes:
                raise FetchError(
                    "too_large", f"{info.st_size} bytes > limit {self.policy.max_bytes}"
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _hash_file(
        self, path: str, fd: int, later: contextlib.ExitStack, open_: list[bool]
    ) -> FetchedMedia:
        """The open file's hash; its temporary copy is made (in `later`) only when asked for,
        while `open_` (the fetch's `with`) is."""
        digest = hashlib.sha256()
        size = self._read_file(path, fd, digest.update)
        sha256 = digest.hexdigest()
        copied: list[Path] = []

        def copy() -> Path:
            if not copied:
                if not open_:
                    raise RuntimeError("a fetched file is there only inside the fetch's `with`")
                sink = later.enter_context(
                    _temporary_media(self.policy.temp_dir, self.policy.max_bytes)
                )
                self._read_file(path, fd, sink.write)
                if sink.sha256 != sha256:
                    raise FetchError(
                        "changed_while_fetched",
                        f"{path} changed between hashing and copying it",
                        retryable=True,
                    )
                copied.append(sink.finish(None).path)
            return copied[0]

        return FetchedMedia(sha256, size, mimetypes.guess_type(path)[0], copy)

    def _read_file(self, path: str, fd: int, take: Callable[[bytes], object]) -> int:
        """Every byte of the open file from its start, given to `take`; the byte count."""
        size = 0
        try:
            while chunk := os.pread(fd, _FILE_CHUNK, size):
                size += len(chunk)
                if size > self.policy.max_bytes:  # the file may grow while we read it
                    raise FetchError(
                        "too_large", f"more than {self.policy.max_bytes} bytes (limit), aborted"
                    )
                take(chunk)
        except OSError as exc:
            raise FetchError("file_unreadable", f"{path}: {exc}") from exc
        return size

    # http:// and https://

    def _download(self, uri: str, sink: _Sink) -> str | None:
        deadline = _Deadline(self.policy.total_timeout_s)
        try:
            return self._follow(uri, sink, deadline)
        except FetchError:
            raise
        except Exception as exc:
            raise _http_failure(exc, deadline) from exc
        finally:
            deadline.cancel()

    def _follow(self, uri: str, sink: _Sink, deadline: _Deadline) -> str | None:
        target = self._allowed(_parse_target(uri))
        redirects = 0
        while True:
            response, connection = self._request(target, deadline)
            try:
                location = response.getheader("Location")
                if response.status in _REDIRECTS and location:
                    next_uri = urljoin(target.uri, location)
                    next_target = _parse_target(next_uri, redirect=True)
                    if next_target is None or not target.may_redirect_to(next_target):
                        raise FetchError(
                            "redirect_to_other_host",
                            f"{target.uri} redirects to {next_uri}, another origin",
                        )
                    redirects += 1
                    if redirects > self.policy.max_redirects:
                        raise FetchError(
                            "too_many_redirects",
                            f"more than {self.policy.max_redirects} redirects from {uri}",
                        )
                    target = self._allowed(next_target)  # every hop is checked again
                    continue
                if not 200 <= response.status < 300:
                    status = response.status
                    raise FetchError(
                        f"http_{status}",
                        f"{target.uri} answered {status} {response.reason}",
                        retryable=status == 429 or 500 <= status < 600,
                    )
                self._stream(response, sink, deadline)
                return response.getheader("Content-Type")
            finally:
                deadline.detach()
                connection.close()

    def _allowed(self, target: _Target) -> _Target:
        if not is_host_allowed(target.host, self.policy.allowed_hosts):
            raise FetchError("host_not_allowed", f"{target.host} is not an allowed host")
        return target

    def _request(
        self, target: _Target, deadline: _Deadline
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        addresses = self._checked_addresses(target)
        tls = None
        if target.scheme == "https":
            tls = self._tls or ssl.create_default_context()
        connection = _PinnedConnection(target, addresses, self.policy, deadline, tls)
        try:
            connection.request(
                "GET",
                target.request_path,
                headers={
                    "User-Agent": _USER_AGENT,
                    "Accept": "*/*",
                    "Accept-Encoding": "identity",  # the limit counts the bytes we store
                    "Connection": "close",
                },
            )
            return connection.getresponse(), connection
        except BaseException:
            deadline.detach()
            connection.close()
            raise

    def _checked_addresses(self, target: _Target) -> list[_AddressInfo]:
        """The host's addresses, all of them allowed, or a refusal if any is not."""
        try:
            infos = socket.getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except socket.gaierror as exc:
            raise FetchError("name_not_resolved", f"{target.host}: {exc}", retryable=True) from exc
        if not infos:
            raise FetchError("name_not_resolved", f"{target.host}: no address", retryable=True)
        if not self.policy.allow_private_addresses:
            # Any one bad address is enough to refuse: we must not be steered to it.
            for *_, sockaddr in infos:
                if not is_public_address(str(sockaddr[0])):
                    raise FetchError(
                        "address_not_allowed",
                        f"{target.host} resolves to {sockaddr[0]}, not a public address",
                    )
        return [(family, kind, proto, sockaddr) for family, kind, proto, _, sockaddr in infos]

    def _stream(self, response: http.client.HTTPResponse, sink: _Sink, deadline: _Deadline) -> None:
        declared = response.getheader("Content-Length")
        length: int | None = None
        if declared is not None and not response.chunked:
            try:
                length = int(declared)
            except ValueError as exc:
                raise FetchError("bad_response", f"Content-Length {declared!r}") from exc
            if length > self.policy.max_bytes:
                raise FetchError(
                    "too_large", f"Content-Length {length} > limit {self.policy.max_bytes}"
                )
        while chunk := response.read1(_CHUNK):
            sink.write(chunk)
        if deadline.expired:  # the watchdog cut the socket: what we read is not the end
            raise _timeout(self.policy.total_timeout_s)
        if length is not None and sink.size != length:
            raise FetchError(
                "connection_error",
                f"the body ended after {sink.size} of {length} bytes",
                retryable=True,
            )


_AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, tuple[object, ...]]


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    request_path: str
    uri: str

    def may_redirect_to(self, other: _Target) -> bool:
        """Same host and port, and the same scheme or http upgraded to https."""
        if other.host != self.host:
            return False
        if other.scheme == self.scheme:
            return other.port == self.port
        return (self.scheme, other.scheme) == ("http", "https") and other.port in (
            self.port,
            _DEFAULT_PORTS["https"],
        )


class _Deadline:
    """The total wall-clock limit of one fetch.

    Per-read timeouts alone let a server that sends a byte now and then hold a fetch for
    ever, so a timer shuts the current socket down when the time is up; the blocked read
    then returns and `expired` tells why.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self._at - time.monotonic()

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            expired = self.expired
        if expired:
            self._shutdown(sock)

    def detach(self) -> None:
        # Under the lock, so the timer never touches a socket after it is closed.
        with self._lock:
            self._socket = None

    def cancel(self) -> None:
        self._timer.cancel()
        self.detach()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                self._shutdown(self._socket)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        # The plain socket's shutdown, also for TLS: it cuts the descriptor without
        # touching the TLS state another thread is reading through.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _PinnedConnection(http.client.HTTPConnection):
    """A connection to an address already checked, never re-resolving the host name.

    Resolving twice would let a DNS server answer a public address to the check and a
    private one to the connect (DNS rebinding). The Host header, SNI and certificate
    check still use the host name.
    """

    def __init__(
        self,
        target: _Target,
        addresses: Sequence[_AddressInfo],
        policy: FetchPolicy,
        deadline: _Deadline,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(target.host, target.port, timeout=policy.read_timeout_s)
        self.default_port = _DEFAULT_PORTS[target.scheme]  # Host header omits it then
        self._addresses = addresses
        self._policy = policy
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        sock = self._connect_any()
        self._deadline.attach(sock)
        sock.settimeout(self._policy.read_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        if self._tls is not None:
            tls_sock = self._tls.wrap_socket(
                sock, server_hostname=self.host, do_handshake_on_connect=False
            )
            self.sock = tls_sock
            self._deadline.attach(tls_sock)  # wrapping took the descriptor over
            tls_sock.do_handshake()

    def _connect_any(self) -> socket.socket:
        error: OSError = ConnectionError("no address to connect to")
        for family, kind, proto, sockaddr in self._addresses:
            timeout = min(self._policy.connect_timeout_s, self._deadline.remaining())
            if timeout <= 0:
                raise TimeoutError("the total time ran out before connecting")
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error


@overload
def _parse_target(uri: str) -> _Target: ...
@overload
def _parse_target(uri: str, *, redirect: bool) -> _Target | None: ...
def _parse_target(uri: str, *, redirect: bool = False) -> _Target | None:
    """The parts of an http(s) URI we use; None for a redirect to another scheme."""
    parts = _split(uri)
    if parts.scheme not in _DEFAULT_PORTS:
        if redirect:
            return None
        raise FetchError("unsupported_scheme", f"scheme {parts.scheme!r} is not supported")
    if parts.username is not None or parts.password is not None:
        raise FetchError("invalid_uri", "credentials in the URI are not accepted")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        host = _normal_host(parts.hostname or "")
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise FetchError("invalid_uri", f"bad host or port in {uri}") from exc
    if not host:
        raise FetchError("invalid_uri", f"no host in {uri}")
    request_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port, request_path, uri)


_O_PATH = getattr(os, "O_PATH", 0)  # Linux: an open that only resolves, reads nothing


def real_path(raw: str) -> str:
    """`os.path.realpath(raw)`, asked of the kernel where it can say.

    The Python walk makes a system call a component, each letting the GIL go, which on the
    cache-hit path costs thread switches while the workers wait for it: an `O_PATH` open
    resolves every component in one call and `/proc/self/fd` names what it reached. A path
    the kernel cannot resolve (missing, no search permission, a loop) or name (no `/proc`,
    unlinked meanwhile) is walked as before, so the result, and what a refusal reveals,
    stay the same.
    """
    named = _kernel_path(raw) if _O_PATH else ""
    # Not a path of this root: "(unreachable)/…", or " (deleted)" once unlinked.
    if named.startswith("/") and not named.endswith(" (deleted)"):
        return named
    return os.path.realpath(raw)


def _kernel_path(raw: str) -> str:
    """What the kernel names the file `raw` leads to, or "" where it cannot say."""
    try:
        fd = os.open(raw, _O_PATH | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")  # noqa: PTH115 (a str, no Path made)
    except OSError:
        return ""
    finally:
        os.close(fd)


def _split(uri: str) -> SplitResult:
    if not uri or _SPACE_OR_CONTROL.search(uri):
        raise FetchError("invalid_uri", f"empty, or spaces or control characters in {uri!r}")
    try:
        return urlsplit(uri)
    except ValueError as exc:
        raise FetchError("invalid_uri", f"{uri!r}: {exc}") from exc


def _timeout(seconds: float) -> FetchError:
    return FetchError("timeout", f"the fetch took longer than {seconds} s", retryable=True)


def _http_failure(exc: Exception, deadline: _Deadline) -> FetchError:
    """The `FetchError` for what went wrong talking HTTP."""
    if deadline.expired:
        return _timeout(deadline.seconds)
    if isinstance(exc, TimeoutError):
        return FetchError("timeout", f"no answer in time: {exc}", retryable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FetchError("tls_error", exc.verify_message or str(exc))
    if isinstance(exc, OSError):  # refused, reset, unreachable, TLS dropped half way
        return FetchError("connection_error", f"{type(exc).__name__}: {exc}", retryable=True)
    if isinstance(exc, http.client.IncompleteRead):
        return FetchError("connection_error", "the body ended early", retryable=True)
    if isinstance(exc, http.client.InvalidURL):
        return FetchError("invalid_uri", str(exc))
    if isinstance(exc, http.client.HTTPException):
        return FetchError("bad_response", f"{type(exc).__name__}: {exc}")
    return FetchError("fetch_failed", f"{type(exc).__name__}: {exc}")
