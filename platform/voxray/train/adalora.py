"""AdaLoRA (``lora.adalora``) under DeepSpeed: peft's rank allocator driven at the points of a
DeepSpeed step where what it reads exists, its state kept in the checkpoint, its orthogonality
regulariser added to the loss.

peft documents one call per step, ``update_and_allocate(step)`` after ``optimizer.step()`` and
before ``zero_grad()``: it scores every adapter weight by |weight x gradient| (smoothed), and on
allocation steps zeroes the least important singular values (``lora_E``) down to the step's
budget. ``engine.step()`` does step and zero_grad in one call, and at ZeRO 1-2 (or bf16) the
gradients live in the optimizer's partitions and the weights the optimizer updates are its fp32
master copies, so:

- ``before_step`` (between backward and step, every rank): each adapter weight's full gradient
  (DeepSpeed's ``safe_get_full_grad``, a collective at ZeRO 1-2) is kept aside (adapters are small);
- ``after_step``: the kept gradients are put back as ``.grad`` for peft's own
  ``update_and_allocate`` (scores from the updated weights and the step's gradients, as in
  peft's order), then taken away; the singular values it zeroed are written into the optimizer's
  fp32 masters (``safe_set_full_fp32_param``), else the next step would bring them back.

The allocator's smoothed scores and rank pattern are not in the model's state dict: ``state`` /
``load`` carry them through a checkpoint, so a resumed run prunes as the uninterrupted one.
peft adds the regulariser only to a transformers-style ``outputs.loss``; voxray's losses are its
own, so ``penalty`` computes peft's term (mean over A and B of ||P P^T - I||_F) for the recipe.
ZeRO-3 is refused by the config (a partitioned weight cannot be scored or masked whole)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class AdaLoraSteps:
    """peft's AdaLoRA allocator of one engine's model, driven around ``engine.step()``."""

    def __init__(self, adalora_model: nn.Module) -> None:
        self.model = adalora_model                                  # peft's AdaLoraModel
        self.adapter = adalora_model.trainable_adapter_name
        self.config = adalora_model.peft_config[self.adapter]
        self.allocator = adalora_model.rankallocator
        self.params = [(name, p) for name, p in adalora_model.model.named_parameters()
                       if "lora_" in name and self.adapter in name]
        self._grads: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, module: nn.Module) -> Optional["AdaLoraSteps"]:
        """The allocator of ``module`` (an engine's module; the peft model may sit inside a
        pretrained talker's wrapper), or None when it has no AdaLoRA adapters being trained."""
        from peft.tuners.adalora import AdaLoraModel

        for inner in module.modules():
            if isinstance(inner, AdaLoraModel) and hasattr(inner, "rankallocator"):
                return cls(inner)
        return None

    def penalty(self) -> torch.Tensor:
        """``lora.orthogonality`` x the mean over adapter matrices of ||A A^T - I||_F (B^T B for B)."""
        terms = []
        for name, p in self.params:
            if "lora_A" in name or "lora_B" in name:
                product = p @ p.T if "lora_A" in name else p.T @ p
                terms.append(torch.linalg.matrix_norm(product - torch.eye(*product.shape, device=p.device,
                                                                           dtype=p.dtype)))
        return self.config.orth_reg_weight * torch.stack(terms).mean()

    @torch.no_grad()
    def before_step(self) -> None:
        """Keep each adapter weight's full gradient (every rank: a collective at ZeRO 1-2)."""
        from deepspeed.utils import safe_get_full_grad

        self._grads = {name: safe_get_full_grad(p).detach().clone() for name, p in self.params}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """peft's ``update_and_allocate(step)`` on the updated weights with the step's gradients;
        the singular values it zeroed written into the optimizer's master weights."""
        from deepspeed.utils import safe_set_full_fp32_param

        before = {name: p.grad for name, p in self.params}
        for name, p in self.params:
            p.grad = self._grads[name]
        try:
            self.model.update_and_allocate(step)
        finally:
            for name, p in self.params:
                p.grad = before[name]
            self._grads = {}
        for name, p in self.params:
            if "lora_E" in name:
                safe_set_full_fp32_param(p, p.detach().float())

    def ranks(self) -> int:
        """The singular values still alive across the adapted modules (the budget in use)."""
        return int(sum(int((p != 0).sum()) for name, p in self.params if "lora_E" in name))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the smoothed importance scores and the rank pattern so far."""
        allocator = self.allocator
        cpu = lambda scores: {k: v.detach().cpu() for k, v in scores.items()}      # noqa: E731
        return {**{key: cpu(getattr(allocator, key)) for key in SCORES}, "rank_pattern": self.config.rank_pattern}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        """Back to a checkpoint's scores (all three: peft restarts a weight's smoothing from zero
        when its last raw score is missing) and rank pattern."""
        for key in SCORES:
            setattr(self.allocator, key, {k: v.to(device) for k, v in state[key].items()})
        self.config.rank_pattern = state["rank_pattern"]


SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")      # peft RankAllocator's per-weight scores
