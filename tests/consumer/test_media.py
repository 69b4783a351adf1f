"""Fetching the media an upload event names: what is fetched, what is refused, and why.

HTTP tests talk only to a server of their own on 127.0.0.1; host names other than
`localhost` and `127.0.0.1` are answered by a stand-in resolver, never by DNS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from consumer import media
from consumer.media import (
    FetchError,
    FetchPolicy,
    InMemoryFetcher,
    MediaFetcher,
    UriFetcher,
    is_host_allowed,
    is_public_address,
)
from consumer.settings import MediaSettings, load_settings

VIDEO = bytes(range(256)) * 40 + b"\x00\x00\x00\x18ftypmp42"
VIDEO_SHA256 = hashlib.sha256(VIDEO).hexdigest()


def fetch_error(fetcher: MediaFetcher, uri: str) -> FetchError:
    """The error fetching `uri` raises (the test fails if it succeeds)."""
    with pytest.raises(FetchError) as raised, fetcher.fetch(uri):
        pass
    return raised.value


def no_files_in(directory: Path) -> bool:
    return not any(directory.iterdir())


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """The fetchers' temporary directory, so a test can see what is left behind."""
    directory = tmp_path / "scratch"
    directory.mkdir()
    return directory


# file://


@dataclass
class Files:
    root: Path
    outside: Path
    fetcher: UriFetcher

    def uri(self, path: Path | str) -> str:
        return f"file://{path}"


@pytest.fixture
def files(tmp_path: Path, scratch: Path) -> Files:
    root = tmp_path / "media"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "video.mp4").write_bytes(VIDEO)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not yours")
    policy = FetchPolicy(file_roots=(root,), temp_dir=scratch)
    return Files(root, outside, UriFetcher(policy))


def test_a_file_under_a_root_is_fetched_with_its_sha256_size_and_type(files: Files) -> None:
    with files.fetcher.fetch(files.uri(files.root / "clips" / "video.mp4")) as fetched:
        assert fetched.path.read_bytes() == VIDEO
        assert fetched.sha256 == VIDEO_SHA256
        assert fetched.size_bytes == len(VIDEO)
        assert fetched.content_type == "video/mp4"


def test_the_file_is_a_temporary_copy_not_the_original(files: Files, scratch: Path) -> None:
    original = files.root / "clips" / "video.mp4"
    with files.fetcher.fetch(files.uri(original)) as fetched:
        assert fetched.path.parent == scratch
        assert fetched.path != original
    assert original.read_bytes() == VIDEO


def test_the_uri_path_is_percent_decoded(files: Files) -> None:
    (files.root / "my clip.mp4").write_bytes(b"spaced")
    with files.fetcher.fetch(f"file://{files.root}/my%20clip.mp4") as fetched:
        assert fetched.path.read_bytes() == b"spaced"


def test_file_localhost_is_the_local_machine(files: Files) -> None:
    with files.fetcher.fetch(f"file://localhost{files.root}/clips/video.mp4") as fetched:
        assert fetched.sha256 == VIDEO_SHA256


def test_a_file_uri_naming_another_host_is_refused(files: Files) -> None:
    error = fetch_error(files.fetcher, f"file://fileserver{files.root}/clips/video.mp4")
    assert (error.reason, error.retryable) == ("invalid_uri", False)


@pytest.mark.parametrize(
    "escape",
    ["clips/../../secret.mp4", "%2e%2e/secret.mp4", "clips/%2E%2E/%2E%2E/secret.mp4"],
)
def test_dot_dot_out_of_the_root_is_refused(files: Files, escape: str) -> None:
    error = fetch_error(files.fetcher, f"file://{files.root}/{escape}")
    assert (error.reason, error.retryable) == ("outside_file_roots", False)


def test_a_path_outside_every_root_is_refused(files: Files) -> None:
    assert fetch_error(files.fetcher, files.uri(files.outside)).reason == "outside_file_roots"
    assert fetch_error(files.fetcher, "file:///etc/passwd").reason == "outside_file_roots"


def test_a_missing_path_outside_the_roots_is_refused_without_saying_it_is_missing(
    files: Files,
) -> None:
    error = fetch_error(files.fetcher, files.uri(files.outside.parent / "nothing.mp4"))
    assert error.reason == "outside_file_roots"


def test_a_symlink_pointing_outside_the_root_is_refused(files: Files) -> None:
    (files.root / "escape.mp4").symlink_to(files.outside)
    (files.root / "escape-dir").symlink_to(files.outside.parent)
    error = fetch_error(files.fetcher, files.uri(files.root / "escape.mp4"))
    assert (error.reason, error.retryable) == ("outside_file_roots", False)
    via_dir = files.uri(files.root / "escape-dir" / "secret.mp4")
    assert fetch_error(files.fetcher, via_dir).reason == "outside_file_roots"


def test_a_symlink_pointing_inside_the_root_is_followed(files: Files) -> None:
    (files.root / "latest.mp4").symlink_to(files.root / "clips" / "video.mp4")
    with files.fetcher.fetch(files.uri(files.root / "latest.mp4")) as fetched:
        assert fetched.sha256 == VIDEO_SHA256


def test_a_root_that_is_itself_a_symlink_is_resolved(files: Files, tmp_path: Path) -> None:
    link = tmp_path / "media-link"
    link.symlink_to(files.root)
    fetcher = UriFetcher(replace(files.fetcher.policy, file_roots=(link,)))
    with fetcher.fetch(files.uri(link / "clips" / "video.mp4")) as fetched:
        assert fetched.sha256 == VIDEO_SHA256


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Files, directories and links of every kind a path may run through."""
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "file.mp4").write_bytes(b"x")
    (tmp_path / "link-to-file.mp4").symlink_to(tmp_path / "dir" / "sub" / "file.mp4")
    (tmp_path / "link-to-dir").symlink_to(tmp_path / "dir")
    (tmp_path / "relative-link").symlink_to(Path("dir") / "sub")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path


RESOLVED_PATHS = [
    "dir/sub/file.mp4",
    "link-to-file.mp4",
    "link-to-dir/sub/file.mp4",
    "link-to-dir/sub/../sub/file.mp4",
    "relative-link/file.mp4",
    "dir/sub/missing.mp4",
    "link-to-dir/missing/deeper.mp4",
    "dangling.mp4",
    "loop-a",
    "dir/sub/file.mp4/",
    "fifo",
    "dir//sub/./file.mp4",
]


@pytest.mark.parametrize("relative", RESOLVED_PATHS)
def test_a_path_resolves_as_realpath_resolves_it(tree: Path, relative: str) -> None:
    raw = f"{tree}/{relative}"
    try:
        expected = os.path.realpath(raw)
    except (OSError, RuntimeError) as walked:  # a loop, on Pythons that raise for one
        with pytest.raises(type(walked)):
            media.real_path(raw)
        return
    assert media.real_path(raw) == expected


@pytest.mark.skipif(not hasattr(os, "O_PATH"), reason="the kernel resolves paths on Linux")
def test_an_existing_path_is_resolved_by_the_kernel_without_walking_it(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = str(tree.resolve() / "dir" / "sub" / "file.mp4")
    monkeypatch.setattr(os.path, "realpath", lambda raw: pytest.fail(f"walked {raw}"))
    assert media.real_path(f"{tree}/link-to-dir/sub/file.mp4") == expected


@pytest.mark.parametrize(
    "kernel_says",
    ["", "(unreachable)/dir/sub/file.mp4", "{tree}/dir/sub/file.mp4 (deleted)"],
    ids=["no /proc", "outside this root", "unlinked meanwhile"],
)
def test_a_path_the_kernel_cannot_name_is_walked(
    tree: Path, monkeypatch: pytest.MonkeyPatch, kernel_says: str
) -> None:
    expected = str(tree.resolve() / "dir" / "sub" / "file.mp4")
    readlink = os.readlink

    def kernel_readlink(path: str) -> str:
        if not path.startswith("/proc/self/fd/"):
            return readlink(path)  # the walk's own
        if not kernel_says:
            raise FileNotFoundError(path)
        return kernel_says.format(tree=tree)

    monkeypatch.setattr(os, "readlink", kernel_readlink)
    assert media.real_path(f"{tree}/link-to-dir/sub/file.mp4") == expected


def test_a_missing_file_under_a_root_is_not_found(files: Files, scratch: Path) -> None:
    error = fetch_error(files.fetcher, files.uri(files.root / "clips" / "gone.mp4"))
    assert (error.reason, error.retryable) == ("not_found", False)
    assert no_files_in(scratch)


def test_a_directory_is_not_a_regular_file(files: Files) -> None:
    error = fetch_error(files.fetcher, files.uri(files.root / "clips"))
    assert (error.reason, error.retryable) == ("not_a_regular_file", False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_without_blocking(files: Files) -> None:
    os.mkfifo(files.root / "pipe.mp4")
    error = fetch_error(files.fetcher, files.uri(files.root / "pipe.mp4"))
    assert error.reason == "not_a_regular_file"


def test_a_hard_link_under_a_root_to_a_file_outside_it_is_refused(
    files: Files, scratch: Path
) -> None:
    os.link(files.outside, files.root / "linked.mp4")  # the outside file, named inside
    error = fetch_error(files.fetcher, files.uri(files.root / "linked.mp4"))
    assert (error.reason, error.retryable) == ("hard_link", False)
    assert "2 links" in error.detail
    assert no_files_in(scratch)


def test_a_file_with_a_second_link_is_refused_wherever_the_other_name_is(files: Files) -> None:
    # Which name is the "real" one cannot be told: any file with more than one is refused.
    os.link(files.root / "clips" / "video.mp4", files.root / "copy.mp4")
    error = fetch_error(files.fetcher, files.uri(files.root / "clips" / "video.mp4"))
    assert error.reason == "hard_link"


def test_hard_links_are_fetched_when_the_policy_allows_them(files: Files) -> None:
    os.link(files.outside, files.root / "linked.mp4")
    fetcher = UriFetcher(replace(files.fetcher.policy, allow_hard_links=True))
    with fetcher.fetch(files.uri(files.root / "linked.mp4")) as fetched:
        assert fetched.path.read_bytes() == b"not yours"


def test_a_file_with_one_link_is_fetched(files: Files) -> None:
    original = files.root / "clips" / "video.mp4"
    assert original.stat().st_nlink == 1
    with files.fetcher.fetch(files.uri(original)) as fetched:
        assert fetched.sha256 == VIDEO_SHA256


def test_the_link_count_is_read_from_the_opened_file_not_the_path(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name may be relinked between a check by path and the open: only the
    # descriptor's own count tells what is read.
    real_fstat = os.fstat

    def linked_fstat(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        return os.stat_result((*info[:3], 2, *info[4:]))  # st_nlink is field 3

    monkeypatch.setattr(media.os, "fstat", linked_fstat)
    error = fetch_error(files.fetcher, files.uri(files.root / "clips" / "video.mp4"))
    assert error.reason == "hard_link"


def test_hard_links_are_refused_by_default_and_allowed_by_a_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert FetchPolicy().allow_hard_links is False
    assert MediaSettings().fetch_policy().allow_hard_links is False
    monkeypatch.setenv("DEEPSCREEN_MEDIA__ALLOW_HARD_LINKS", "true")
    assert load_settings().media.fetch_policy().allow_hard_links is True


def test_a_file_over_max_bytes_is_too_large_and_nothing_is_left_behind(
    files: Files, scratch: Path
) -> None:
    fetcher = UriFetcher(replace(files.fetcher.policy, max_bytes=len(VIDEO) - 1))
    error = fetch_error(fetcher, files.uri(files.root / "clips" / "video.mp4"))
    assert (error.reason, error.retryable) == ("too_large", False)
    assert no_files_in(scratch)


def test_a_file_of_exactly_max_bytes_is_fetched(files: Files) -> None:
    fetcher = UriFetcher(replace(files.fetcher.policy, max_bytes=len(VIDEO)))
    with fetcher.fetch(files.uri(files.root / "clips" / "video.mp4")) as fetched:
        assert fetched.size_bytes == len(VIDEO)


def test_without_file_roots_every_file_uri_is_refused(files: Files) -> None:
    error = fetch_error(UriFetcher(), files.uri(files.root / "clips" / "video.mp4"))
    assert error.reason == "outside_file_roots"


# The temporary file


def test_the_temporary_file_exists_inside_the_with_and_is_removed_after(files: Files) -> None:
    with files.fetcher.fetch(files.uri(files.root / "clips" / "video.mp4")) as fetched:
        assert fetched.path.is_file()
    assert not fetched.path.exists()


def test_the_temporary_file_is_removed_when_the_with_body_raises(files: Files) -> None:
    seen: list[Path] = []
    with (
        pytest.raises(ZeroDivisionError),
        files.fetcher.fetch(files.uri(files.root / "clips" / "video.mp4")) as fetched,
    ):
        seen.append(fetched.path)
        1 / 0  # noqa: B018
    assert not seen[0].exists()


def test_a_local_file_is_copied_only_when_its_path_is_asked_for(files: Files) -> None:
    """A re-upload served from the cache needs only the hash: no temporary file is made."""
    temp = files.root / "temp"
    temp.mkdir()
    fetcher = UriFetcher(FetchPolicy(file_roots=(files.root,), temp_dir=temp))
    source = files.root / "clips" / "video.mp4"
    with fetcher.fetch(files.uri(source)) as fetched:
        assert fetched.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert list(temp.iterdir()) == []
        assert fetched.path.read_bytes() == source.read_bytes()
        assert fetched.path == fetched.path and len(list(temp.iterdir())) == 1
    assert list(temp.iterdir()) == [] and not fetched.path.exists()
    with fetcher.fetch(files.uri(source)) as unused:
        pass
    with pytest.raises(RuntimeError):
        _ = unused.path  # first asked for outside the `with`


def test_a_local_file_changed_between_hashing_and_copying_is_a_retryable_error(
    files: Files,
) -> None:
    """What is screened is what was hashed: the verdict is cached under that hash."""
    source = files.root / "clips" / "video.mp4"
    with files.fetcher.fetch(files.uri(source)) as fetched:
        source.write_bytes(b"other bytes of the same file")
        with pytest.raises(FetchError) as error:
            _ = fetched.path
    assert (error.value.reason, error.value.retryable) == ("changed_while_fetched", True)


# http:// and https://


class Site:
    """A small HTTP(S) server on 127.0.0.1 whose paths each misbehave in one way."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        site = self

        class Handler(_Handler):
            pass

        Handler.site = site
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    site: Site

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.site.requests.append((self.path, self.headers.get("Host", "")))
        route = self.path.split("?")[0].strip("/").split("/")
        # OSError: the client gave up on us, as some tests mean it to.
        with contextlib.suppress(OSError):
            getattr(self, f"route_{route[0].replace('-', '_')}", self.route_missing)(*route[1:])

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def route_video(self) -> None:
        self.reply(200, VIDEO, Content_Type="video/mp4")

    def route_missing(self, *_: str) -> None:
        self.reply(404)

    def route_unavailable(self) -> None:
        self.reply(503)

    def route_busy(self) -> None:
        self.reply(429, Retry_After="1")

    def route_hop(self, left: str) -> None:
        """`/hop/N` redirects N times before it reaches the video."""
        hops = int(left)
        self.reply(302, Location=f"/hop/{hops - 1}" if hops > 1 else "/video")

    def route_loop(self) -> None:
        self.reply(301, Location="/loop")

    def route_to_localhost(self) -> None:
        self.reply(302, Location=f"http://localhost:{self.site.port}/video")

    def route_to_elsewhere(self) -> None:
        self.reply(302, Location="https://elsewhere.example.test/video")

    def route_to_ftp(self) -> None:
        self.reply(302, Location=f"ftp://127.0.0.1:{self.site.port}/video")

    def route_to_plain_http(self) -> None:
        self.reply(302, Location=f"http://localhost:{self.site.port}/video")

    def route_to_other_port(self) -> None:
        self.reply(307, Location=f"http://127.0.0.1:{self.site.port + 1}/video")

    def route_declared_huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**12))
        self.end_headers()

    def route_endless(self) -> None:
        """A chunked body with no Content-Length that goes on well past any small limit."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 1000
        for _ in range(1000):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def route_truncated(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"only ten b")
        self.close_connection = True

    def route_slow(self) -> None:
        time.sleep(1.0)
        self.reply(200, VIDEO)

    def route_drip(self) -> None:
        """A byte every 50 ms: each read is quick, the whole never ends in time."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(40):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.05)


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site()
    yield server
    server.close()


def local_policy(scratch: Path, **overrides: Any) -> FetchPolicy:
    """Loopback allowed, as only these tests should; small timeouts keep them quick."""
    policy = FetchPolicy(
        allowed_hosts=("127.0.0.1", "localhost"),
        allow_private_addresses=True,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        total_timeout_s=5.0,
        temp_dir=scratch,
    )
    return replace(policy, **overrides)


@pytest.fixture
def fetcher(scratch: Path) -> UriFetcher:
    return UriFetcher(local_policy(scratch))


@pytest.fixture
def resolved_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name resolves to 127.0.0.1 (IPv4 only); returns the names asked for."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)  # the module media uses
    return asked


def test_a_200_is_fetched_with_its_sha256_size_and_content_type(
    site: Site, fetcher: UriFetcher
) -> None:
    with fetcher.fetch(site.url("/video")) as fetched:
        assert fetched.path.read_bytes() == VIDEO
        assert (fetched.sha256, fetched.size_bytes) == (VIDEO_SHA256, len(VIDEO))
        assert fetched.content_type == "video/mp4"
    assert not fetched.path.exists()


def test_the_connection_goes_to_the_checked_address_with_the_host_name_in_host(
    site: Site, scratch: Path, resolved_names: list[str]
) -> None:
    fetcher = UriFetcher(local_policy(scratch, allowed_hosts=("*.example.test",)))
    with fetcher.fetch(site.url("/video", host="videos.example.test")) as fetched:
        assert fetched.sha256 == VIDEO_SHA256
    assert site.requests == [("/video", f"videos.example.test:{site.port}")]
    # Resolved once, for the check; the connection did not resolve the name again.
    assert resolved_names == ["videos.example.test"]


def test_a_404_is_not_retryable_and_leaves_nothing_behind(
    site: Site, fetcher: UriFetcher, scratch: Path
) -> None:
    error = fetch_error(fetcher, site.url("/missing"))
    assert (error.reason, error.retryable) == ("http_404", False)
    assert no_files_in(scratch)


@pytest.mark.parametrize(("path", "reason"), [("/unavailable", "http_503"), ("/busy", "http_429")])
def test_a_503_or_429_is_retryable(site: Site, fetcher: UriFetcher, path: str, reason: str) -> None:
    error = fetch_error(fetcher, site.url(path))
    assert (error.reason, error.retryable) == (reason, True)


def test_redirects_to_the_same_host_are_followed_up_to_max_redirects(
    site: Site, fetcher: UriFetcher
) -> None:
    with fetcher.fetch(site.url("/hop/3")) as fetched:
        assert fetched.sha256 == VIDEO_SHA256
    assert [path for path, _ in site.requests] == ["/hop/3", "/hop/2", "/hop/1", "/video"]


def test_one_redirect_more_than_max_redirects_is_refused(site: Site, fetcher: UriFetcher) -> None:
    error = fetch_error(fetcher, site.url("/hop/4"))
    assert (error.reason, error.retryable) == ("too_many_redirects", False)
    assert fetch_error(fetcher, site.url("/loop")).reason == "too_many_redirects"


def test_a_redirect_to_another_host_is_refused_even_one_that_is_allowed(
    site: Site, fetcher: UriFetcher
) -> None:
    # localhost is in allowed_hosts and is the same machine, but not the same host.
    error = fetch_error(fetcher, site.url("/to-localhost"))
    assert (error.reason, error.retryable) == ("redirect_to_other_host", False)
    assert [path for path, _ in site.requests] == ["/to-localhost"]


@pytest.mark.parametrize("path", ["/to-other-port", "/to-elsewhere", "/to-ftp"])
def test_a_redirect_to_another_port_host_or_scheme_is_refused(
    site: Site, fetcher: UriFetcher, path: str
) -> None:
    assert fetch_error(fetcher, site.url(path)).reason == "redirect_to_other_host"


def test_a_content_length_over_max_bytes_is_refused_before_the_body(
    site: Site, fetcher: UriFetcher, scratch: Path
) -> None:
    started = time.monotonic()
    error = fetch_error(fetcher, site.url("/declared-huge"))
    assert (error.reason, error.retryable) == ("too_large", False)
    assert time.monotonic() - started < 0.5
    assert no_files_in(scratch)


def test_a_streamed_body_is_aborted_once_it_passes_max_bytes_and_nothing_is_left(
    site: Site, scratch: Path
) -> None:
    fetcher = UriFetcher(local_policy(scratch, max_bytes=10_000))
    error = fetch_error(fetcher, site.url("/endless"))
    assert (error.reason, error.retryable) == ("too_large", False)
    assert no_files_in(scratch)


def test_a_chunked_body_within_max_bytes_is_fetched(site: Site, scratch: Path) -> None:
    fetcher = UriFetcher(local_policy(scratch, max_bytes=1_000_000))
    with fetcher.fetch(site.url("/endless")) as fetched:
        assert fetched.size_bytes == 1_000_000
        assert fetched.sha256 == hashlib.sha256(b"x" * 1_000_000).hexdigest()


def test_a_body_shorter_than_its_content_length_is_a_retryable_connection_error(
    site: Site, fetcher: UriFetcher, scratch: Path
) -> None:
    error = fetch_error(fetcher, site.url("/truncated"))
    assert (error.reason, error.retryable) == ("connection_error", True)
    assert no_files_in(scratch)


def test_a_server_slower_than_the_read_timeout_is_a_retryable_timeout(
    site: Site, scratch: Path
) -> None:
    fetcher = UriFetcher(local_policy(scratch, read_timeout_s=0.2))
    started = time.monotonic()
    error = fetch_error(fetcher, site.url("/slow"))
    assert (error.reason, error.retryable) == ("timeout", True)
    assert time.monotonic() - started < 0.9


def test_a_body_dripping_past_the_total_timeout_is_a_retryable_timeout(
    site: Site, scratch: Path
) -> None:
    # Every byte comes well within the read timeout; only the total limit stops it.
    fetcher = UriFetcher(local_policy(scratch, read_timeout_s=0.5, total_timeout_s=0.3))
    started = time.monotonic()
    error = fetch_error(fetcher, site.url("/drip"))
    assert (error.reason, error.retryable) == ("timeout", True)
    assert time.monotonic() - started < 0.9
    assert no_files_in(scratch)


def test_a_refused_connection_is_a_retryable_connection_error(fetcher: UriFetcher) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed, and nothing listens there
    error = fetch_error(fetcher, f"http://127.0.0.1:{port}/video")
    assert (error.reason, error.retryable) == ("connection_error", True)


# Which hosts and addresses


def test_loopback_is_refused_unless_private_addresses_are_allowed(
    site: Site, scratch: Path
) -> None:
    fetcher = UriFetcher(local_policy(scratch, allow_private_addresses=False))
    error = fetch_error(fetcher, site.url("/video"))
    assert (error.reason, error.retryable) == ("address_not_allowed", False)
    assert site.requests == []


def test_a_host_resolving_to_any_private_address_is_refused_before_connecting(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        tcp = (socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        return [
            (socket.AF_INET, *tcp, ("8.8.8.8", port)),
            (socket.AF_INET, *tcp, ("10.0.0.7", port)),
        ]

    def never_connect(self: object) -> None:
        raise AssertionError("connected to a host it should have refused")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(media._PinnedConnection, "connect", never_connect)
    fetcher = UriFetcher(FetchPolicy(allowed_hosts=("videos.example.test",), temp_dir=scratch))
    error = fetch_error(fetcher, "https://videos.example.test/clip.mp4")
    assert (error.reason, error.retryable) == ("address_not_allowed", False)
    assert "10.0.0.7" in error.detail


def test_a_host_not_in_allowed_hosts_is_refused_before_resolving(
    site: Site, scratch: Path, resolved_names: list[str]
) -> None:
    fetcher = UriFetcher(local_policy(scratch, allowed_hosts=("localhost",)))
    error = fetch_error(fetcher, site.url("/video"))
    assert (error.reason, error.retryable) == ("host_not_allowed", False)
    assert resolved_names == []
    assert site.requests == []


def test_without_allowed_hosts_every_http_uri_is_refused(scratch: Path) -> None:
    fetcher = UriFetcher(FetchPolicy(temp_dir=scratch))
    assert fetch_error(fetcher, "https://videos.example.test/a.mp4").reason == "host_not_allowed"


def test_credentials_in_an_http_uri_are_refused(fetcher: UriFetcher) -> None:
    assert fetch_error(fetcher, "http://user:pw@127.0.0.1/video").reason == "invalid_uri"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("videos.example.com", True),
        ("VIDEOS.Example.COM.", True),
        ("cdn.example.com", True),
        ("a.b.example.com", True),
        ("example.com", False),  # the pattern is for names below it
        ("evilexample.com", False),
        ("example.com.evil.net", False),
        ("uploads.example.org", True),
        ("other.example.org", False),
        ("127.0.0.1", False),
    ],
)
def test_allowed_hosts_are_exact_names_or_star_dot_suffixes(host: str, allowed: bool) -> None:
    assert is_host_allowed(host, ("*.example.com", "uploads.example.org")) is allowed


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.31.255.254", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("127.255.0.9", False),
        ("169.254.169.254", False),  # the cloud metadata service
        ("100.64.0.1", False),  # carrier-grade NAT, shared
        ("100.127.255.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("192.0.2.10", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("febf:ffff::1", False),
        ("fc00::1", False),
        ("fd12:3456:789a::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2001:db8::1", False),
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("172.32.0.1", True),
        ("100.128.0.1", True),
        ("::ffff:8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# https://


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def localhost_certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for the name `localhost` only (not for 127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("tls")
    certificate = Certificate(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-keyout", str(certificate.key), "-out", str(certificate.cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate


@pytest.fixture
def tls_site(localhost_certificate: Certificate) -> Iterator[Site]:
    server = Site(tls=localhost_certificate.server_context())
    yield server
    server.close()


def test_https_is_fetched_when_the_certificate_matches_the_host_name(
    tls_site: Site, localhost_certificate: Certificate, scratch: Path, resolved_names: list[str]
) -> None:
    fetcher = UriFetcher(local_policy(scratch), tls_context=localhost_certificate.client_context())
    with fetcher.fetch(tls_site.url("/video", host="localhost")) as fetched:
        assert fetched.sha256 == VIDEO_SHA256
    assert tls_site.requests == [("/video", f"localhost:{tls_site.port}")]


def test_https_checks_the_certificate_against_the_host_name_not_the_address(
    tls_site: Site, localhost_certificate: Certificate, scratch: Path
) -> None:
    fetcher = UriFetcher(local_policy(scratch), tls_context=localhost_certificate.client_context())
    error = fetch_error(fetcher, tls_site.url("/video", host="127.0.0.1"))
    assert (error.reason, error.retryable) == ("tls_error", False)
    assert no_files_in(scratch)


def test_https_refuses_a_certificate_the_trust_store_does_not_know(
    tls_site: Site, scratch: Path, resolved_names: list[str]
) -> None:
    error = fetch_error(UriFetcher(local_policy(scratch)), tls_site.url("/video", host="localhost"))
    assert (error.reason, error.retryable) == ("tls_error", False)
    assert tls_site.requests == []


def test_a_redirect_from_https_down_to_http_is_refused(
    tls_site: Site, localhost_certificate: Certificate, scratch: Path, resolved_names: list[str]
) -> None:
    fetcher = UriFetcher(local_policy(scratch), tls_context=localhost_certificate.client_context())
    error = fetch_error(fetcher, tls_site.url("/to-plain-http", host="localhost"))
    assert (error.reason, error.retryable) == ("redirect_to_other_host", False)


# Other schemes


def test_s3_is_not_supported_by_this_build(fetcher: UriFetcher) -> None:
    error = fetch_error(fetcher, "s3://bucket/video.mp4")
    assert (error.reason, error.retryable) == ("unsupported_scheme", False)
    assert "not supported by this build" in error.detail


@pytest.mark.parametrize("uri", ["ftp://127.0.0.1/video.mp4", "gopher://x/", "video.mp4"])
def test_other_schemes_are_unsupported(fetcher: UriFetcher, uri: str) -> None:
    assert fetch_error(fetcher, uri).reason == "unsupported_scheme"


@pytest.mark.parametrize("uri", ["", "http://127.0.0.1/a b.mp4", "http://127.0.0.1/\r\nX: y"])
def test_uris_with_spaces_or_control_characters_are_invalid(fetcher: UriFetcher, uri: str) -> None:
    assert fetch_error(fetcher, uri).reason == "invalid_uri"


@pytest.mark.parametrize(
    "field", ["max_bytes", "max_redirects", "connect_timeout_s", "read_timeout_s"]
)
def test_a_policy_with_negative_limits_is_refused(field: str) -> None:
    negative: dict[str, Any] = {field: -1}
    with pytest.raises(ValueError):
        FetchPolicy(**negative)


def test_a_fetch_error_survives_pickling_with_its_flag() -> None:
    error = pickle.loads(pickle.dumps(FetchError("timeout", "slow", retryable=True)))
    assert (error.reason, error.detail, error.retryable) == ("timeout", "slow", True)
    assert str(error) == "timeout: slow"


# The in-memory twin


def test_the_in_memory_fetcher_serves_bytes_as_a_temporary_file(scratch: Path) -> None:
    fetcher: MediaFetcher = InMemoryFetcher({"s3://b/v.mp4": VIDEO}, temp_dir=scratch)
    with fetcher.fetch("s3://b/v.mp4") as fetched:
        assert fetched.path.read_bytes() == VIDEO
        assert (fetched.sha256, fetched.size_bytes) == (VIDEO_SHA256, len(VIDEO))
    assert no_files_in(scratch)


def test_the_in_memory_fetcher_raises_the_configured_error_each_time(scratch: Path) -> None:
    configured = FetchError("http_503", "down", retryable=True)
    fetcher = InMemoryFetcher({"https://x/v.mp4": configured}, temp_dir=scratch)
    for _ in range(2):
        error = fetch_error(fetcher, "https://x/v.mp4")
        assert (error.reason, error.detail, error.retryable) == ("http_503", "down", True)
    assert no_files_in(scratch)


def test_the_in_memory_fetcher_does_not_find_an_unknown_uri(scratch: Path) -> None:
    error = fetch_error(InMemoryFetcher({}, temp_dir=scratch), "https://x/unknown.mp4")
    assert (error.reason, error.retryable) == ("not_found", False)


def test_the_in_memory_fetcher_records_every_uri_asked_for(scratch: Path) -> None:
    fetcher = InMemoryFetcher({"a": b"1", "b": FetchError("timeout", "", retryable=True)})
    with fetcher.fetch("a"):
        pass
    for uri in ("b", "c"):
        with pytest.raises(FetchError), fetcher.fetch(uri):
            pass
    assert fetcher.fetched == ["a", "b", "c"]


def test_the_in_memory_fetcher_removes_its_file_when_the_with_body_raises(scratch: Path) -> None:
    fetcher = InMemoryFetcher({"a": b"video"}, temp_dir=scratch)
    with pytest.raises(RuntimeError), fetcher.fetch("a"):
        raise RuntimeError("screening failed")
    assert no_files_in(scratch)
