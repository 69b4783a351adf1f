"""Hamming-distance lookup of PDQ hashes: every stored hash within a distance of a query.

The bank asks one question of its hashes, many times an upload: which stored
hashes lie within `max_distance` bits of each query hash? `HammingIndex` is
that question; rows carry a caller's int64 id (the bank maps it to its entry).

- `FaissFlatIndex`: FAISS `IndexBinaryFlat`, an exhaustive scan with popcount.
  Exact, the least memory (32 bytes a hash), its time grows with the bank.
- `FaissMultiHashIndex`: FAISS `IndexBinaryMultiHash` (multi-index hashing),
  16 hash tables on 16-bit substrings. With `nflip = max_distance // 16`
  probes per table it is exact by the pigeonhole principle (two hashes within
  31 bits agree to within one bit on at least one of the 16 substrings), and
  its time grows far slower with the bank; the tables cost memory.
- `BruteForceIndex`: numpy, no FAISS; the in-memory twin the others are
  tested against.

FAISS cannot remove rows from a multi-hash index, so removal is the same for
all three: the id is forgotten at once (its rows are never returned again)
and the rows are dropped when the dead ones reach a quarter of the index, by
rebuilding it from the live rows. Rulings are retracted rarely.

Not thread-safe: the bank serialises access.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

import faiss
import numpy as np
from numpy.typing import NDArray

from detector.hashing import PDQ_BITS, PDQ_BYTES, HashBits

Ids = NDArray[np.int64]
_REBUILD_DEAD_SHARE: Final = 0.25
_POPCOUNT: Final = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


class HammingIndex(Protocol):
    """Stored PDQ hashes with ids; lookups within a Hamming distance."""

    def add(self, hashes: HashBits, ids: Ids) -> None:
        """Store `hashes` (N, 32) uint8 under `ids` (N,); an id may have many rows.

        An id that was removed is not used again (`ValueError`).
        """
        ...

    def remove(self, ids: Iterable[int]) -> None:
        """Forget every row stored under these ids."""
        ...

    def search(self, queries: HashBits, max_distance: int) -> list[list[tuple[int, int]]]:
        """For each query, the (id, distance) of every live row within `max_distance` bits."""
        ...

    def __len__(self) -> int:
        """Live rows."""
        ...

    def memory_bytes(self) -> int:
        """Bytes the stored rows take (codes, ids and any tables), for capacity planning."""
        ...


class _Growing:
    """An array appended to in place, its capacity doubling (appends cost amortised O(1))."""

    def __init__(self, row_shape: tuple[int, ...], dtype: type[np.generic]) -> None:
        self._buffer = np.zeros((16, *row_shape), dtype=dtype)
        self._count = 0

    def extend(self, rows: NDArray[Any]) -> None:
        needed = self._count + len(rows)
        if needed > len(self._buffer):
            shape = (max(needed, 2 * len(self._buffer)), *self._buffer.shape[1:])
            grown = np.zeros(shape, dtype=self._buffer.dtype)
            grown[: self._count] = self._buffer[: self._count]
            self._buffer = grown
        self._buffer[self._count : needed] = rows
        self._count = needed

    def replace(self, rows: NDArray[Any]) -> None:
        self._buffer = np.array(rows, dtype=self._buffer.dtype)
        self._count = len(rows)

    @property
    def values(self) -> NDArray[Any]:
        return self._buffer[: self._count]

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes)


class _RowsWithIds:
    """Row → id bookkeeping and deferred removal, shared by the implementations."""

    def __init__(self) -> None:
        self._ids = _Growing((), np.int64)
        self._dead_ids: set[int] = set()
        self._dead_rows = 0

    @property
    def _row_ids(self) -> Ids:
        ids: Ids = self._ids.values
        return ids

    def _append_ids(self, ids: Ids) -> None:
        reused = self._dead_ids.intersection(int(i) for i in np.unique(ids))
        if reused:  # their removed rows may still be stored: they would come back
            raise ValueError(f"ids {sorted(reused)[:5]} were removed; use new ids")
        self._ids.extend(np.asarray(ids, dtype=np.int64))

    def _mark_dead(self, ids: Iterable[int]) -> bool:
        """Forget `ids`; True when so many rows are dead that the index should be rebuilt."""
        fresh = {int(i) for i in ids} - self._dead_ids
        if not fresh:
            return False
        self._dead_rows += int(np.isin(self._row_ids, list(fresh)).sum())
        self._dead_ids |= fresh
        return self._dead_rows > _REBUILD_DEAD_SHARE * max(1, len(self._row_ids))

    def _live_mask(self) -> NDArray[np.bool_]:
        return ~np.isin(self._row_ids, list(self._dead_ids))

    def _results(
        self, limits: NDArray[Any], distances: NDArray[Any], rows: NDArray[Any]
    ) -> list[list[tuple[int, int]]]:
        """Per query, the (id, distance) of its live rows, from FAISS's range-search arrays."""
        found: list[list[tuple[int, int]]] = []
        ids = self._row_ids[rows] if len(rows) else np.zeros(0, dtype=np.int64)
        for q in range(len(limits) - 1):
            begin, end = int(limits[q]), int(limits[q + 1])
            found.append(
                [
                    (int(i), int(d))
                    for i, d in zip(ids[begin:end], distances[begin:end], strict=True)
                    if int(i) not in self._dead_ids
                ]
            )
        return found

    def __len__(self) -> int:
        return len(self._row_ids) - self._dead_rows


class BruteForceIndex(_RowsWithIds):
    """Every stored hash compared with every query in numpy: exact, simple, slow on big banks."""

    def __init__(self) -> None:
        super().__init__()
        self._codes = _Growing((PDQ_BYTES,), np.uint8)

    def add(self, hashes: HashBits, ids: Ids) -> None:
        _check_shapes(hashes, ids)
        self._append_ids(ids)
        self._codes.extend(hashes)

    def remove(self, ids: Iterable[int]) -> None:
        if self._mark_dead(ids):
            live = self._live_mask()
            self._codes.replace(self._codes.values[live])
            self._ids.replace(self._row_ids[live])
            self._dead_ids.clear()
            self._dead_rows = 0

    def search(self, queries: HashBits, max_distance: int) -> list[list[tuple[int, int]]]:
        found: list[list[tuple[int, int]]] = []
        codes = self._codes.values
        for query in np.asarray(queries, dtype=np.uint8).reshape(-1, PDQ_BYTES):
            distances = _POPCOUNT[np.bitwise_xor(codes, query)].sum(axis=1)
            rows = np.flatnonzero(distances <= max_distance)
            found.append(
                [
                    (int(self._row_ids[r]), int(distances[r]))
                    for r in rows
                    if int(self._row_ids[r]) not in self._dead_ids
                ]
            )
        return found

    def memory_bytes(self) -> int:
        return self._codes.nbytes + self._ids.nbytes


class _FaissIndex(_RowsWithIds):
    """A FAISS binary index whose row numbers map to ids through `_row_ids`."""

    def __init__(self) -> None:
        super().__init__()
        self._index: Any = self._new_index()

    def _new_index(self) -> Any:  # a faiss.IndexBinary subclass
        raise NotImplementedError

    def _stored_codes(self) -> HashBits:
        raise NotImplementedError

    def _prepare(self, max_distance: int) -> None:
        """Set search parameters for lookups within `max_distance`."""

    def add(self, hashes: HashBits, ids: Ids) -> None:
        _check_shapes(hashes, ids)
        if len(hashes):
            self._append_ids(ids)
            self._index.add(np.ascontiguousarray(hashes, dtype=np.uint8))

    def remove(self, ids: Iterable[int]) -> None:
        if self._mark_dead(ids):
            live = self._live_mask()
            codes, row_ids = self._stored_codes()[live], self._row_ids[live].copy()
            self._index = self._new_index()
            self._ids = _Growing((), np.int64)
            self._dead_ids.clear()
            self._dead_rows = 0
            self.add(codes, row_ids)

    def search(self, queries: HashBits, max_distance: int) -> list[list[tuple[int, int]]]:
        queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, PDQ_BYTES)
        if self._index.ntotal == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        self._prepare(max_distance)
        # range_search returns the rows strictly closer than its radius
        limits, distances, rows = self._index.range_search(queries, max_distance + 1)
        return self._results(limits, distances, rows)


class FaissFlatIndex(_FaissIndex):
    """FAISS `IndexBinaryFlat`: exhaustive popcount scan; exact; 32 bytes a row."""

    def _new_index(self) -> Any:  # a faiss.IndexBinary subclass
        return faiss.IndexBinaryFlat(PDQ_BITS)

    def _stored_codes(self) -> HashBits:
        return faiss.vector_to_array(self._index.xb).reshape(-1, PDQ_BYTES)

    def memory_bytes(self) -> int:
        return int(self._index.ntotal * PDQ_BYTES) + self._ids.nbytes


class FaissMultiHashIndex(_FaissIndex):
    """FAISS `IndexBinaryMultiHash`: multi-index hashing, exact at `nflip = distance // nhash`."""

    def __init__(self, nhash: int = 16) -> None:
        if PDQ_BITS % nhash or PDQ_BITS // nhash > 64:
            raise ValueError(f"nhash must divide {PDQ_BITS} into substrings of at most 64 bits")
        self.nhash = nhash
        super().__init__()

    def _new_index(self) -> Any:  # a faiss.IndexBinary subclass
        return faiss.IndexBinaryMultiHash(PDQ_BITS, self.nhash, PDQ_BITS // self.nhash)

    def _stored_codes(self) -> HashBits:
        storage: Any = faiss.downcast_IndexBinary(self._index.storage)
        return faiss.vector_to_array(storage.xb).reshape(-1, PDQ_BYTES)

    def _prepare(self, max_distance: int) -> None:
        self._index.nflip = max_distance // self.nhash

    def memory_bytes(self) -> int:
        """Codes, ids, and the tables: one 8-byte entry a row in each of `nhash` tables.

        The tables' hash-map overhead (buckets, allocator) comes on top; the
        benchmark measures the process's resident memory as well.
        """
        rows = int(self._index.ntotal)
        return rows * PDQ_BYTES + self._ids.nbytes + rows * self.nhash * 8


def _check_shapes(hashes: HashBits, ids: Ids) -> None:
    if hashes.ndim != 2 or hashes.shape[1] != PDQ_BYTES or hashes.dtype != np.uint8:
        raise ValueError(f"hashes are (N, {PDQ_BYTES}) uint8, not {hashes.shape} {hashes.dtype}")
    if len(ids) != len(hashes):
        raise ValueError(f"{len(ids)} ids for {len(hashes)} hashes")
