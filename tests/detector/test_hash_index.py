from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from detector.hash_index import (
    BruteForceIndex,
    FaissFlatIndex,
    FaissMultiHashIndex,
    HammingIndex,
)
from detector.hashing import HashBits

INDEXES: dict[str, Callable[[], HammingIndex]] = {
    "brute-force": BruteForceIndex,
    "faiss-flat": FaissFlatIndex,
    "faiss-multihash": FaissMultiHashIndex,
}


def random_hashes(count: int, seed: int) -> HashBits:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 32), dtype=np.uint8)


def flipped(hash_bits: HashBits, bits: int, seed: int) -> HashBits:
    """A copy of one packed hash with `bits` distinct bits flipped."""
    unpacked = np.unpackbits(hash_bits)
    positions = np.random.default_rng(seed).choice(256, size=bits, replace=False)
    unpacked[positions] ^= 1
    return np.packbits(unpacked)


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.fixture(params=list(INDEXES))
def make_index(request: pytest.FixtureRequest) -> Callable[[], HammingIndex]:
    return INDEXES[request.param]


def test_every_row_within_the_distance_is_found_with_its_id_and_distance(
    make_index: Callable[[], HammingIndex],
) -> None:
    stored = random_hashes(500, seed=1)
    index = make_index()
    index.add(stored, np.arange(500, dtype=np.int64) // 10)  # ten rows an id
    queries = np.stack([flipped(stored[r], bits, seed=r) for r, bits in enumerate([0, 5, 31, 32])])

    found = index.search(queries, max_distance=31)

    assert found[0] == [(0, 0)]
    assert found[1] == [(0, 5)]
    assert found[2] == [(0, 31)]  # the bound is inclusive
    assert found[3] == []  # random hashes lie ~128 bits apart


def test_faiss_indexes_find_exactly_what_brute_force_finds(
    make_index: Callable[[], HammingIndex],
) -> None:
    stored = random_hashes(2000, seed=2)
    row_ids = np.arange(2000, dtype=np.int64)
    rng = np.random.default_rng(3)
    queries = np.stack(
        [flipped(stored[rng.integers(2000)], int(rng.integers(0, 40)), seed=q) for q in range(300)]
    )
    reference, index = BruteForceIndex(), make_index()
    reference.add(stored, row_ids)
    index.add(stored, row_ids)
    for distance in (8, 16, 31):
        assert [sorted(r) for r in index.search(queries, distance)] == [
            sorted(r) for r in reference.search(queries, distance)
        ]


def test_a_removed_id_is_never_found_again(make_index: Callable[[], HammingIndex]) -> None:
    stored = random_hashes(4, seed=4)
    index = make_index()
    index.add(stored, ids(1, 1, 2, 3))
    index.remove([1])
    assert len(index) == 2
    assert index.search(stored, 0) == [[], [], [(2, 0)], [(3, 0)]]


def test_removing_most_rows_rebuilds_the_index_and_keeps_the_rest(
    make_index: Callable[[], HammingIndex],
) -> None:
    stored = random_hashes(100, seed=5)
    index = make_index()
    index.add(stored, np.arange(100, dtype=np.int64))
    before = index.memory_bytes()
    index.remove(range(60))
    assert len(index) == 40
    assert index.memory_bytes() < before  # the dead rows are gone, not only hidden
    assert [r for r in index.search(stored, 0)] == [[] for _ in range(60)] + [
        [(i, 0)] for i in range(60, 100)
    ]
    index.add(random_hashes(1, seed=6), ids(7))  # an id dropped at the rebuild may come back


def test_a_removed_id_is_not_used_again_while_its_rows_are_stored(
    make_index: Callable[[], HammingIndex],
) -> None:
    index = make_index()
    index.add(random_hashes(10, seed=7), np.arange(10, dtype=np.int64))
    index.remove([3])
    with pytest.raises(ValueError, match="removed"):
        index.add(random_hashes(1, seed=8), ids(3))


def test_an_empty_index_or_query_finds_nothing(make_index: Callable[[], HammingIndex]) -> None:
    index = make_index()
    assert index.search(random_hashes(2, seed=9), 31) == [[], []]
    index.add(random_hashes(3, seed=10), ids(0, 1, 2))
    assert index.search(np.zeros((0, 32), dtype=np.uint8), 31) == []


def test_hashes_of_the_wrong_shape_or_count_are_refused(
    make_index: Callable[[], HammingIndex],
) -> None:
    index = make_index()
    with pytest.raises(ValueError):
        index.add(np.zeros((2, 16), dtype=np.uint8), ids(0, 1))
    with pytest.raises(ValueError):
        index.add(random_hashes(2, seed=11), ids(0))


def test_memory_grows_with_the_rows_and_the_multihash_tables_cost_more() -> None:
    stored = random_hashes(1000, seed=12)
    flat, multi = FaissFlatIndex(), FaissMultiHashIndex()
    for index in (flat, multi):
        index.add(stored, np.arange(1000, dtype=np.int64))
    assert flat.memory_bytes() >= 1000 * 32
    assert multi.memory_bytes() > flat.memory_bytes()


def test_the_multihash_index_takes_only_substrings_faiss_can_hash() -> None:
    with pytest.raises(ValueError):
        FaissMultiHashIndex(nhash=3)
