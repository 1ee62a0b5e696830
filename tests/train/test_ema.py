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
