"""Corpus readers: LJSpeech folders, JSONL manifests (Qwen3-TTS style), HF parquet shards.

A reader works in two halves. ``plan`` runs on the driver and returns small *units* (a chunk of
manifest lines, or one parquet row group): never audio. ``read_unit`` runs in a Ray task and
turns one unit into raw items (dicts with the keys of ``RawItem``). A row that cannot be parsed
becomes an item with ``malformed`` set, so that it is counted and recorded, never lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any, Optional, TypedDict

import pyarrow.parquet as pq

from voxray import uri

FORMATS = ("ljspeech", "jsonl", "hf-parquet")


class InputError(ValueError):
    """The input as a whole is unusable (missing folder, unknown format)."""


class RawItem(TypedDict, total=False):
    id: str
    source: str
    audio: Optional[str]          # URI of the audio file
    audio_bytes: Optional[bytes]  # embedded audio (parquet)
    text: str
    speaker_id: Optional[str]
    language: Optional[str]
    ref_audio: Optional[str]
    ref_text: Optional[str]
    audio_codes: Optional[list[list[int]]]
    word_langs: Optional[list[Optional[str]]]      # a language per word (``word_langs`` / ``language_tags``)
    particle_tags: Optional[list[Optional[str]]]   # a particle name (or null) per word
    accent: Optional[str]
    metadata: Optional[str]       # JSON of the manifest fields the store has no column for
    malformed: Optional[str]      # why the row could not be parsed
    forced_split: Optional[str]   # the split its input gives it (preprocess.val_input), not its id's hash


# Per-word tags of code-switched rows (``voxray.codeswitch``); ``language_tags`` is another name
# for ``word_langs``.
TAG_FIELDS = ("word_langs", "language_tags", "particle_tags", "accent")
# Manifest fields with a column of their own; any other field (gender, age_range, phase, ...) is
# kept in the row's ``metadata`` column as JSON.
JSONL_FIELDS = ("audio", "text", "id", "speaker_id", "speaker", "language", "ref_audio", "ref_text", "audio_codes",
                *TAG_FIELDS)


def detect_format(input_uri: str) -> str:
    """ljspeech | jsonl | hf-parquet, from what the input holds."""
    lower = input_uri.lower().rstrip("/")
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    if lower.endswith(".parquet"):
        return "hf-parquet"
    if lower.endswith(".csv"):
        return "ljspeech"
    if not uri.exists(input_uri):
        raise InputError(f"input {input_uri!r} does not exist")
    if uri.exists(uri.join(input_uri, "metadata.csv")):
        return "ljspeech"
    names = uri.find(input_uri)
    if any(n.lower().endswith(".parquet") for n in names):
        return "hf-parquet"
    if any(n.lower().endswith(".jsonl") for n in names):
        return "jsonl"
    raise InputError(
        f"cannot tell the format of {input_uri!r}: expected metadata.csv (ljspeech), "
        "*.jsonl (jsonl) or *.parquet (hf-parquet); pass --format"
    )


def _chunks(kind: str, base: str, name: str, path: str, size: int) -> list[dict]:
    """Units of ``size`` non-blank lines of a manifest, as byte ranges (the driver never holds the
    lines: a Qwen3-TTS manifest carries every row's codes). Each unit records the SHA-256 of its
    bytes, so that a resumed run can tell a changed manifest from the one it started on."""
    fs, inner = uri.filesystem(path)
    units: list[dict] = []
    count, start, first, offset, digest = 0, 0, 0, 0, hashlib.sha256()
    with fs.open(inner, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                if count == 0:
                    start, first, digest = offset, number, hashlib.sha256()
                count += 1
            if count:
                digest.update(raw)
            offset += len(raw)
            if count == size:
                units.append({"kind": kind, "base": base, "name": name, "first": first, "start": start,
                              "end": offset, "rows": count, "sha": digest.hexdigest()})
                count = 0
    if count:
        units.append({"kind": kind, "base": base, "name": name, "first": first, "start": start,
                      "end": offset, "rows": count, "sha": digest.hexdigest()})
    return units


def _unit_lines(unit: dict) -> list[tuple[int, str]]:
    """(line number, text) of a unit's non-blank lines, read from its byte range."""
    fs, inner = uri.filesystem(uri.join(unit["base"], unit["name"]))
    with fs.open(inner, "rb") as handle:
        handle.seek(unit["start"])
        data = handle.read(unit["end"] - unit["start"])
    return [(unit["first"] + i, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            for i, raw in enumerate(data.splitlines(keepends=True)) if raw.strip()]


def unit_rows(unit: dict) -> int:
    return unit.get("rows", 1)


def first_rows(units: list[dict], max_rows: int) -> list[dict]:
    """The units that hold the input's first ``max_rows`` rows (all when 0), the last one cut
    (``limit``: read_unit yields that many of its rows)."""
    if not max_rows:
        return units
    kept, left = [], max_rows
    for unit in units:
        if left <= 0:
            break
        rows = unit_rows(unit)
        kept.append(unit if rows <= left else {**unit, "rows": left, "limit": left})
        left -= rows
    return kept


def plan(input_uri: str, fmt: str, rows_per_unit: int = 8) -> list[dict]:
    if fmt == "ljspeech":
        metadata = input_uri if input_uri.lower().endswith(".csv") else uri.join(input_uri, "metadata.csv")
        if not uri.exists(metadata):
            raise InputError(f"LJSpeech input needs {metadata!r}")
        return _chunks("ljspeech", uri.parent(metadata), "metadata.csv", metadata, rows_per_unit)
    if fmt == "jsonl":
        manifests = [input_uri] if not uri.isdir(input_uri) else uri.find(input_uri, (".jsonl",))
        if not manifests or not uri.exists(manifests[0]):
            raise InputError(f"no JSONL manifest at {input_uri!r}")
        units = []
        for manifest in manifests:
            units += _chunks("jsonl", uri.parent(manifest), posixpath.basename(manifest), manifest,
                             rows_per_unit)
        return units
    if fmt == "hf-parquet":
        shards = [input_uri] if not uri.isdir(input_uri) else uri.find(input_uri, (".parquet",))
        if not shards:
            raise InputError(f"no parquet shards at {input_uri!r}")
        return [unit for shard in shards for unit in _plan_parquet(shard)]
    raise InputError(f"unknown format {fmt!r} (choose from auto, {', '.join(FORMATS)})")


def _plan_parquet(shard: str) -> list[dict]:
    """One unit per row group; its ``sha`` digests the shard's size and the row group's shape
    (what a resumed run compares; the data pages are not read on the driver)."""
    fs, inner = uri.filesystem(shard)
    try:
        size = fs.info(inner).get("size")
        with fs.open(inner, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
    except Exception as exc:  # a corrupt shard is one malformed input, not a crash
        error = f"{type(exc).__name__}: {exc}"
        return [{"kind": "parquet-broken", "file": shard, "error": error,
                 "sha": hashlib.sha256(error.encode()).hexdigest()}]
    units, offset = [], 0
    for group in range(metadata.num_row_groups):
        meta = metadata.row_group(group)
        shape = json.dumps([size, metadata.num_rows, group, meta.num_rows, meta.total_byte_size])
        units.append({"kind": "parquet", "file": shard, "row_group": group, "offset": offset,
                      "rows": meta.num_rows, "sha": hashlib.sha256(shape.encode()).hexdigest()})
        offset += meta.num_rows
    return units


def read_unit(unit: dict, with_audio: bool = True) -> list[RawItem]:
    """The unit's rows (its first ``limit``: ``first_rows``), each tagged with the unit's ``split``
    when the unit has one (``preprocess.val_input``'s units)."""
    items = _read_unit(unit, with_audio)
    items = items[: unit["limit"]] if "limit" in unit else items
    return [{**item, "forced_split": unit["split"]} for item in items] if "split" in unit else items


def _read_unit(unit: dict, with_audio: bool) -> list[RawItem]:
    kind = unit["kind"]
    if kind == "ljspeech":
        return [_ljspeech_item(unit["base"], n, line) for n, line in _unit_lines(unit)]
    if kind == "jsonl":
        return [_jsonl_item(unit["base"], unit["name"], n, line) for n, line in _unit_lines(unit)]
    if kind == "parquet":
        return _parquet_items(unit, with_audio)
    if kind == "parquet-broken":
        return [{"id": posixpath.basename(unit["file"]), "source": unit["file"],
                 "malformed": f"unreadable parquet file: {unit['error']}"}]
    raise ValueError(f"unknown unit kind {kind!r}")


def _ljspeech_item(base: str, number: int, line: str) -> RawItem:
    source = f"{uri.join(base, 'metadata.csv')}:{number}"
    fields = line.split("|")
    utt_id = fields[0].strip()
    if len(fields) < 2 or not utt_id:
        return {"id": utt_id or f"metadata.csv:{number}", "source": source,
                "malformed": "expected id|text|normalized_text[|speaker|language]"}
    text = fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]
    return {
        "id": utt_id, "source": source, "audio": uri.join(base, "wavs", f"{utt_id}.wav"),
        "text": text,
        "speaker_id": (fields[3].strip() or None) if len(fields) > 3 else None,
        "language": (fields[4].strip() or None) if len(fields) > 4 else None,
    }


def _codes(value: Any) -> list[list[int]]:
    """The shape of ``audio_codes`` (a rectangle of integers); their fit to the codec is checked
    with the audio (``voxray.data.codes``)."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise ValueError("audio_codes must be a non-empty [T, n_codebooks] list of lists")
    width = len(value[0])
    if width == 0 or any(len(r) != width for r in value):
        raise ValueError("audio_codes rows must all have the same, non-zero length")
    if not all(isinstance(c, int) and not isinstance(c, bool) for r in value for c in r):
        raise ValueError("audio_codes must hold integers")
    return value


def _optional_str(row: dict, key: str) -> Optional[str]:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    return value or None


def _tag_list(row: dict, key: str) -> Optional[list[Optional[str]]]:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(tag is None or isinstance(tag, str) for tag in value):
        raise ValueError(f"{key} must be a list of strings (null for a word left to detection)")
    return [tag or None for tag in value]


def _tags(row: dict) -> dict[str, Any]:
    """The per-word tag fields of a manifest row, checked for type (their fit to the row's words
    is checked with its text: ``voxray.codeswitch``)."""
    if row.get("word_langs") is not None and row.get("language_tags") is not None:
        raise ValueError("give word_langs or language_tags, not both")
    key = "word_langs" if row.get("word_langs") is not None else "language_tags"
    return {"word_langs": _tag_list(row, key), "particle_tags": _tag_list(row, "particle_tags"),
            "accent": _optional_str(row, "accent")}


def _jsonl_item(base: str, name: str, number: int, line: str) -> RawItem:
    source = f"{uri.join(base, name)}:{number}"
    fallback_id = f"{name}:{number}"
    row: Any = None
    try:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
        audio = row.get("audio")
        if not isinstance(audio, str) or not audio:
            raise ValueError("'audio' must be a non-empty string path")
        if not isinstance(row.get("text"), str):
            raise ValueError("'text' must be a string")
        ref_audio = _optional_str(row, "ref_audio")
        item: RawItem = {
            "id": _optional_str(row, "id") or os.path.splitext(audio)[0].lstrip("./"),
            "source": source, "audio": uri.resolve(audio, base), "text": row["text"],
            "speaker_id": _optional_str(row, "speaker_id") if "speaker_id" in row else _optional_str(row, "speaker"),
            "language": _optional_str(row, "language"),
            "ref_audio": uri.resolve(ref_audio, base) if ref_audio else None,
            "ref_text": _optional_str(row, "ref_text"),
            "audio_codes": _codes(row["audio_codes"]) if row.get("audio_codes") is not None else None,
            **_tags(row),
        }
        extra = {key: value for key, value in row.items() if key not in JSONL_FIELDS}
        item["metadata"] = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None
        return item
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        named = row.get("id") if isinstance(row, dict) and isinstance(row.get("id"), str) and row["id"] else None
        return {"id": named or fallback_id, "source": source, "malformed": str(exc)}


def _parquet_items(unit: dict, with_audio: bool) -> list[RawItem]:
    shard = unit["file"]
    stem = posixpath.basename(shard).rsplit(".", 1)[0]
    fs, inner = uri.filesystem(shard)
    with fs.open(inner, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        present = set(parquet.schema_arrow.names)
        wanted = [c for c in ("id", "text", "speaker_id", "language", *TAG_FIELDS) if c in present]
        if with_audio and "audio" in present:
            wanted.append("audio")
        table = parquet.read_row_group(unit["row_group"], columns=wanted)
    rows = table.to_pylist()
    missing = [c for c in ("audio", "text") if c not in present]
    items: list[RawItem] = []
    for i, row in enumerate(rows):
        index = unit["offset"] + i
        utt_id = str(row.get("id") or f"{stem}-{index:06d}")
        source = f"{shard}#row={index}"
        if missing:
            items.append({"id": utt_id, "source": source,
                          "malformed": f"shard has no column(s) {', '.join(missing)}"})
            continue
        item: RawItem = {"id": utt_id, "source": source, "text": row.get("text"),
                         "speaker_id": row.get("speaker_id") or None,
                         "language": row.get("language") or None}
        if not isinstance(item["text"], str):
            item["malformed"] = "'text' must be a string"
        try:
            item.update(_tags(row))
        except ValueError as exc:
            item["malformed"] = str(exc)
        if with_audio:
            audio = row.get("audio") or {}
            if not isinstance(audio, dict):
                item["malformed"] = "'audio' must be a struct with bytes and/or path"
            elif audio.get("bytes"):
                item["audio_bytes"] = audio["bytes"]
            elif audio.get("path"):
                item["audio"] = uri.resolve(audio["path"], uri.parent(shard))
            else:
                item["audio_bytes"] = b""  # rejected downstream as an empty file
        items.append(item)
    return items


def audio_seconds(item: RawItem) -> Optional[float]:
    """The duration of the item's audio file from its header (None when it cannot be read)."""
    import io

    import soundfile

    try:
        if item.get("audio_bytes") is None and not uri.is_remote(item["audio"]):
            return float(soundfile.info(item["audio"]).duration)
        return float(soundfile.info(io.BytesIO(audio_bytes(item))).duration)
    except Exception:        # missing or undecodable: the feature pass rejects the row with its reason
        return None


def audio_bytes(item: RawItem) -> bytes:
    """The item's audio file contents; raises FileNotFoundError when it is missing."""
    if item.get("audio_bytes") is not None:
        return item["audio_bytes"]  # type: ignore[return-value]
    return uri.read_bytes(item["audio"])  # type: ignore[arg-type]

