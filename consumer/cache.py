"""Verdicts by content, so a re-upload of the same bytes is never screened twice.

Key: verdict schema version + model sha256 + content sha256 (a new model
re-screens everything, and a new verdict shape never reads entries of the old
one). Values are verdict JSON with a TTL. A `SET NX EX` claim marks content as
being screened, so two replicas that receive the same bytes at once do not both
decode them: the second waits for the first one's verdict.

An entry that does not parse (written by another version, or corrupted) is a
miss: it is counted (`deepscreen_cache_corrupt_entries`), logged the first time,
and deleted, so the next verdict for those bytes takes its place.

Without Redis the cache lives in process, bounded in entries and in time
(`cachetools.TTLCache`), claims included.

Redis is an optimisation, never a dependency: every call has a short timeout,
and after a failure the cache reports itself down (metric, one log line) and
is skipped for `retry_after_s`, after which it is tried again.

Beside each verdict the cache keeps the content's perceptual hashes
(`put_hashes`, key: hashing fingerprint + content sha256, the verdicts' TTL),
not keyed by model: hashes do not depend on it. They serve two ends:

- a moderator's ruling on the content is made from them (`consumer.decisions`)
  without fetching and decoding the content again;
- moderators' rulings never leave a stale verdict in the cache. A verdict is
  cached with the known-fakes finding of the moment it was screened; a later
  ruling (on these bytes, or on a re-encoded copy of them) would make it
  stale. So a verdict served from the cache has its finding redone from these
  hashes against the replica's bank as it is now (`Detector.refresh`), and a
  ruling on these very bytes applies even without hashes (its bank entry is
  keyed by the content's sha256). Every replica tails the bank topic, so the
  moment a ruling reaches a replica's bank, none of its cached verdicts can
  contradict it, without deleting or versioning a single cache entry (a
  deletion would race with a screening in flight on another replica, which
  would put the stale verdict back).

A cache hit costs two lookups (`get_with_hashes`: one round trip to Redis) and
no parsing when the same entries were parsed a moment ago: entries never
change once written (a verdict of these bytes under this model and policy,
hashes under this hashing), so a re-upload burst parses them once (`_Parsed`,
bounded by the bytes it holds).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import redis
import structlog
from cachetools import TTLCache

from consumer.metrics import Metrics
from consumer.settings import RedisSettings
from detector.bank_file import InvalidBankFile, hashes_to_record, record_to_hashes
from detector.hashing import VideoHashes
from schemas.bank import VideoHashesRecord
from schemas.verdict import VERDICT_SCHEMA_VERSION, ScreeningVerdict

log = structlog.get_logger(__name__)

_DEFAULTS = RedisSettings()  # the defaults live in the settings; these are for tests

_DELETE_IF_EQUAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class CacheKey(NamedTuple):
    model_sha256: str
    content_sha256: str
    schema_version: int = VERDICT_SCHEMA_VERSION
    policy: str = ""  # `DetectorConfig.policy_fingerprint()`: actions and trust list


class HashesKey(NamedTuple):
    """Where a content's hashes are kept: `hashing_fingerprint(config)` + content sha256."""

    hashing: str
    content_sha256: str


class VerdictCache(Protocol):
    def get(self, key: CacheKey) -> ScreeningVerdict | None:
        """The cached verdict; None when there is none or it does not parse."""
        ...

    def put(self, key: CacheKey, verdict: ScreeningVerdict) -> None: ...

    def get_hashes(self, key: HashesKey) -> VideoHashes | None:
        """The content's perceptual hashes; None when there are none or they do not parse."""
        ...

    def get_with_hashes(
        self, key: CacheKey, hashes_key: HashesKey
    ) -> tuple[ScreeningVerdict | None, VideoHashes | None]:
        """`get(key)` and `get_hashes(hashes_key)` at once (a cache hit's two lookups)."""
        ...

    def put_hashes(self, key: HashesKey, hashes: VideoHashes) -> None: ...

    def claim(self, key: CacheKey, owner: str) -> bool:
        """True when this caller should screen the content (nobody else is)."""
        ...

    def release(self, key: CacheKey, owner: str) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class _Parsed:
    """What recently read entries parsed to, by their raw value (least recently used go first).

    Sound because an entry's value never changes meaning: equal bytes under the
    same kind parse to an equal (immutable) object.
    """

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._parsed: OrderedDict[tuple[str, str | bytes], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, kind: str, raw: str | bytes) -> object | None:
        with self._lock:
            parsed = self._parsed.get((kind, raw))
            if parsed is not None:
                self._parsed.move_to_end((kind, raw))
            return parsed

    def put(self, kind: str, raw: str | bytes, parsed: object) -> None:
        if len(raw) > self._max_bytes // 4:
            return
        with self._lock:
            if (kind, raw) in self._parsed:
                return
            self._parsed[(kind, raw)] = parsed
            self._bytes += len(raw)
            while self._bytes > self._max_bytes:
                (_, old), _ = self._parsed.popitem(last=False)
                self._bytes -= len(old)


class _Unparsable:
    """Counts entries that no longer parse; logs the first one (the metric counts the rest)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._logged = False

    def parse(self, raw: str | bytes, key: CacheKey, parsed: _Parsed) -> ScreeningVerdict | None:
        known = parsed.get("verdict", raw)
        if isinstance(known, ScreeningVerdict):
            return known
        try:
            verdict = ScreeningVerdict.model_validate_json(raw)
        except ValueError as error:  # pydantic's ValidationError, bytes that are not UTF-8
            self._count(error, key)
            return None
        parsed.put("verdict", raw, verdict)
        return verdict

    def _count(self, error: ValueError, key: CacheKey) -> None:
        if self._metrics:
            self._metrics.cache_corrupt.inc()
        with self._lock:
            first, self._logged = not self._logged, True
        (log.warning if first else log.debug)(
            "cache_entry_unreadable",
            error=f"{type(error).__name__}: {str(error)[:300]}",
            schema_version=key.schema_version,
            model_sha256=key.model_sha256,
            content_sha256=key.content_sha256,
            effect="a miss: screened again and replaced; further ones are only counted",
        )


def _hashes_json(key: HashesKey, hashes: VideoHashes) -> str:
    return hashes_to_record(hashes, key.hashing).model_dump_json()


def _parse_hashes(raw: str | bytes, key: HashesKey, parsed: _Parsed) -> VideoHashes | None:
    """The hashes in `raw`, or None (logged) when they do not parse or are another hashing's."""
    known = parsed.get(key.hashing, raw)
    if isinstance(known, VideoHashes):
        return known
    try:
        record = VideoHashesRecord.model_validate_json(raw)
        if record.hashing != key.hashing:
            raise ValueError(f"hashed under {record.hashing}, not {key.hashing}")
        hashes = record_to_hashes(record)
        parsed.put(key.hashing, raw, hashes)
        return hashes
    except (ValueError, InvalidBankFile) as error:
        log.warning(
            "cached_hashes_unreadable",
            content_sha256=key.content_sha256,
            error=f"{type(error).__name__}: {str(error)[:300]}",
            effect="a miss: the content is hashed again when needed",
        )
        return None


class InMemoryVerdictCache:
    """`VerdictCache` in process: the twin for unit tests and the no-Redis default.

    Bounded like Redis would be: at most `max_entries` verdicts (least recently
    used go first), each for `verdict_ttl_s`; claims lapse after `claim_ttl_s`.
    """

    def __init__(
        self,
        *,
        max_entries: int = _DEFAULTS.memory_max_entries,
        verdict_ttl_s: float = _DEFAULTS.verdict_ttl_s,
        claim_ttl_s: float = _DEFAULTS.claim_ttl_s,
        metrics: Metrics | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._verdicts: TTLCache[CacheKey, str | bytes] = TTLCache(
            maxsize=max_entries, ttl=verdict_ttl_s, timer=timer
        )
        self._claims: TTLCache[CacheKey, str] = TTLCache(
            maxsize=max_entries, ttl=claim_ttl_s, timer=timer
        )
        self._hashes: TTLCache[HashesKey, str | bytes] = TTLCache(
            maxsize=max_entries, ttl=verdict_ttl_s, timer=timer
        )
        self._unparsable = _Unparsable(metrics)
        self._parsed = _Parsed()  # verdicts and hashes

    def get(self, key: CacheKey) -> ScreeningVerdict | None:
        with self._lock:
            raw = self._verdicts.get(key)
        if raw is None:
            return None
        verdict = self._unparsable.parse(raw, key, self._parsed)
        if verdict is None:
            with self._lock:
                if self._verdicts.get(key) == raw:  # unless replaced meanwhile
                    del self._verdicts[key]
        return verdict

    def put(self, key: CacheKey, verdict: ScreeningVerdict) -> None:
        self.put_raw(key, verdict.model_dump_json())

    def put_raw(self, key: CacheKey, raw: str | bytes) -> None:
        """Store `raw` as it is: what another version, or a corruption, leaves (tests)."""
        with self._lock:
            self._verdicts[key] = raw

    def get_hashes(self, key: HashesKey) -> VideoHashes | None:
        with self._lock:
            raw = self._hashes.get(key)
        if raw is None:
            return None
        hashes = _parse_hashes(raw, key, self._parsed)
        if hashes is None:
            with self._lock:
                if self._hashes.get(key) == raw:
                    del self._hashes[key]
        return hashes

    def get_with_hashes(
        self, key: CacheKey, hashes_key: HashesKey
    ) -> tuple[ScreeningVerdict | None, VideoHashes | None]:
        return self.get(key), self.get_hashes(hashes_key)

    def put_hashes(self, key: HashesKey, hashes: VideoHashes) -> None:
        self.put_hashes_raw(key, _hashes_json(key, hashes))

    def put_hashes_raw(self, key: HashesKey, raw: str | bytes) -> None:
        """Store `raw` as it is (tests: what a corruption leaves)."""
        with self._lock:
            self._hashes[key] = raw

    def claim(self, key: CacheKey, owner: str) -> bool:
        with self._lock:
            return self._claims.setdefault(key, owner) == owner

    def release(self, key: CacheKey, owner: str) -> None:
        with self._lock:
            if self._claims.get(key) == owner:
                del self._claims[key]

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisVerdictCache:
    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        prefix: str = _DEFAULTS.key_prefix,
        verdict_ttl_s: int = _DEFAULTS.verdict_ttl_s,
        claim_ttl_s: int = _DEFAULTS.claim_ttl_s,
        socket_timeout_s: float = _DEFAULTS.socket_timeout_s,
        retry_after_s: float = _DEFAULTS.retry_after_s,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry_on_timeout=False,
        )
        self._prefix = prefix
        self._verdict_ttl_s = verdict_ttl_s
        self._claim_ttl_s = claim_ttl_s
        self._retry_after_s = retry_after_s
        self._metrics = metrics
        self._delete_if_equal = self._client.register_script(_DELETE_IF_EQUAL)
        self._unparsable = _Unparsable(metrics)
        self._parsed = _Parsed()  # verdicts and hashes
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._up = True
        if metrics:
            metrics.cache_up.set(1)

    def get(self, key: CacheKey) -> ScreeningVerdict | None:
        name = self._verdict_key(key)
        raw = self._call(lambda: self._client.get(name), default=None)
        return self._verdict(name, raw, key)

    def get_with_hashes(
        self, key: CacheKey, hashes_key: HashesKey
    ) -> tuple[ScreeningVerdict | None, VideoHashes | None]:
        names = (self._verdict_key(key), self._hashes_key(hashes_key))
        raw = self._call(lambda: self._client.mget(names), default=None) or (None, None)
        return self._verdict(names[0], raw[0], key), self._hashes(names[1], raw[1], hashes_key)

    def _verdict(self, name: str, raw: object, key: CacheKey) -> ScreeningVerdict | None:
        if not isinstance(raw, bytes):
            return None
        verdict = self._unparsable.parse(raw, key, self._parsed)
        if verdict is None:  # delete it, unless another replica replaced it meanwhile
            self._call(lambda: self._delete_if_equal(keys=[name], args=[raw]), default=None)
        return verdict

    def put(self, key: CacheKey, verdict: ScreeningVerdict) -> None:
        payload = verdict.model_dump_json()
        self._call(
            lambda: self._client.set(self._verdict_key(key), payload, ex=self._verdict_ttl_s),
            default=None,
        )

    def get_hashes(self, key: HashesKey) -> VideoHashes | None:
        name = self._hashes_key(key)
        raw = self._call(lambda: self._client.get(name), default=None)
        return self._hashes(name, raw, key)

    def _hashes(self, name: str, raw: object, key: HashesKey) -> VideoHashes | None:
        if not isinstance(raw, bytes):
            return None
        hashes = _parse_hashes(raw, key, self._parsed)
        if hashes is None:
            self._call(lambda: self._delete_if_equal(keys=[name], args=[raw]), default=None)
        return hashes

    def put_hashes(self, key: HashesKey, hashes: VideoHashes) -> None:
        payload = _hashes_json(key, hashes)
        self._call(
            lambda: self._client.set(self._hashes_key(key), payload, ex=self._verdict_ttl_s),
            default=None,
        )

    def claim(self, key: CacheKey, owner: str) -> bool:
        claimed = self._call(
            lambda: self._client.set(self._claim_key(key), owner, nx=True, ex=self._claim_ttl_s),
            default=True,  # Redis down: screen it ourselves
        )
        return bool(claimed)

    def release(self, key: CacheKey, owner: str) -> None:
        self._call(
            lambda: self._delete_if_equal(keys=[self._claim_key(key)], args=[owner]), default=None
        )

    def ping(self) -> bool:
        return bool(self._call(self._client.ping, default=False, probe=True))

    def close(self) -> None:
        self._client.close()

    def _verdict_key(self, key: CacheKey) -> str:
        return f"{self._prefix}:verdict:{self._name(key)}"

    def _claim_key(self, key: CacheKey) -> str:
        return f"{self._prefix}:claim:{self._name(key)}"

    def _hashes_key(self, key: HashesKey) -> str:
        return f"{self._prefix}:hashes:{key.hashing}:{key.content_sha256}"

    @staticmethod
    def _name(key: CacheKey) -> str:
        policy = f"policy{key.policy}:" if key.policy else ""
        return f"schema{key.schema_version}:{key.model_sha256}:{policy}{key.content_sha256}"

    def _call(self, operation: Callable[[], Any], *, default: Any, probe: bool = False) -> Any:
        """Run `operation` unless Redis is resting after a failure; failures mark it down."""
        with self._lock:
            if not probe and time.monotonic() < self._down_until:
                return default
        try:
            result = operation()
        except redis.RedisError as error:
            self._mark_down(error)
            return default
        self._mark_up()
        return result

    def _mark_down(self, error: Exception) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self._retry_after_s
            was_up, self._up = self._up, False
        if self._metrics:
            self._metrics.cache_errors.inc()
            self._metrics.cache_up.set(0)
        if was_up:
            log.warning(
                "cache_unavailable",
                error=f"{type(error).__name__}: {error}",
                retry_after_s=self._retry_after_s,
                effect="screening continues without the cache",
            )

    def _mark_up(self) -> None:
        with self._lock:
            was_down, self._up = not self._up, True
        if was_down:
            if self._metrics:
                self._metrics.cache_up.set(1)
            log.info("cache_available_again")
