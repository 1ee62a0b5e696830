"""A feature store made from another, split by split, by Ray Data actors: each actor builds its
transform once (a model, a codec) and maps batches of rows (pyarrow tables) to new batches. The
side files come along (vocabulary, config, rejects ledger) and ``stats.json`` gets what the
transform says about itself. ``voxray predict-mels`` and ``voxray codec encode`` are two of them.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasink

from voxray import uri
from voxray.data import store
from voxray.data.splits import SPLITS

SIDE_FILES = ("vocab.json", "config.yaml", "rejected.jsonl")


def read_stats(data: str) -> dict[str, Any]:
    path = uri.join(data, "stats.json")
    if not uri.exists(path):
        raise FileNotFoundError(f"{data} is not a feature store (no stats.json); run voxray preprocess first")
    return json.loads(uri.read_text(path))


def prepare_output(output: str, overwrite: bool) -> None:
    if uri.exists(output) and not uri.is_empty_dir(output):
        if not overwrite:
            raise FileExistsError(f"{output} is not empty; choose another --output or pass --overwrite")
        uri.remove_tree(output)


def split_dataset(data: str, split: str, columns: list[str] | None = None):
    """A split's parquet parts as a Ray dataset (None when the split has none)."""
    files = store.split_files(data, split)
    return store.read_parts(files, data, columns) if files else None


def actor_class(build: Callable[[], Callable]) -> type:
    """A Ray Data actor class whose instances call ``build()`` once and then map each batch.
    The arguments travel inside ``build`` (shipped with the class), not through the object store,
    which Ray warns about for restartable actors."""
    class Transform:
        def __init__(self) -> None:
            self.transform = build()

        def __call__(self, batch):
            return self.transform(batch)

    return Transform


class SplitSink(Datasink[int]):
    """Rows into OUTPUT/<their split>/part-<task>.parquet (a retried task overwrites its own parts)."""

    def __init__(self, output: str) -> None:
        self.output = output

    def write(self, blocks: Iterable[pa.Table], ctx) -> int:
        tables = [b for b in blocks if b.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        for split in SPLITS:
            part = table.filter(pc.equal(table["split"], split))
            if part.num_rows:
                store.write_part(part, uri.join(self.output, split, f"part-{ctx.task_idx:05d}.parquet"))
        return table.num_rows


def derive(data: str, output: str, build: Callable[[], Callable], stats: dict[str, Any], *, batch_size: int,
           actors: int, use_gpu: bool = False) -> dict[str, int]:
    """Write OUTPUT from DATA through the transform ``build()`` makes, then its ``stats``. Every
    split goes through one dataset and one pool of actors (rows keep their ``split`` column)."""
    import ray

    from voxray.cluster import ensure_ray, settle

    ensure_ray(cpus=actors + 1)
    files = [path for split in SPLITS for path in store.split_files(data, split)]
    if not files:
        raise ValueError(f"the feature store {data} has no rows")
    dataset = store.read_parts(files, data)
    settle()
    dataset.map_batches(actor_class(build), batch_size=batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=1 if use_gpu else 0).write_datasink(SplitSink(output))
    for name in SIDE_FILES:
        if uri.exists(uri.join(data, name)):
            uri.write_bytes(uri.join(output, name), uri.read_bytes(uri.join(data, name)))
    uri.write_text(uri.join(output, "stats.json"), json.dumps(stats, indent=1, ensure_ascii=False))
    return store.count_rows(output)
