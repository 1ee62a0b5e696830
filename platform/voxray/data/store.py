"""The feature store: ``OUTPUT/{train,val,test}/*.parquet``, ``rejected.jsonl``, ``stats.json``.

Each feature task writes its own parts, rejects and marker (``write_task``); the driver merges
the markers' partial stats (``voxray.data.progress``). One streaming pass, nothing materialised.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from voxray import uri
from voxray.data import progress
from voxray.data.splits import SPLITS, unit_interval
from voxray.data.stats import PartialStats

STATUS_COLUMNS = ("status", "reason", "detail")
PER_TOKEN_COLUMNS = ["token_languages", "token_particles"]   # in stores whose stats.json has "code_switch"


def feature_schema(n_mels: int, n_codebooks: Optional[int] = None) -> pa.Schema:
    """The store's columns. ``audio_codes`` is ``[T, n_codebooks]`` int32 (a list of fixed-size
    lists) when the rows carry codes, else an all-null list of lists."""
    floats = pa.list_(pa.float32())
    code_frames = pa.list_(pa.int32(), n_codebooks) if n_codebooks else pa.list_(pa.int32())
    return pa.schema([
        ("id", pa.string()), ("source", pa.string()), ("split", pa.string()),
        ("speaker_id", pa.string()), ("language", pa.string()),
        ("speaker_index", pa.int32()), ("language_index", pa.int32()),
        ("text", pa.string()), ("normalized_text", pa.string()),
        ("phonemes", pa.list_(pa.string())), ("token_ids", pa.list_(pa.int32())),
        ("token_languages", pa.list_(pa.int32())),     # language index of each token (language_index's table)
        ("token_particles", pa.list_(pa.int32())),     # particle type of each token: 1 + preprocess.particles index
        ("n_languages", pa.int32()), ("code_switched", pa.bool_()), ("accent", pa.string()),
        ("n_particles", pa.int32()),                # particle words (a curriculum stage: "n_particles >= 1")
        ("n_frames", pa.int32()), ("audio_seconds", pa.float32()),
        ("mel", pa.list_(pa.list_(pa.float32(), n_mels))),
        ("f0", floats), ("energy", floats), ("durations", pa.list_(pa.int32())),
        ("sample_rate", pa.int32()), ("audio", floats),
        ("ref_audio", pa.string()), ("ref_text", pa.string()),
        ("audio_codes", pa.list_(code_frames)),
        ("metadata", pa.string()),                 # JSON of the manifest's other fields
        ("augmented", pa.string()),                # what augmentation made this train row (null: a recording)
        ("denoise_db", pa.float32()),              # noise floor lowered by preprocess.denoise, dB (null: off)
    ])


def stream_schema(n_mels: int, n_codebooks: Optional[int] = None) -> pa.Schema:
    schema = feature_schema(n_mels, n_codebooks)
    for name in STATUS_COLUMNS:
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def ragged_column(values: list[Optional[np.ndarray]], field_type: pa.DataType) -> pa.Array:
    """A list column from numpy arrays (``[T]`` or ``[T, k]``) without per-element Python."""
    lengths = np.array([0 if v is None else len(v) for v in values], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    mask = pa.array([v is None for v in values])
    inner = field_type.value_type
    present = [np.asarray(v) for v in values if v is not None]
    if pa.types.is_fixed_size_list(inner):
        scalar = inner.value_type
        flat = np.concatenate([v.reshape(-1) for v in present]) if present else np.zeros(0)
        child = pa.FixedSizeListArray.from_arrays(pa.array(flat.astype(scalar.to_pandas_dtype()), scalar),
                                                  inner.list_size)
    else:
        flat = np.concatenate(present) if present else np.zeros(0)
        child = pa.array(flat.astype(inner.to_pandas_dtype()), inner)
    return pa.ListArray.from_arrays(offsets, child, mask=mask)


def arrow_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A pyarrow table -> row dicts of numpy arrays / scalars (zero-copy where arrow allows)."""
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            offsets = column.offsets.to_numpy()
            values = column.values
            if pa.types.is_fixed_size_list(values.type):
                width = values.type.list_size
                flat = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            else:
                flat = values.to_numpy(zero_copy_only=False)
            columns[name] = [None if not column[i].is_valid else flat[offsets[i]: offsets[i + 1]]
                             for i in range(len(column))]
        else:
            columns[name] = column.to_pylist()
    return [{name: columns[name][i] for name in columns} for i in range(table.num_rows)]


_NUMPY_LISTS = ("mel", "f0", "energy", "audio")


def to_table(rows: list[dict[str, Any]], n_mels: int, n_codebooks: Optional[int] = None) -> pa.Table:
    schema = stream_schema(n_mels, n_codebooks)
    columns = []
    for column in schema:
        values = [row.get(column.name) for row in rows]
        if column.name in _NUMPY_LISTS or (column.name == "audio_codes" and n_codebooks):
            columns.append(ragged_column(values, column.type))
        else:
            columns.append(pa.array(values, column.type))
    return pa.Table.from_arrays(columns, schema=schema)


def split_dir(output: str, split: str) -> str:
    return uri.join(output, split)


def write_part(table: pa.Table, path: str) -> None:
    fs, inner = uri.filesystem(path)
    if not uri.is_remote(path):
        fs.makedirs(os.path.dirname(inner), exist_ok=True)
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    with fs.open(inner, "wb") as handle:
        # Dictionary-encoding float arrays costs 3x the write time and saves nothing.
        pq.write_table(table, handle, compression="zstd", use_dictionary=strings)


def write_task(table: pa.Table, output: str, units: list[int], n_mels: int,
               codebooks: Optional[tuple[int, int]] = None) -> dict[str, Any]:
    """Write one feature task's rows: a parquet part per split of its kept rows, its rejects
    (sorted, for the streaming merge into ``rejected.jsonl``), then its marker in
    ``_progress/done`` naming them (the marker is the commit: written last). Named by the task's
    first unit, so a retried task overwrites its own files. Returns the marker."""
    name = progress.task_name(units[0])
    stats = PartialStats(n_mels, codebooks)
    is_kept = pc.equal(table["status"], "kept")
    kept = table.filter(is_kept).drop_columns(list(STATUS_COLUMNS))
    parts = []
    for split in SPLITS:
        part = kept.filter(pc.equal(kept["split"], split))
        if part.num_rows:
            relative = f"{split}/{progress.PART_PREFIX}{name[1:]}.parquet"
            write_part(part, uri.join(output, relative))
            parts.append(relative)
    rejects = sorted(table.filter(pc.invert(is_kept)).select(
        ["id", "source", "status", "reason", "detail", "speaker_id", "language"]).to_pylist(), key=progress.reject_key)
    rejects_file = None
    if rejects:
        rejects_file = f"rejects/{name}.jsonl"
        uri.write_text(uri.join(output, progress.PROGRESS_DIR, rejects_file),
                       "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    stats.add_kept(kept)
    stats.add_rejects(rejects)
    marker = {"units": units, "parts": parts, "rejects": rejects_file, "stats": stats.to_json()}
    uri.write_text(uri.join(output, progress.PROGRESS_DIR, "done", f"{name}.json"), json.dumps(marker))
    return marker


def read_rejects(output: str) -> list[dict]:
    text = uri.read_text(uri.join(output, "rejected.jsonl"))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def split_files(output: str, split: str) -> list[str]:
    folder = split_dir(output, split)
    return uri.find(folder, (".parquet",)) if uri.exists(folder) else []


def read_parts(files: list[str], store: str, columns: Optional[list[str]] = None):
    """Parquet parts of the store at ``store`` (local paths or URIs) as one lazy Ray dataset,
    reading only ``columns``; the store's storage variables travel with the read tasks.

    Through Ray Data's first parquet datasource: the second (Ray 2.60's default) lists the files
    and reads their footers in a task of its own, which on a small cluster put 4-5 s before a
    training run's first batch (2.7 s with this one, measured on the 2-core VM with the sample
    store; benchmarks/RESULTS.md). The files are listed here already. It samples a few files
    for their size in memory right here, with a progress bar of its own: shown with
    ``--verbose`` only (voxray prints its own progress lines)."""
    import ray

    from voxray.cluster import verbose

    env = uri.storage_env()
    context = ray.data.DataContext.get_current()
    second, bars = context.use_datasource_v2, context.enable_progress_bars
    context.use_datasource_v2, context.enable_progress_bars = False, verbose()
    try:
        return ray.data.read_parquet([uri.filesystem(f)[1] if uri.is_remote(f) else f for f in files],
                                     columns=columns, filesystem=uri.pyarrow_filesystem(store),
                                     runtime_env={"env_vars": env} if env else None)
    finally:
        context.use_datasource_v2, context.enable_progress_bars = second, bars


def count_rows(output: str) -> dict[str, int]:
    """Rows per split, read from the parquet footers (no data pages)."""
    counts = {}
    for split in SPLITS:
        total = 0
        for path in split_files(output, split):
            fs, inner = uri.filesystem(path)
            with fs.open(inner, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        counts[split] = total
    return counts


def read_split(output: str, split: str, columns: Optional[list[str]] = None) -> pa.Table:
    """One split as a table (small stores, tests, inspection; training streams with Ray Data)."""
    tables = [read_part(path, columns) for path in split_files(output, split)]
    return pa.concat_tables(tables) if tables else pa.table({})


def highest_row(output: str, split: str) -> tuple[str, str]:
    """(id, part as ``split/name``) of the split's row with the highest split hash: the row a
    rebalancing move takes (deterministic: the same row on every run)."""
    best: Optional[tuple[float, str, str]] = None
    for path in split_files(output, split):
        part = read_part(path, ["id", "augmented"])
        for utt_id, made in zip(part["id"].to_pylist(), part["augmented"].to_pylist()):
            if made:                    # an augmented copy stays in train
                continue
            key = (unit_interval(utt_id), utt_id, f"{split}/{os.path.basename(path)}")
            if best is None or key > best:
                best = key
    if best is None:
        raise RuntimeError(f"split {split!r} has no row to move")
    return best[1], best[2]


def apply_move(output: str, move: dict[str, str]) -> float:
    """Move row ``move["id"]`` from part ``move["part"]`` into the new part ``move["moved"]`` (its
    split column rewritten); returns its audio seconds. Idempotent, for a journalled move that a
    killed run may have left half done: the moved part is written before the row leaves its part."""
    path, moved = uri.join(output, move["part"]), uri.join(output, move["moved"])
    table = read_part(path) if uri.exists(path) else None
    ids = table["id"].to_pylist() if table is not None else []
    if move["id"] not in ids:                      # done before the interruption
        return float(read_part(moved, ["audio_seconds"])["audio_seconds"][0].as_py())
    index = ids.index(move["id"])
    row = table.slice(index, 1).set_column(table.schema.get_field_index("split"), "split",
                                           pa.array([move["to"]]))
    write_part(row, moved)
    rest = pa.concat_tables([table.slice(0, index), table.slice(index + 1)])
    if rest.num_rows:
        write_part(rest, path)
    else:
        fs, inner = uri.filesystem(path)
        fs.rm(inner)
    return float(row["audio_seconds"][0].as_py())


def read_part(path: str, columns: Optional[list[str]] = None) -> pa.Table:
    fs, inner = uri.filesystem(path)
    with fs.open(inner, "rb") as handle:
        return pq.read_table(handle, columns=columns)
