"""Gradient health below any recipe: layers of parameter names, the explosion warning's rule, the
percentile clip's threshold, and where each optimizer keeps its clip."""

from __future__ import annotations

import numpy as np
import pytest

from voxray.train.engine import FiniteAdamW
from voxray.train.gradients import ExplosionWatch, PercentileClip, layer_of, set_clip


def test_layers_of_parameter_names():
    assert layer_of("encoder.blocks.3.attn.qkv.weight") == "encoder.blocks.3"
    assert layer_of("module.base_model.model.encoder.blocks.0.attn.qkv.lora_A.default.weight") == "encoder.blocks.0"
    assert layer_of("mel_out.weight") == "mel_out"
    assert layer_of("bias") == "(root)"


def test_an_exploded_layer_is_named_against_its_own_median():
    watch = ExplosionWatch()
    for norm in (1.0, 1.2, 0.9, 1.1, 1.0):
        assert watch.check({"encoder.blocks.0": norm, "mel_out": 5.0}) == []
    exploded = watch.check({"encoder.blocks.0": 30.0, "mel_out": 40.0})       # mel_out: 8x its median: fine
    assert exploded == [("encoder.blocks.0", 30.0, 1.0)]
    assert watch.check({"encoder.blocks.0": 35.0}) == []          # still above: named once per episode
    assert watch.check({"encoder.blocks.0": 1.0}) == []           # back under the factor ...
    assert watch.check({"encoder.blocks.0": 40.0}) == [("encoder.blocks.0", 40.0, 1.05)]     # ... a new one
    assert watch.check({"encoder.blocks.0": float("nan")}) == []


def test_percentile_clip_threshold_and_where_it_goes():
    clip = PercentileClip(percentile=50, window=30, fallback=1.0)
    for norm in range(1, 20):
        clip.add(float(norm))
    assert clip.threshold() == 1.0                                 # 19 seen: still train.grad_clip
    clip.add(float("inf"))                                         # a skipped step's norm is not counted
    clip.add(20.0)
    assert clip.threshold() == pytest.approx(np.percentile(range(1, 21), 50))
    for norm in range(21, 60):
        clip.add(float(norm))
    assert clip.threshold() == pytest.approx(np.percentile(range(30, 60), 50))   # the last 30
    import torch

    ours = FiniteAdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3, clip=1.0)

    class Engine:
        optimizer = ours

    assert set_clip(Engine, 0.5) == "clip" and ours.clip == 0.5

    class ZeroOptimizer:
        clip_grad = 1.0

    Engine.optimizer = ZeroOptimizer()
    assert set_clip(Engine, 0.25) == "clip_grad" and Engine.optimizer.clip_grad == 0.25
