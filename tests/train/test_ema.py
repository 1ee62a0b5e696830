import pytest
import torch

from voxray.train.ema import EMA


def test_ema_tracks_and_restores():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["weight"], start + 0.1)
    copy = EMA(model, decay=0.5)
    copy.load_state_dict(ema.state_dict())
    assert copy.decay == pytest.approx(0.9) and torch.equal(copy.shadow["weight"], ema.shadow["weight"])
    target = torch.nn.Linear(2, 1)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])


def test_ema_off_is_no_copy_and_eval_weights_are_the_trained_ones():
    """ema_decay 0: no shadow copy, no per-step averaging; validation and export read the
    engine's own weights (the talker's and vocoder's default)."""
    from types import SimpleNamespace

    from voxray.train.ema import load_eval_weights, make_ema, update_ema

    model = torch.nn.Linear(2, 1)
    assert make_ema(model, 0.0) is None and isinstance(make_ema(model, 0.5), EMA)
    engine = SimpleNamespace(module=model, zero_optimization_stage=lambda: 0)
    update_ema(None, engine, step=1)
    target = torch.nn.Linear(2, 1)
    load_eval_weights(target, engine, None)
    assert torch.equal(target.weight, model.weight) and torch.equal(target.bias, model.bias)
