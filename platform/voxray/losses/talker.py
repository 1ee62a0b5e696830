"""The talker's loss: cross-entropy on codebook 0 (with the end of speech) plus a weighted mean
over the other codebooks, and optionally the text tokens' cross-entropy (IndexTTS2's dual loss).
Sums and counts come out too, so that validation can count every row of every rank once."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def names(n_codebooks: int) -> tuple[str, ...]:
    """What ``talker_losses`` returns, in a fixed order (for meters and reductions)."""
    return ("total", "text", *(f"ce_{k}" for k in range(n_codebooks)), *(f"acc_{k}" for k in range(n_codebooks)))


def combine(ce: list[torch.Tensor], text: torch.Tensor, *, first_codebook: float, sub_codebooks: float,
            text_weight: float) -> torch.Tensor:
    """first_codebook x CE_0 + sub_codebooks x mean(CE_1..K-1) + text_weight x CE_text."""
    total = first_codebook * ce[0] + text_weight * text
    if len(ce) > 1:
        total = total + sub_codebooks * torch.stack(list(ce[1:])).mean()
    return total


def talker_losses(out: dict, *, first_codebook: float = 1.0, sub_codebooks: float = 0.3,
                  text_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Means over this batch's targets: ``total``, ``text``, ``ce_k``, ``acc_k`` (top-1), and
    ``sums`` (``SUMS``: summed CE, targets and correct top-1 per codebook k, summed CE and targets
    of the text) as floats, for exact reductions over batches and ranks."""
    ce, acc, sums = [], [], {}
    for k, (logits, targets, _) in enumerate(out["codebooks"]):
        summed = F.cross_entropy(logits.float(), targets, reduction="sum")
        count = max(targets.numel(), 1)
        correct = (logits.argmax(-1) == targets).float().sum()
        ce.append(summed / count)
        acc.append(correct / count)
        sums.update({f"ce_sum_{k}": float(summed.detach()), f"targets_{k}": float(targets.numel()),
                     f"correct_{k}": float(correct)})
    text_logits, text_targets, _ = out["text"]
    text_sum = F.cross_entropy(text_logits.float(), text_targets, reduction="sum")     # logged at weight 0 too
    text = text_sum / max(text_targets.numel(), 1)
    sums.update({"text_ce_sum": float(text_sum.detach()), "text_targets": float(text_targets.numel())})
    parts = {"total": combine(ce, text, first_codebook=first_codebook, sub_codebooks=sub_codebooks,
                              text_weight=text_weight), "text": text}
    parts.update({f"ce_{k}": value for k, value in enumerate(ce)})
    parts.update({f"acc_{k}": value for k, value in enumerate(acc)})
    parts["sums"] = sums
    return parts


def sum_names(n_codebooks: int) -> list[str]:
    """The names of ``talker_losses``' sums for ``n_codebooks`` codebooks, in a fixed order."""
    return [f"{kind}_{k}" for k in range(n_codebooks) for kind in ("ce_sum", "targets", "correct")] + \
        ["text_ce_sum", "text_targets"]
