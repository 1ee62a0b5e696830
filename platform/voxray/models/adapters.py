"""Adapters and grown embeddings, shared by training and synthesis: a base model's label
embeddings grown to new tokens, speakers and languages (new rows start at the mean of the known
ones), LoRA, DoRA or AdaLoRA adapters from peft on chosen projections (with new embedding rows trainable
through peft's ``trainable_token_indices``), merged back into plain weights, or saved and loaded
alone (an adapter-only export)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


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
               trainable_tokens: Optional[dict[str, list[int]]] = None, feed_forward: str = FEED_FORWARD,
               modules_to_save: Optional[list[str]] = None, total_steps: Optional[int] = None) -> nn.Module:
    """Freeze ``model``; train adapters (``lora``: the config's LoRA section: rank, ff_rank, alpha,
    dropout, dora, adalora and its schedule) on ``target_modules`` (a regex over module names;
    ``lora.ff_rank`` for those matching ``feed_forward``), the embedding rows listed in
    ``trainable_tokens`` ({embedding module name: indices}) and, in full, the modules named in
    ``modules_to_save``. AdaLoRA's budget schedule runs over ``total_steps`` (train.max_steps)."""
    from peft import AdaLoraConfig, LoraConfig, get_peft_model

    tokens = {name: sorted(set(ids)) for name, ids in (trainable_tokens or {}).items() if ids}
    common = dict(lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target_modules,
                  trainable_token_indices=tokens or None, modules_to_save=modules_to_save, bias="none")
    if getattr(lora, "adalora", False):
        if not total_steps:
            raise ValueError("AdaLoRA needs the run's total steps (train.max_steps) for its budget schedule")
        common["target_modules"] = adalora_targets(model, target_modules)
        config = AdaLoraConfig(init_r=lora.rank, target_r=lora.target_rank, tinit=lora.adalora_warmup,
                               tfinal=lora.adalora_final, deltaT=lora.adalora_interval,
                               orth_reg_weight=lora.orthogonality, total_step=total_steps, **common)
    else:
        ranks = {feed_forward: lora.ff_rank} if lora.ff_rank else {}
        config = LoraConfig(r=lora.rank, use_dora=lora.dora, rank_pattern=ranks, **common)
    return get_peft_model(model, config)


def rank_space(lora: Any) -> dict[str, Any]:
    """A sweep's adapter dimension: the LoRA rank, or under AdaLoRA the rank it prunes to."""
    if getattr(lora, "adalora", False):
        return {"lora.target_rank": {"choice": [r for r in (1, 2, 4, 8, 16, 32) if r <= lora.rank]}}
    return {"lora.rank": {"choice": [4, 8, 16, 32, 64]}}


def adalora_targets(model: nn.Module, target_modules: str) -> list[str]:
    """The modules matching ``target_modules`` that peft's AdaLoRA can adapt: linear layers (it has
    no Conv1d layer; voxray's feed-forward projections are kernel-1 Conv1d, so under AdaLoRA its own
    models adapt their attention projections only)."""
    import re

    names = [name for name, module in model.named_modules()
             if re.fullmatch(target_modules, name) and (isinstance(module, (nn.Linear, nn.Conv2d))
                                                        or type(module).__name__ == "Conv1D")]
    if not names:
        raise ValueError(f"lora.adalora: no linear layer matches the adapter targets {target_modules!r}")
    return names


def grow_and_adapt(model: nn.Module, sizes: dict[str, int], lora: Any, target_modules: str,
                   added: dict[str, list[int]], modules_to_save: Optional[list[str]] = None,
                   total_steps: Optional[int] = None) -> nn.Module:
    """A base model's token/speaker/language embeddings grown to ``sizes`` (``merge_labels``),
    wrapped with adapters when ``lora.rank > 0`` (the new rows train, the base rows stay; the
    modules named in ``modules_to_save`` train in full)."""
    for name, size in (("token_embedding", "vocab_size"), ("speaker_embedding", "n_speakers"),
                       ("language_embedding", "n_languages")):
        setattr(model, name, grow_embedding(getattr(model, name), sizes[size]))
    if lora.rank > 0:
        model = apply_lora(model, lora, target_modules=target_modules, trainable_tokens=added,
                           modules_to_save=modules_to_save, total_steps=total_steps)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain model with adapters (and trained token rows) merged into its weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapter-only export holds: the adapters' weights and the trained embedding rows."""
    from peft import get_peft_model_state_dict

    return {name: value.detach().cpu().contiguous() for name, value in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``adapter_state`` into a model wrapped the same way (``grow_and_adapt``); an adapter
    whose names do not all fit is an error, not a silent partial load."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"the adapter does not fit this model: {len(unexpected)} weights have no place "
                         f"(e.g. {unexpected[0]})")
