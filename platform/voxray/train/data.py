"""Feature store -> Ray Data datasets -> each worker's stream of length-bucketed batches.

Model-agnostic: a recipe says which columns it needs and how to collate a list of rows.
The training split is streamed with ``streaming_split(equal=True)`` (every worker sees the same
number of rows); validation with ``equal=False`` so that every validation row counts exactly once.
Workers agree on every micro-step that all of them still have a batch (``all_have``), so shards
that still come out uneven end the epoch together instead of hanging a collective.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import ray
import torch

from voxray.data.batching import padding_fraction
from voxray.data.store import arrow_rows, read_parts, split_dir, split_files
from voxray.train.distributed import all_have


def store_datasets(store: str, columns: list[str], splits: tuple[str, ...] = ("train", "val")
                   ) -> dict[str, ray.data.Dataset]:
    """One lazy dataset per split, reading only ``columns`` (never the stored audio)."""
    datasets = {}
    for split in splits:
        files = split_files(store, split)
        if not files:
            raise FileNotFoundError(f"the feature store {store!r} has no {split!r} split ({split_dir(store, split)})")
        datasets[split] = read_parts(files, store, columns)
    return datasets


@dataclass
class DataPosition:
    """Where a worker is in its stream: the epoch and the micro-batches consumed in it (and, in a
    curriculum, the stage whose shard it streams: ``voxray.train.curriculum``; -1 all rows)."""

    epoch: int = 0
    batches: int = 0
    stage: int = -1


def frames(row: dict[str, Any]) -> int:
    """A row's length for bucketing, by default: its mel frames."""
    return row["n_frames"]


def bucketed(rows: list[dict[str, Any]], length: Callable[[dict[str, Any]], int], batch_size: int,
             rng: random.Random) -> list[list[dict[str, Any]]]:
    """One pool of rows -> batches of neighbours in ``length(row)``, in a random order."""
    rows = sorted(rows, key=lambda r: (length(r), r["id"]))
    batches = [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]
    rng.shuffle(batches)
    return batches


def _row_bytes(row: dict[str, Any]) -> int:
    return sum(v.nbytes for v in row.values() if isinstance(v, np.ndarray)) + 200


class BatchStream:
    """Endless micro-batches of length-bucketed rows over epochs, resumable at a ``DataPosition``.

    Epoch 0 streams the worker's shard from Ray Data in pools of ``batch_size * pool`` rows,
    each pool cut into buckets of similar ``length(row)`` (mel frames unless the recipe says) in a seeded random order. When the shard fits in
    ``cache_bytes`` it is kept in memory, and later epochs shuffle all of it by (seed, epoch,
    rank) instead of re-reading the store (a small store would otherwise pay Ray Data's start-up
    on every epoch). A run resumed in a later epoch reads the shard once to rebuild the cache,
    then skips the ``position.batches`` batches already trained on, without compute.

    With one worker a resumed stream is the same batch for batch. With several, Ray Data's
    streaming split does not fix which rows each worker gets, so a resumed epoch has the right
    length but may hold a different mix of rows.

    ``collate(rows, rng)`` gets the stream's own random generator (``rng``, seeded by seed and
    rank) for whatever it draws (segment crops, masks); its state is part of a checkpoint
    (``rng_state``), so a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, get_shard: Callable[[], Any], collate: Callable[[list[dict], np.random.Generator], dict],
                 *, batch_size: int, seed: int, rank: int, device: torch.device,
                 position: Optional[DataPosition] = None, cache_bytes: int = 1 << 30, pool: int = 16,
                 length: Callable[[dict[str, Any]], int] = frames) -> None:
        self.get_shard = get_shard
        self.collate = collate
        self.rng = np.random.default_rng([seed, rank])
        self.device = device
        self.batch_size = batch_size
        self.pool_rows = batch_size * pool
        self.seed = seed
        self.rank = rank
        self.cache_bytes = cache_bytes
        self.length = length
        self.position = position or DataPosition()
        self.cache: Optional[list[dict[str, Any]]] = None     # the whole shard, once it is known to fit
        self._too_big = False
        self._iterator: Optional[Iterator] = None
        self.last_padding = 0.0

    def _pools(self) -> Iterator[list[dict[str, Any]]]:
        """The shard in store order, one pool at a time; fills the cache on the way if it fits."""
        kept: Optional[list[dict[str, Any]]] = [] if not self._too_big else None
        size = 0
        for table in self.get_shard().iter_batches(batch_size=self.pool_rows, batch_format="pyarrow",
                                                   prefetch_batches=1):
            rows = arrow_rows(table)
            if kept is not None:
                size += sum(_row_bytes(r) for r in rows)
                if size <= self.cache_bytes:
                    kept.extend(rows)
                else:
                    kept = None
            yield rows
        if kept is not None:
            self.cache = sorted(kept, key=lambda r: r["id"])
        else:
            self._too_big = True

    def _epoch(self, epoch: int) -> Iterator[list[dict[str, Any]]]:
        if epoch > 0 and self.cache is None and not self._too_big:
            for _ in self._pools():                   # a resumed run rebuilds the cache first
                pass
        if epoch > 0 and self.cache is not None:
            rng = random.Random(f"{self.seed}/{epoch}/{self.rank}")
            rows = list(self.cache)
            rng.shuffle(rows)
            pools = (rows[i: i + self.pool_rows] for i in range(0, len(rows), self.pool_rows))
        else:
            rng = random.Random(f"{self.seed}/{epoch}/{self.rank}")
            pools = self._pools()
        for pool in pools:
            yield from bucketed(pool, self.length, self.batch_size, rng)

    def _open_epoch(self) -> None:
        self._iterator = self._epoch(self.position.epoch)
        for _ in range(self.position.batches):
            if next(self._iterator, None) is None:
                break

    def rng_state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def next(self) -> dict[str, Any]:
        """The next batch that every worker also has; rolls to the next epoch together."""
        for _attempt in range(2):
            if self._iterator is None:
                self._open_epoch()
            rows = next(self._iterator, None)
            if all_have(rows is not None, self.device):
                self.position.batches += 1
                self.last_padding = padding_fraction([self.length(r) for r in rows])
                return self.collate(rows, self.rng)
            if self.position.batches == 0:
                break
            self._iterator = None
            self.position = DataPosition(self.position.epoch + 1, 0, self.position.stage)
        raise RuntimeError(
            f"a worker got no training batch in epoch {self.position.epoch}: the store's train split "
            "has fewer rows than train.num_workers; use fewer workers or more data")


def iterate_all(shard, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Every row of a (validation) shard once, in batches of similar length."""
    for table in shard.iter_batches(batch_size=batch_size * 8, batch_format="pyarrow"):
        yield from _length_batches(arrow_rows(table), batch_size)


def _length_batches(rows: list[dict[str, Any]], batch_size: int) -> Iterator[list[dict[str, Any]]]:
    rows = sorted(rows, key=lambda r: (r["n_frames"], r["id"]))
    yield from (rows[i: i + batch_size] for i in range(0, len(rows), batch_size))


class PrefetchedShard:
    """A validation shard read once, in a background thread from the start of training, and kept
    in memory when it fits in ``cache_bytes`` (else streamed again at every validation). The first
    validation then does not wait for Ray Data to start a fresh execution."""

    def __init__(self, get_shard: Callable[[], Any], cache_bytes: int) -> None:
        self.get_shard = get_shard
        self.cache_bytes = cache_bytes
        self.rows: Optional[list[dict[str, Any]]] = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._load, name="voxray-val-prefetch", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            rows: Optional[list[dict[str, Any]]] = []
            size = 0
            for table in self.get_shard().iter_batches(batch_size=256, batch_format="pyarrow"):
                if rows is None:
                    continue                       # too big: finish the epoch, keep nothing
                rows.extend(arrow_rows(table))
                size += sum(_row_bytes(r) for r in rows[-table.num_rows:])
                if size > self.cache_bytes:
                    rows = None
            self.rows = rows
        except BaseException as exc:  # re-raised in the training thread by batches()
            self.error = exc

    def batches(self, batch_size: int) -> Iterator[list[dict[str, Any]]]:
        self._thread.join()
        if self.error is not None:
            raise self.error
        if self.rows is None:
            yield from iterate_all(self.get_shard(), batch_size)
        else:
            yield from _length_batches(self.rows, batch_size)

