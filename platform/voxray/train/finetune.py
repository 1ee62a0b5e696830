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
