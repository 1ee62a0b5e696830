import itertools

import numpy as np
import pytest
import torch

from voxray.models.alignment import (beta_binomial_log_prior, binarization_loss, forward_sum_loss,
                                     hard_alignment, monotonic_alignment_search)


def brute_force(log_probs):
    frames, tokens = log_probs.shape
    best = None
    for advances in itertools.combinations(range(1, frames), tokens - 1):
        path, token = np.zeros((frames, tokens), int), 0
        for t in range(frames):
            token += t in advances
            path[t, token] = 1
        score = (path * log_probs).sum()
        if best is None or score > best[0]:
            best = (score, path)
    return best[1]


def test_mas_is_the_best_monotonic_path():
    rng = np.random.default_rng(0)
    for _ in range(30):
        frames, tokens = int(rng.integers(3, 9)), int(rng.integers(1, 4))
        log_probs = rng.normal(size=(frames, tokens))
        path = monotonic_alignment_search(log_probs)
        assert (path == brute_force(log_probs)).all()
        assert (path.sum(axis=1) == 1).all() and (path.sum(axis=0) >= 1).all()
    with pytest.raises(ValueError, match="cannot align"):
        monotonic_alignment_search(np.zeros((2, 3)))


def test_batched_hard_alignment_gives_durations_that_sum_to_mel_length():
    log_probs = torch.randn(2, 12, 5)
    hard = hard_alignment(log_probs, torch.tensor([5, 3]), torch.tensor([12, 7]))
    durations = hard.sum(dim=1)
    assert durations[0].sum() == 12 and durations[1].sum() == 7
    assert (durations[1, 3:] == 0).all() and (durations[1, :3] >= 1).all()


def test_prior_is_a_distribution_along_the_diagonal():
    prior = beta_binomial_log_prior(5, 20).exp()
    assert torch.allclose(prior.sum(dim=1), torch.ones(20), atol=1e-5)
    peaks = prior.argmax(dim=1)
    assert peaks[0] == 0 and peaks[-1] == 4 and (peaks.diff() >= 0).all()


def test_forward_sum_prefers_monotonic_alignments():
    tokens, frames = 4, 12
    diagonal = torch.full((1, frames, tokens), -10.0)
    for t in range(frames):
        diagonal[0, t, t * tokens // frames] = 0.0
    reversed_ = diagonal.flip(-1)
    lengths, mel_lengths = torch.tensor([tokens]), torch.tensor([frames])
    good = forward_sum_loss(torch.log_softmax(diagonal, -1), lengths, mel_lengths)
    bad = forward_sum_loss(torch.log_softmax(reversed_, -1), lengths, mel_lengths)
    assert torch.isfinite(good) and good < bad
    hard = hard_alignment(diagonal, lengths, mel_lengths)
    assert binarization_loss(hard, diagonal.exp()) < binarization_loss(hard, reversed_.exp())


def test_diagonality_is_one_on_the_path_and_falls_as_attention_spreads():
    from voxray.models.alignment import diagonality_sums

    frames, tokens = 12, 6
    hard = torch.zeros(1, frames, tokens)
    hard[0, torch.arange(frames), torch.arange(frames) // 2] = 1          # two frames a token
    lengths = torch.tensor([frames])
    near, valid = diagonality_sums(hard, hard, lengths)
    assert valid == frames and near / valid == pytest.approx(1.0)
    uniform = torch.full((1, frames, tokens), 1 / tokens)
    near, _ = diagonality_sums(uniform, hard, lengths)
    # within one token of the path: 2 tokens at the ends, 3 elsewhere
    assert near / frames == pytest.approx((4 * 2 + 8 * 3) / tokens / frames)
    padded = torch.cat([uniform, torch.zeros(1, 4, tokens)], dim=1)
    assert diagonality_sums(padded, torch.cat([hard, torch.zeros(1, 4, tokens)], dim=1), lengths)[1] == frames
