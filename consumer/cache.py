"""Verdicts by content, so a re-upload of the same bytes is never screened twice.

Key: model sha256 + content sha256 (a new model re-screens everything). Values
are verdict JSON with a TTL. A `SET NX EX` claim marks content as being
screened, so two replicas that receive the same bytes at once do not both
decode them: the second waits for the first one's verdict.

Redis is an optimisation, never a dependency: every call has a short timeout,
and after a failure the cache reports itself down (metric, one log line) and
is skipped for `retry_after_s`, after which it is tried again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import redis
import structlog

from consumer.metrics import Metrics
from schemas.verdict import VERDICT_SCHEMA_VERSION, ScreeningVerdict

log = structlog.get_logger(__name__)

_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class CacheKey(NamedTuple):
    model_sha256: str
    content_sha256: str
    schema_version: int = VERDICT_SCHEMA_VERSION


class VerdictCache(Protocol):
    def get(self, key: CacheKey) -> ScreeningVerdict | None: ...

    def put(self, key: CacheKey, verdict: ScreeningVerdict) -> None: ...

    def claim(self, key: CacheKey, owner: str) -> bool:
        """True when this caller should screen the content (nobody else is)."""
        ...

    def release(self, key: CacheKey, owner: str) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


class InMemoryVerdictCache:
    """`VerdictCache` in a dict: the twin for unit tests and the no-Redis default."""

    def __init__(self, *, max_entries: int = 10_000, verdict_ttl_s: float = 1, claim_ttl_s: float = 1, metrics: Metrics | None = None, timer: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._verdicts: dict[CacheKey, str] = {}
        self._claims: dict[CacheKey, str] = {}

    def get(self, key: CacheKey) -> ScreeningVerdict | None:
        with self._lock:
            raw = self._verdicts.get(key)
        return ScreeningVerdict.model_validate_json(raw) if raw else None

    def put(self, key: CacheKey, verdict: ScreeningVerdict) -> None:
        with self._lock:
            self._verdicts[key] = verdict.model_dump_json()

    def put_raw(self, key: CacheKey, raw: bytes) -> None:
        with self._lock:
            self._verdicts[key] = raw  # type: ignore

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
        prefix: str = "deepscreen:v1",
        verdict_ttl_s: int = 30 * 24 * 3600,
        claim_ttl_s: int = 900,
        socket_timeout_s: float = 0.25,
        retry_after_s: float = 5.0,
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
        self._release = self._client.register_script(_RELEASE_IF_OWNER)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._up = True
        if metrics:
            metrics.cache_up.set(1)

    def get(self, key: CacheKey) -> ScreeningVerdict | None:
        raw = self._call(lambda: self._client.get(self._verdict_key(key)), default=None)
        return ScreeningVerdict.model_validate_json(raw) if isinstance(raw, bytes) else None

    def put(self, key: CacheKey, verdict: ScreeningVerdict) -> None:
        payload = verdict.model_dump_json()
        self._call(
            lambda: self._client.set(self._verdict_key(key), payload, ex=self._verdict_ttl_s),
            default=None,
        )

    def claim(self, key: CacheKey, owner: str) -> bool:
        claimed = self._call(
            lambda: self._client.set(self._claim_key(key), owner, nx=True, ex=self._claim_ttl_s),
            default=True,  # Redis down: screen it ourselves
        )
        return bool(claimed)

    def release(self, key: CacheKey, owner: str) -> None:
        self._call(lambda: self._release(keys=[self._claim_key(key)], args=[owner]), default=None)

    def ping(self) -> bool:
        return bool(self._call(self._client.ping, default=False, probe=True))

    def close(self) -> None:
        self._client.close()

    def _verdict_key(self, key: CacheKey) -> str:
        return f"{self._prefix}:verdict:{key.model_sha256}:{key.content_sha256}"

    def _claim_key(self, key: CacheKey) -> str:
        return f"{self._prefix}:claim:{key.model_sha256}:{key.content_sha256}"

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
