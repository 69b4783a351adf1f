"""The verdict cache: the in-memory twin and Redis behave alike; Redis down is not an outage."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from consumer.cache import CacheKey, InMemoryVerdictCache, RedisVerdictCache, VerdictCache
from consumer.embedded import free_port
from consumer.metrics import Metrics
from tests.schemas.factories import verdict
from tests.support.redis_server import RedisServer

KEY = CacheKey("a" * 64, "b" * 64)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture(params=["in-memory", "redis"])
def cache(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[VerdictCache]:
    if request.param == "in-memory":
        yield InMemoryVerdictCache()
        return
    made = RedisVerdictCache(redis_server.url, prefix=f"t{time.monotonic_ns()}")
    yield made
    made.close()


def test_a_stored_verdict_is_found_by_model_and_content(cache: VerdictCache) -> None:
    assert cache.get(KEY) is None
    cache.put(KEY, verdict())
    assert cache.get(KEY) == verdict()
    assert cache.get(CacheKey("c" * 64, KEY.content_sha256)) is None  # another model


def test_only_one_owner_holds_a_claim_until_it_releases_it(cache: VerdictCache) -> None:
    assert cache.claim(KEY, "replica-a")
    assert not cache.claim(KEY, "replica-b")
    cache.release(KEY, "replica-b")  # not b's to release
    assert not cache.claim(KEY, "replica-b")
    cache.release(KEY, "replica-a")
    assert cache.claim(KEY, "replica-b")


def test_verdicts_expire_after_their_ttl(redis_server: RedisServer) -> None:
    cache = RedisVerdictCache(redis_server.url, prefix="ttl", verdict_ttl_s=60)
    cache.put(KEY, verdict())
    client = redis_server.client()
    [name] = client.keys("ttl:verdict:*")
    assert 0 < client.ttl(name) <= 60
    client.close()
    cache.close()


def test_with_redis_unreachable_every_call_answers_at_once_and_screening_goes_on() -> None:
    metrics = Metrics()
    cache = RedisVerdictCache(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.2, metrics=metrics
    )
    started = time.monotonic()
    assert cache.get(KEY) is None
    assert cache.claim(KEY, "me") is True  # nobody to coordinate with: screen it
    cache.put(KEY, verdict())
    assert time.monotonic() - started < 1.0
    assert metrics.cache_up._value.get() == 0
    assert metrics.cache_errors._value.get() == 1  # then it rests instead of retrying each call
    assert cache.ping() is False


def test_the_cache_is_used_again_once_redis_is_back() -> None:
    server = RedisServer().start()
    metrics = Metrics()
    cache = RedisVerdictCache(server.url, retry_after_s=0.2, metrics=metrics)
    server.stop()
    cache.put(KEY, verdict())
    assert metrics.cache_up._value.get() == 0
    server.start()
    time.sleep(0.3)
    cache.put(KEY, verdict())
    assert cache.get(KEY) == verdict()
    assert metrics.cache_up._value.get() == 1
    cache.close()
    server.close()
