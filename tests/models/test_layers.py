import pytest
import torch

from voxray.models.layers import (RotaryEmbedding, SelfAttention, TransformerStack, VariancePredictor,
                                  padding_mask)


def test_padding_mask():
    assert padding_mask(torch.tensor([2, 4])).tolist() == [[False, False, True, True], [False] * 4]


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rotary = RotaryEmbedding(8)
    q, k = torch.randn(8), torch.randn(8)
    sequence = lambda vec, length: vec.expand(1, 1, length, 8)  # same vector at every position
    rq, rk = rotary(sequence(q, 10)), rotary(sequence(k, 10))
    score = lambda i, j: (rq[0, 0, i] * rk[0, 0, j]).sum()
    assert torch.allclose(score(2, 5), score(6, 9), atol=1e-5)
    assert not torch.allclose(score(2, 5), score(2, 6), atol=1e-3)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


@pytest.mark.parametrize("rotary, swiglu", [(True, True), (False, False)])
def test_stack_ignores_padding(rotary, swiglu):
    torch.manual_seed(0)
    stack = TransformerStack(2, 16, 2, 32, 3, 0.0, rotary, swiglu).eval()
    x = torch.randn(1, 5, 16)
    short = stack(x[:, :3], padding_mask(torch.tensor([3])))
    padded = torch.cat([x[:, :3], torch.randn(1, 2, 16) * 100], dim=1)
    long = stack(padded, padding_mask(torch.tensor([3]), 5))
    assert torch.allclose(short, long[:, :3], atol=1e-5)
    assert (long[:, 3:] == 0).all()


def test_attention_and_variance_shapes():
    attention = SelfAttention(16, 4, 0.0, rotary=True)
    mask = padding_mask(torch.tensor([5, 3]))
    assert attention(torch.randn(2, 5, 16), mask).shape == (2, 5, 16)
    predicted = VariancePredictor(16, 8, 3, 0.0)(torch.randn(2, 5, 16), mask)
    assert predicted.shape == (2, 5) and (predicted[1, 3:] == 0).all()
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 3, 0.0, rotary=False)
