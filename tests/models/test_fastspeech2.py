import json

import pyarrow as pa
import pytest
import torch

from voxray.config import load_config
from voxray.data import readers
from voxray.data.batching import collate
from voxray.data.process import Context, process_units, scan_units
from voxray.losses.acoustic import acoustic_losses
from voxray.models.acoustic.fastspeech2 import average_by_durations, build, length_regulate
from tests.conftest import make_ljspeech, sample_lines

WEIGHTS = dict(mel=1.0, duration=0.1, pitch=0.1, energy=0.1, alignment_weight=1.0, binarization_weight=0.1)


@pytest.fixture(scope="module")
def store_rows(tmp_path_factory):
    """Four real utterances through the pipeline's own functions (in-process, no Ray)."""
    corpus = make_ljspeech(tmp_path_factory.mktemp("corpus"), sample_lines(2) + sample_lines(2, language="ms"))
    config = load_config(overrides=["preprocess.store_audio=false"])
    batch = pa.table({"unit": [json.dumps(u) for u in readers.plan(str(corpus), "ljspeech")]})
    context = Context(config)
    context.absorb(scan_units(batch, context).to_pylist())
    rows = [r for r in process_units(batch, context).to_pylist() if r["status"] == "kept"]
    assert len(rows) == 4
    return rows, context


def model_for(context, learn_alignment=True, rotary=True, swiglu=True):
    torch.manual_seed(0)
    return build("tiny", vocab_size=len(context.vocabulary), n_mels=80, n_speakers=len(context.speakers),
                 n_languages=len(context.languages), rotary=rotary, swiglu=swiglu,
                 learn_alignment=learn_alignment, dropout=0.0, pitch_stats=(150.0, 50.0),
                 energy_stats=(25.0, 20.0))


def forward(model, batch):
    return model(batch["tokens"], batch["token_lengths"], batch["speakers"], batch["languages"],
                 batch["mels"], batch["mel_lengths"], batch["pitch"], batch["energy"], batch["durations"])


def test_length_regulate_and_token_averages():
    x = torch.arange(3.0).view(1, 3, 1)
    out = length_regulate(x, torch.tensor([[2, 0, 3]]), 6)
    assert out[0, :, 0].tolist() == [0, 0, 2, 2, 2, 0]
    values = torch.tensor([[1.0, 3.0, 0.0, 4.0, 6.0]])
    assert average_by_durations(values, torch.tensor([[2, 3]])).tolist()[0] == pytest.approx([2.0, 10 / 3])
    assert average_by_durations(values, torch.tensor([[2, 3]]), weights=values > 0).tolist() == [[2.0, 5.0]]


def test_collate(store_rows):
    rows, _ = store_rows
    batch = collate(rows)
    assert batch["tokens"].shape == (4, int(batch["token_lengths"].max()))
    assert batch["mels"].shape == (4, int(batch["mel_lengths"].max()), 80)
    assert batch["pitch"].shape == batch["energy"].shape == batch["mels"].shape[:2]
    assert batch["durations"] is None
    assert (batch["tokens"][batch["token_lengths"].argmin(), batch["token_lengths"].min():] == 0).all()


@pytest.mark.parametrize("rotary, swiglu", [(True, True), (False, False)])
def test_forward_shapes_and_learned_durations(store_rows, rotary, swiglu):
    rows, context = store_rows
    batch = collate(rows)
    out = forward(model_for(context, rotary=rotary, swiglu=swiglu), batch)
    assert out["mel"].shape == batch["mels"].shape
    assert torch.equal(out["durations"].sum(dim=1), batch["mel_lengths"])
    losses = acoustic_losses(out, batch["mels"], batch["token_lengths"], batch["mel_lengths"], **WEIGHTS)
    assert set(losses) == {"mel", "duration", "pitch", "energy", "alignment", "binarization", "total"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_given_durations_are_used_and_no_aligner_is_needed(store_rows):
    rows, context = store_rows
    batch = collate(rows)
    durations = torch.zeros_like(batch["tokens"])
    for i, (n, t) in enumerate(zip(batch["token_lengths"], batch["mel_lengths"])):
        durations[i, :n] = t // n
        durations[i, n - 1] += t - (t // n) * n
    batch["durations"] = durations
    out = forward(model_for(context, learn_alignment=False), batch)
    assert torch.equal(out["durations"], durations) and "attn_log_probs" not in out
    del batch["durations"]
    with pytest.raises(ValueError, match="no durations"):
        forward(model_for(context, learn_alignment=False), {**batch, "durations": None})


def test_tiny_model_overfits_with_a_learned_alignment(store_rows):
    rows, context = store_rows
    batch = collate(rows)
    model = model_for(context)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(150):
        losses = acoustic_losses(forward(model, batch), batch["mels"], batch["token_lengths"],
                                 batch["mel_lengths"], **WEIGHTS)
        optimizer.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["mel"] < 0.5 * first["mel"], (first, last)
    assert last["alignment"] < first["alignment"] and last["duration"] < first["duration"]
    model.eval()
    mel, lengths = model.infer(batch["tokens"], batch["token_lengths"], batch["speakers"], batch["languages"])
    assert torch.isfinite(mel).all()
    ratio = lengths.float() / batch["mel_lengths"].float()
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio


def test_per_token_languages_and_particles(store_rows):
    """Per-token labels enter after the encoder: a model without them ignores them; particle type 0
    adds nothing; the heads read the encoder's own output (the labels cannot leak into what they
    predict); the particle prosody loss looks at particle tokens only; all heads get gradient."""
    rows, context = store_rows
    batch = collate(rows)
    lengths = batch["token_lengths"]
    assert batch["token_languages"] is not None and (batch["token_languages"][0, : int(lengths[0])]
                                                     == batch["languages"][0]).all()
    args = [batch[k] for k in ("tokens", "token_lengths", "speakers", "languages", "mels", "mel_lengths", "pitch",
                               "energy", "durations")]

    def tiny(**extra):
        torch.manual_seed(0)
        return build("tiny", vocab_size=len(context.vocabulary), n_mels=80, n_speakers=len(context.speakers),
                     n_languages=len(context.languages), rotary=True, swiglu=True, learn_alignment=True,
                     dropout=0.0, pitch_stats=(150.0, 50.0), energy_stats=(25.0, 20.0), **extra).eval()

    plain = tiny()
    assert torch.equal(plain(*args)["mel"], plain(*args, batch["token_languages"], batch["tokens"] * 0)["mel"])
    model = tiny(token_labels=True, n_particles=3, language_head=True, particle_head=True)
    none = model(*args, batch["token_languages"], torch.zeros_like(batch["tokens"]))
    assert torch.allclose(none["mel"], model(*args, batch["token_languages"])["mel"], atol=1e-6)
    particles = torch.zeros_like(batch["tokens"])
    particles[:, 2:4] = 2
    marked = model(*args, batch["token_languages"], particles)
    assert not torch.allclose(none["mel"], marked["mel"], atol=1e-4)
    other_languages = model(*args, 1 - batch["token_languages"], particles)
    assert not torch.allclose(other_languages["mel"], marked["mel"], atol=1e-4)
    assert torch.equal(other_languages["language_logits"], marked["language_logits"])     # labels enter after
    assert marked["language_logits"].shape == (*batch["tokens"].shape, len(context.languages))
    assert marked["particle_logits"].shape == (*batch["tokens"].shape, 4)
    parts = acoustic_losses(marked, batch["mels"], batch["token_lengths"], batch["mel_lengths"], **WEIGHTS,
                            mel_mse=1.0, language=0.1, particle=0.2, particle_prosody=0.5,
                            token_languages=batch["token_languages"], token_particles=particles)
    assert {"mel_mse", "language", "particle", "particle_prosody", "language_acc", "particle_acc"} <= set(parts)
    assert 0 <= float(parts["language_acc"]) <= 1
    # the prosody term sees the particle tokens only
    other = {**marked, "pitch": marked["pitch"].clone()}
    other["pitch"][:, 5:] += 3.0
    again = acoustic_losses(other, batch["mels"], batch["token_lengths"], batch["mel_lengths"], **WEIGHTS,
                            particle_prosody=0.5, token_particles=particles)
    assert float(again["particle_prosody"].detach()) == pytest.approx(float(parts["particle_prosody"].detach()))
    other["pitch"][:, 2] += 3.0
    moved = acoustic_losses(other, batch["mels"], batch["token_lengths"], batch["mel_lengths"], **WEIGHTS,
                            particle_prosody=0.5, token_particles=particles)
    assert float(moved["particle_prosody"].detach()) > float(parts["particle_prosody"].detach())
    parts["total"].backward()
    for name in ("language_head.weight", "particle_head.weight", "particle_embedding.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert dict(model.named_parameters())["particle_embedding.weight"].grad[0].abs().sum() == 0   # type 0: none


def test_language_boundaries_and_particles_weigh_their_tokens_and_frames():
    """transition weighs the tokens either side of a language change and the frames they last;
    particle_pitch / particle_duration weigh particle tokens; the means stay normalised (weights
    of 1 give the plain means)."""
    from voxray.losses.acoustic import duration_loss, language_boundaries, token_weights, variance_loss

    text_mask = torch.tensor([[False] * 5 + [True]])
    languages = torch.tensor([[0, 0, 1, 1, 0, 0]])                  # ms ms en en ms | pad
    particles = torch.tensor([[0, 0, 0, 0, 2, 0]])                  # the last word a particle
    assert language_boundaries(languages, text_mask).tolist() == [[False, True, True, True, True, False]]
    out = {"text_mask": text_mask, "durations": torch.tensor([[2, 1, 1, 3, 1, 0]]), "mel": torch.zeros(1, 9, 4)}
    weights = token_weights(out, languages, particles, transition=1.5, particle_pitch=2.0, particle_duration=1.25)
    assert weights["energy"].tolist() == [[1, 1.5, 1.5, 1.5, 1.5, 1]]
    assert weights["pitch"].tolist() == [[1, 1.5, 1.5, 1.5, 3.0, 1]]
    assert weights["duration"].tolist() == [[1, 1.5, 1.5, 1.5, 1.875, 1]]
    assert weights["mel"].tolist() == [[1, 1, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1]]     # 8 frames owned, 1 past
    plain = token_weights(out, languages, particles, transition=1.0, particle_pitch=1.0, particle_duration=1.0)
    assert all(w is None for w in plain.values())
    error = torch.tensor([[1.0, 1.0, 1.0, 1.0, 3.0, 9.0]])
    assert float(variance_loss(error, torch.zeros_like(error), text_mask)) == pytest.approx(13 / 5)
    assert float(variance_loss(error, torch.zeros_like(error), text_mask, weights["pitch"])) == pytest.approx(
        (1 + 1.5 * 3 + 3.0 * 9) / (1 + 1.5 * 3 + 3.0))
    logd = torch.log1p(out["durations"].float())
    assert float(duration_loss(logd, out["durations"], text_mask, weights["duration"])) == 0
