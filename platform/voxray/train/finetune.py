"""Fine-tuning helpers shared by the model families: grow label sets, LoRA with peft, merge.

A base model knows some tokens, speakers and languages; a new store may bring more. The union
keeps the base's indices and appends the new names; their embedding rows start at the mean of
the known rows and stay trainable under LoRA (peft's ``trainable_token_indices``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn


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


@torch.no_grad()
def grow_embedding(embedding: nn.Embedding, rows: int) -> nn.Embedding:
    """A copy of ``embedding`` with ``rows`` rows; rows beyond the old ones start at their mean."""
    old = embedding.num_embeddings
    if rows <= old:
        return embedding
    grown = nn.Embedding(rows, embedding.embedding_dim, padding_idx=embedding.padding_idx)
    grown.weight[:old] = embedding.weight
    known = embedding.weight[1:] if embedding.padding_idx == 0 and old > 1 else embedding.weight
    grown.weight[old:] = known.mean(dim=0)
    return grown


FEED_FORWARD = r"ffn\.(up|down)"          # the feed-forward projections, for ``lora.ff_rank``


def apply_lora(model: nn.Module, lora: Any, target_modules: str,
               trainable_tokens: Optional[dict[str, list[int]]] = None) -> nn.Module:
    """Freeze ``model``; train adapters (``lora``: the config's LoRA section: rank, ff_rank, alpha,
    dropout, dora) on ``target_modules`` (a regex over module names) and the embedding rows listed
    in ``trainable_tokens`` ({embedding module name: indices})."""
    from peft import LoraConfig, get_peft_model

    tokens = {name: sorted(set(ids)) for name, ids in (trainable_tokens or {}).items() if ids}
    ranks = {FEED_FORWARD: lora.ff_rank} if lora.ff_rank else {}
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_dora=lora.dora,
                        target_modules=target_modules, rank_pattern=ranks,
                        trainable_token_indices=tokens or None, bias="none")
    return get_peft_model(model, config)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain model with adapters (and trained token rows) merged into its weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


# ------------------------------------------------------------------ labels of text-reading models

LABEL_COLUMNS = {"token_ids": "token_embedding", "speaker_index": "speaker_embedding",
                 "language_index": "language_embedding"}


def store_labels(stats: dict[str, Any]) -> dict[str, Any]:
    """A store's label sets as a plan holds them: vocabulary, speakers and languages in index
    order, and the G2P each language went through."""
    by_index = lambda table: [name for name, _ in sorted(table.items(), key=lambda item: item[1]["index"])]  # noqa: E731
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


def grow_and_adapt(model: nn.Module, sizes: dict[str, int], lora: Any, target_modules: str,
                   added: dict[str, list[int]]) -> nn.Module:
    """A base model's token/speaker/language embeddings grown to ``sizes`` (``merge_labels``),
    wrapped with adapters when ``lora.rank > 0`` (the new rows train, the base rows stay)."""
    for name, size in (("token_embedding", "vocab_size"), ("speaker_embedding", "n_speakers"),
                       ("language_embedding", "n_languages")):
        setattr(model, name, grow_embedding(getattr(model, name), sizes[size]))
    if lora.rank > 0:
        model = apply_lora(model, lora, target_modules=target_modules, trainable_tokens=added)
    return model


def map_labels(rows: list[dict[str, Any]], maps: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Store rows with their label indices turned into the model's (``maps`` of ``merge_labels``)."""
    if not maps:
        return rows
    return [{**row, **{column: lookup[np.asarray(row[column], dtype=np.int64)] for column, lookup in maps.items()}}
            for row in rows]
