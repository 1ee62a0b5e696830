import pytest
import torch

from voxray.train.schedules import lr_multiplier, scheduler


def test_warmup_then_cosine_to_the_floor():
    kw = dict(schedule="cosine", warmup_steps=10, max_steps=110)
    assert lr_multiplier(0, **kw) == pytest.approx(0.1)
    assert lr_multiplier(9, **kw) == pytest.approx(1.0)
    assert lr_multiplier(60, **kw) == pytest.approx(0.55)
    assert lr_multiplier(110, **kw) == pytest.approx(0.1)
    assert lr_multiplier(500, **kw) == pytest.approx(0.1)


def test_noam_and_constant():
    assert lr_multiplier(399, schedule="noam", warmup_steps=100, max_steps=1000) == pytest.approx(0.5)
    assert lr_multiplier(50, schedule="constant", warmup_steps=0, max_steps=10) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier(50, schedule="linear", warmup_steps=0, max_steps=10)


def test_scheduler_state_round_trips():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = scheduler(optimizer, schedule="cosine", warmup_steps=5, max_steps=50)
    for _ in range(7):
        optimizer.step()
        sched.step()
    resumed = scheduler(optimizer, schedule="cosine", warmup_steps=5, max_steps=50)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.last_epoch == 7 and resumed.get_last_lr() == sched.get_last_lr()
