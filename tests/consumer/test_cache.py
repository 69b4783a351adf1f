"""The verdict cache: the in-memory twin and Redis behave alike; Redis down is not an outage."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from consumer.app import build_cache
from consumer.cache import (
    CacheKey,
    HashesKey,
    InMemoryVerdictCache,
    RedisVerdictCache,
    VerdictCache,
)
from consumer.embedded import free_port
from consumer.metrics import Metrics
from consumer.settings import RedisSettings, Settings
from detector.hashing import PdqFeature, VideoHashes
from schemas.verdict import VERDICT_SCHEMA_VERSION, ScreeningVerdict
from tests.schemas.factories import verdict
from tests.support.redis_server import RedisServer

KEY = CacheKey("a" * 64, "b" * 64)
OTHER = CacheKey("a" * 64, "c" * 64)

# The verdict JSON Schema that each VERDICT_SCHEMA_VERSION stands for. When the test
# below fails, ScreeningVerdict changed: bump VERDICT_SCHEMA_VERSION (so no replica
# reads entries of the old shape as new ones) and pin the new digest here.
SCHEMA_DIGESTS = {
    1: "250c623e43fcc37a1976e7b142444a5d019f5dc05e2855e59717b2219a0a91fd",
    2: "735e043d12ff500415d1f83eb596488450bbe06d63c702cbcbbe26d19b83097b",
    3: "71bcedbffe0e065b03456e19379aaf60baa9f8ee92d82f9440c3a37bc41df411",
    4: "3dde35035268bf09c04c2387cafb58213e8bafbdcce909784ab2f064b26cee98",
}


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@dataclass
class Metered:
    """A cache with its metrics, and a way to leave a raw (maybe unparsable) entry in it."""

    cache: VerdictCache
    metrics: Metrics
    store_raw: Callable[[CacheKey, bytes], None]


@pytest.fixture(params=["in-memory", "redis"])
def metered(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Metered]:
    metrics = Metrics()
    if request.param == "in-memory":
        memory = InMemoryVerdictCache(metrics=metrics)
        yield Metered(memory, metrics, memory.put_raw)
        return
    prefix = f"t{time.monotonic_ns()}"
    made = RedisVerdictCache(redis_server.url, prefix=prefix, metrics=metrics)
    client = redis_server.client()

    def store_raw(key: CacheKey, raw: bytes) -> None:
        """What another version, or a corruption, left under this key's name."""
        made.put(key, verdict())
        [name] = client.keys(f"{prefix}:verdict:*{key.content_sha256}")
        client.set(name, raw)

    yield Metered(made, metrics, store_raw)
    client.close()
    made.close()


@pytest.fixture
def cache(metered: Metered) -> VerdictCache:
    return metered.cache


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


def test_a_cached_verdict_that_no_longer_parses_is_a_miss_counted_logged_once_and_replaced(
    metered: Metered,
) -> None:
    cache, metrics = metered.cache, metered.metrics
    metered.store_raw(KEY, b'{"video_id": "v-1", "outcome": "maybe"}')  # another shape
    metered.store_raw(OTHER, b"\xff\xfe{ not json")  # corrupted bytes
    with capture_logs() as logs:
        assert cache.get(KEY) is None
        assert cache.get(KEY) is None  # removed at the first read: not counted again
        assert cache.get(OTHER) is None
    assert sample(metrics, "deepscreen_cache_corrupt_entries_total") == 2
    warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
    assert warnings == ["cache_entry_unreadable"]
    cache.put(KEY, verdict())
    assert cache.get(KEY) == verdict()
    assert sample(metrics, "deepscreen_cache_corrupt_entries_total") == 2


def test_an_entry_of_another_verdict_schema_version_is_never_read(cache: VerdictCache) -> None:
    older = CacheKey(KEY.model_sha256, KEY.content_sha256, VERDICT_SCHEMA_VERSION - 1)
    cache.put(older, verdict())
    assert cache.get(KEY) is None
    cache.put(KEY, verdict(video_id="v-2"))
    assert cache.get(older) == verdict()
    assert cache.get(KEY) == verdict(video_id="v-2")


def test_the_redis_key_is_prefix_schema_version_model_and_content(
    redis_server: RedisServer,
) -> None:
    cache = RedisVerdictCache(redis_server.url, prefix="layout")
    client = redis_server.client()
    # An entry from before the schema version was part of the key is not read as current.
    shas = f"{KEY.model_sha256}:{KEY.content_sha256}"
    client.set(f"layout:verdict:{shas}", verdict().model_dump_json())
    assert cache.get(KEY) is None
    cache.put(KEY, verdict())
    expected = f"layout:verdict:schema{VERDICT_SCHEMA_VERSION}:{shas}"
    assert expected.encode() in client.keys("layout:verdict:*")
    cache.claim(KEY, "me")
    assert client.get(f"layout:claim:schema{VERDICT_SCHEMA_VERSION}:{shas}") == b"me"
    client.close()
    cache.close()


def test_verdicts_decided_under_another_policy_are_never_read(cache: VerdictCache) -> None:
    """Another action policy or trust list (`policy_fingerprint`) is another key."""
    labelling = KEY._replace(policy="labels-ai")
    reviewing = KEY._replace(policy="reviews-ai")
    cache.put(labelling, verdict(video_id="v-label"))
    assert cache.get(reviewing) is None
    assert cache.get(KEY) is None  # no policy is a policy of its own
    cache.put(reviewing, verdict(video_id="v-review"))
    assert cache.get(labelling) == verdict(video_id="v-label")
    assert cache.get(reviewing) == verdict(video_id="v-review")


def test_replicas_under_other_policies_do_not_wait_on_each_others_claims(
    cache: VerdictCache,
) -> None:
    """During a rollout of a new policy, both policies' replicas screen the bytes."""
    assert cache.claim(KEY._replace(policy="old"), "replica-a")
    assert cache.claim(KEY._replace(policy="new"), "replica-b")
    assert not cache.claim(KEY._replace(policy="old"), "replica-b")


def test_the_policy_sits_between_model_and_content_in_the_redis_key(
    redis_server: RedisServer,
) -> None:
    cache = RedisVerdictCache(redis_server.url, prefix="policy-layout")
    client = redis_server.client()
    key = KEY._replace(policy="0123456789abcdef")
    cache.put(key, verdict())
    cache.claim(key, "me")
    name = (
        f"schema{VERDICT_SCHEMA_VERSION}:{KEY.model_sha256}:policy0123456789abcdef:"
        f"{KEY.content_sha256}"
    )
    assert client.keys("policy-layout:verdict:*") == [f"policy-layout:verdict:{name}".encode()]
    assert client.get(f"policy-layout:claim:{name}") == b"me"
    client.close()
    cache.close()


def test_a_change_of_the_verdict_schema_comes_with_a_new_schema_version() -> None:
    schema = json.dumps(ScreeningVerdict.model_json_schema(), sort_keys=True)
    digest = hashlib.sha256(schema.encode()).hexdigest()
    assert SCHEMA_DIGESTS.get(VERDICT_SCHEMA_VERSION) == digest, (
        "ScreeningVerdict changed: bump VERDICT_SCHEMA_VERSION and pin the new digest"
    )


def test_the_in_process_cache_keeps_at_most_max_entries_each_for_at_most_the_ttl() -> None:
    now = [0.0]
    cache = InMemoryVerdictCache(max_entries=2, verdict_ttl_s=60, timer=lambda: now[0])
    keys = [CacheKey("a" * 64, c * 64) for c in "bcd"]
    for key in keys:
        cache.put(key, verdict())
    assert cache.get(keys[0]) is None  # the oldest made room
    assert cache.get(keys[1]) == cache.get(keys[2]) == verdict()
    now[0] = 61
    assert cache.get(keys[2]) is None


def test_in_process_claims_are_bounded_and_expire_like_redis_ones() -> None:
    now = [0.0]
    cache = InMemoryVerdictCache(max_entries=2, claim_ttl_s=10, timer=lambda: now[0])
    assert cache.claim(KEY, "a") and not cache.claim(KEY, "b")
    now[0] = 11  # "a" died holding it: the claim lapses
    assert cache.claim(KEY, "b")
    for content in "cde":
        assert cache.claim(CacheKey("a" * 64, content * 64), "a")
    assert cache.claim(KEY, "c")  # the oldest claim made room


def test_without_a_redis_url_the_in_process_cache_is_bounded_by_the_settings() -> None:
    cache = build_cache(Settings(redis=RedisSettings(memory_max_entries=1)), Metrics())
    assert isinstance(cache, InMemoryVerdictCache)
    cache.put(KEY, verdict())
    cache.put(OTHER, verdict())
    assert cache.get(KEY) is None and cache.get(OTHER) == verdict()


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
    assert sample(metrics, "deepscreen_cache_up") == 0
    # then it rests instead of retrying each call
    assert sample(metrics, "deepscreen_cache_errors_total") == 1
    assert cache.ping() is False


def test_the_cache_is_used_again_once_redis_is_back() -> None:
    server = RedisServer().start()
    metrics = Metrics()
    cache = RedisVerdictCache(server.url, retry_after_s=0.2, metrics=metrics)
    server.stop()
    cache.put(KEY, verdict())
    assert sample(metrics, "deepscreen_cache_up") == 0
    server.start()
    time.sleep(0.3)
    cache.put(KEY, verdict())
    assert cache.get(KEY) == verdict()
    assert sample(metrics, "deepscreen_cache_up") == 1
    cache.close()
    server.close()


HASHES = VideoHashes(
    frames=(PdqFeature(0, 0.0, 90, "f0" * 32), PdqFeature(5, 0.2, 88, "e1" * 32)),
    faces=(PdqFeature(0, 0.0, 60, "0f" * 32),),
    face_probes=((PdqFeature(0, 0.0, 55, "1e" * 32),),),
    mirrored_frames=(PdqFeature(0, 0.0, 90, "0e" * 32),),
)
HASHES_KEY = HashesKey("hashing-v1", "b" * 64)


def test_a_contents_hashes_are_kept_beside_its_verdict_whatever_the_model(
    metered: Metered,
) -> None:
    cache = metered.cache
    assert cache.get_hashes(HASHES_KEY) is None
    cache.put_hashes(HASHES_KEY, HASHES)
    assert cache.get_hashes(HASHES_KEY) == HASHES
    assert cache.get_hashes(HASHES_KEY._replace(content_sha256="c" * 64)) is None


def test_hashes_made_under_another_hashing_configuration_are_a_miss(metered: Metered) -> None:
    metered.cache.put_hashes(HASHES_KEY, HASHES)
    assert metered.cache.get_hashes(HASHES_KEY._replace(hashing="hashing-v2")) is None


def test_hashes_that_do_not_parse_are_a_miss_and_are_dropped() -> None:
    cache = InMemoryVerdictCache()
    cache.put_hashes_raw(HASHES_KEY, b'{"hashing": "hashing-v1", "frames": ["nonsense"]}')
    assert cache.get_hashes(HASHES_KEY) is None
    cache.put_hashes(HASHES_KEY, HASHES)  # the next screening's take their place
    assert cache.get_hashes(HASHES_KEY) == HASHES


def test_hashes_sit_under_their_own_redis_key_with_the_verdicts_ttl(
    redis_server: RedisServer,
) -> None:
    cache = RedisVerdictCache(redis_server.url, prefix="hash-layout", verdict_ttl_s=120)
    cache.put_hashes(HASHES_KEY, HASHES)
    client = redis_server.client()
    name = f"hash-layout:hashes:hashing-v1:{'b' * 64}"
    assert client.keys("hash-layout:*") == [name.encode()]
    assert 0 < client.ttl(name) <= 120
    client.set(name, b"{broken")
    assert cache.get_hashes(HASHES_KEY) is None
    assert client.get(name) is None  # dropped, so the next put takes its place
    client.close()
    cache.close()
