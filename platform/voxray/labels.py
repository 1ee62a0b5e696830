"""The label sets of models that read text (tokens, speakers, languages), in one place:

- fine-tuning (the recipes): a base model knows some labels, a new store may bring more; the union
  keeps the base's indices and appends the new names (their embedding rows: ``voxray.models.adapters``);
- inference on a store (``predict_mels``, ``evaluate``): the store's indices mapped to a trained
  model's, by name, refusing labels the model never saw.

It imports nothing of ``train/`` or ``data/``: inference uses it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def union_names(base: list[str], new: list[str]) -> tuple[list[str], np.ndarray, list[int]]:
    """(merged names, lookup new index -> merged index, merged indices added for ``new``)."""
    merged = list(base)
    position = {name: i for i, name in enumerate(merged)}
    added = []
    for name in new:
        if name not in position:
            position[name] = len(merged)
            merged.append(name)
            added.append(position[name])
    return merged, np.array([position[name] for name in new], dtype=np.int64), added


# ------------------------------------------------------------------ labels of text-reading models

LABEL_COLUMNS = {"token_ids": "token_embedding", "speaker_index": "speaker_embedding",
                 "language_index": "language_embedding"}


def by_index(table: dict[str, dict[str, Any]]) -> list[str]:
    """A store's speakers or languages table ({name: {"index": i, ...}}) as names in index order."""
    return [name for name, _ in sorted(table.items(), key=lambda item: item[1]["index"])]


def store_labels(stats: dict[str, Any]) -> dict[str, Any]:
    """A store's label sets as a plan holds them: vocabulary, speakers and languages in index
    order, and the G2P each language went through."""
    return {"vocabulary": list(stats["vocabulary"]), "speakers": by_index(stats["speakers"]),
            "languages": by_index(stats["languages"]),
            "g2p": {name: ("espeak" if info["g2p"].startswith("espeak") else info["g2p"])
                    for name, info in stats["languages"].items()}}


def merge_labels(base: Any, labels: dict[str, Any]) -> dict[str, Any]:
    """Fine-tuning ``base`` (a FinalModel that reads text) on a store with ``labels``: the merged
    label sets (the base's indices kept, new names appended), the model's sizes for them, the
    lookups store index -> model index per column (``maps``) and the embedding rows new to the
    base (``added``)."""
    vocabulary, token_map, new_tokens = union_names(base.vocabulary.tokens, labels["vocabulary"])
    speakers, speaker_map, new_speakers = union_names(base.manifest["speakers"], labels["speakers"])
    languages, language_map, new_languages = union_names(base.manifest["languages"], labels["languages"])
    return {"vocabulary": vocabulary, "speakers": speakers, "languages": languages,
            "g2p": {**base.manifest["g2p"], **labels["g2p"]},
            "sizes": {"vocab_size": len(vocabulary), "n_speakers": len(speakers), "n_languages": len(languages)},
            "maps": {"token_ids": token_map, "speaker_index": speaker_map, "language_index": language_map},
            "added": {"token_embedding": new_tokens, "speaker_embedding": new_speakers,
                      "language_embedding": new_languages}}


def map_labels(rows: list[dict[str, Any]], maps: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Store rows with their label indices turned into the model's (``maps`` of ``merge_labels``)."""
    if not maps:
        return rows
    return [{**row, **{column: lookup[np.asarray(row[column], dtype=np.int64)] for column, lookup in maps.items()}}
            for row in rows]


# ------------------------------------------------------------------ inference on a store

def label_maps(model_manifest: dict[str, Any], model_vocabulary: list[str], stats: dict[str, Any]
               ) -> dict[str, list[int]]:
    """Inference on a store (predicted mels, evaluation): store index -> a trained model's index
    for tokens, speakers and languages, by name; an error naming the labels the model never saw."""
    maps, unknown = {}, {}
    for column, store_names, model_names in (
            ("token_ids", list(stats["vocabulary"]), model_vocabulary),
            ("speaker_index", by_index(stats["speakers"]), model_manifest["speakers"]),
            ("language_index", by_index(stats["languages"]), model_manifest["languages"])):
        position = {name: i for i, name in enumerate(model_names)}
        missing = [name for name in store_names if name not in position]
        if missing:
            unknown[column] = missing
        maps[column] = [position.get(name, 0) for name in store_names]
    if unknown:
        raise ValueError("the acoustic model never saw these labels of the store: "
                         + "; ".join(f"{column}: {', '.join(map(str, names[:10]))}" for column, names in unknown.items()))
    return maps
