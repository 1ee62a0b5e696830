"""The talker model: the bugs users of codec-LM fine-tuning hit (labels shifted twice, a depth head
that sees the future, heads without gradient, no end-of-speech target, a KV cache that disagrees
with teacher forcing)."""

from __future__ import annotations

import pytest
import torch

from voxray.losses.talker import talker_losses
from voxray.models.talker import CONDITIONING, HEADS, IGNORE, build, frame_grid, undelay

V, K = 16, 3


def model(head: str, n_codebooks: int = K, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("tiny", vocab_size=12, n_speakers=2, n_languages=2, n_codebooks=n_codebooks, codebook_size=V,
                 codebook_head=head, dropout=0.0, **extra)


def batch(n_codebooks: int = K, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    token_lengths, code_lengths = torch.tensor([5, 3]), torch.tensor([4, 7])
    tokens = torch.randint(1, 12, (2, 5), generator=g)
    tokens[1, 3:] = 0
    codes = torch.randint(0, V, (2, 7, n_codebooks), generator=g)
    codes[0, 4:] = 0
    return {"tokens": tokens, "token_lengths": token_lengths, "speakers": torch.tensor([0, 1]),
            "languages": torch.tensor([1, 0]), "codes": codes, "code_lengths": code_lengths}


def test_frame_grid_shifts_once_and_ends_with_end_of_speech():
    codes = torch.arange(12).reshape(4, 3)
    inputs, targets = frame_grid(codes, V, delay=False)
    assert torch.equal(inputs, codes) and torch.equal(targets[:4], codes)
    assert targets[4].tolist() == [V, IGNORE, IGNORE]
    inputs, targets = frame_grid(codes, V, delay=True)
    assert targets.shape == (6, 3) and inputs.shape == (5, 3)
    assert targets[:, 0].tolist() == [0, 3, 6, 9, V, IGNORE]            # codebook 0, then end of speech
    assert targets[:, 2].tolist() == [IGNORE, IGNORE, 2, 5, 8, 11]      # codebook 2 two steps late
    assert (inputs[0, 1:] == V).all()                                   # nothing yet: "no code"
    assert torch.equal(undelay(torch.cat([targets.clamp(min=0), torch.zeros(3, 3, dtype=torch.long)]), 4), codes)


@pytest.mark.parametrize("head", HEADS)
def test_every_row_has_its_end_of_speech_target_and_every_head_learns(head):
    net = model(head)
    out = net(batch())
    logits, targets, where = out["codebooks"][0]
    assert int((targets == V).sum()) == 2                               # one end of speech per row
    assert [int(t.numel()) for _, t, _ in out["codebooks"]] == [4 + 1 + 7 + 1, 4 + 7, 4 + 7]   # frames (+ end)
    talker_losses(out, text_weight=0.5)["total"].backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("head", HEADS)
def test_kv_cache_decoding_gives_the_teacher_forced_logits(head):
    net = model(head).eval()
    data = batch()
    with torch.no_grad():
        out = net(data)
        for b in range(2):
            n_tokens, n_frames = int(data["token_lengths"][b]), int(data["code_lengths"][b])
            inputs, targets = frame_grid(data["codes"][b, :n_frames], V, net.delay)
            hidden, caches, position = net.prefill(data["tokens"][b, :n_tokens], int(data["speakers"][b]),
                                                   int(data["languages"][b]))
            for step in range(len(targets)):
                for k in range(K):
                    logits, _, where = out["codebooks"][k]
                    if targets[step, k] == IGNORE:
                        continue
                    row = int(where[:b].sum()) + int(where[b, : 2 + n_tokens + step].sum())   # its index in logits
                    if k == 0 or not net.uses_depth:
                        cached = net.heads[k](hidden)
                    else:
                        cached = net.depth_logits(hidden[None], targets[step, :-1][None])[k - 1][0]
                    torch.testing.assert_close(cached, logits[row], atol=1e-5, rtol=1e-4)
                if step < len(inputs):
                    hidden = net.advance(inputs[step], caches, position)
                    position += 1


def test_the_depth_head_sees_past_frames_and_earlier_codebooks_only():
    net = model("depth").eval()
    data = batch()
    with torch.no_grad():
        base = net(data)["codebooks"]
        t, k = 2, 1                                                    # frame 2, codebook 1 of row 0
        row = 2                                                        # frame 2's index among row 0's targets
        for frame, book, changes in [(2, 1, False), (2, 2, False), (3, 0, False), (2, 0, True), (1, 2, True)]:
            changed = {key: value.clone() for key, value in data.items()}
            changed["codes"][0, frame, book] = (changed["codes"][0, frame, book] + 5) % V
            logits = net(changed)["codebooks"][k][0][row]
            assert (not torch.allclose(logits, base[k][0][row])) == changes, (frame, book)


def test_a_model_that_learns_to_copy_predicts_the_next_frame():
    """Frames count up (frame t+1 = frame t + 1): after training, the output at frame t is frame t+1
    (labels shifted twice would give t+2; not shifted, t)."""
    torch.manual_seed(0)
    net = model("parallel", n_codebooks=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(150):
        starts = torch.randint(0, V - 8, (8,))
        codes = (starts[:, None] + torch.arange(8))[..., None]
        data = {"tokens": torch.ones(8, 2, dtype=torch.long), "token_lengths": torch.full((8,), 2),
                "speakers": torch.zeros(8, dtype=torch.long), "languages": torch.zeros(8, dtype=torch.long),
                "codes": codes, "code_lengths": torch.full((8,), 8)}
        optimizer.zero_grad()
        talker_losses(net(data))["total"].backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        hidden, caches, position = net.prefill(torch.ones(2, dtype=torch.long), 0, 0)
        hits = 0
        for value in range(3, 9):
            hidden = net.advance(torch.tensor([value]), caches, position)
            position += 1
            hits += int(net.heads[0](hidden).argmax()) == value + 1
    assert hits >= 5, hits


@pytest.mark.parametrize("head", HEADS)
def test_generation_makes_codes_in_range_and_stops(head):
    net = model(head).eval()
    codes, ended = net.generate(torch.tensor([3, 4, 5]), 1, 0, max_frames=6, temperature=1.0,
                                generator=torch.Generator().manual_seed(0))
    assert codes.shape[1] == K and codes.shape[0] <= 6 and codes.dtype == torch.long
    assert ((codes >= 0) & (codes < V)).all()
    assert ended or codes.shape[0] == 6
    greedy_a, _ = net.generate(torch.tensor([3, 4, 5]), 1, 0, max_frames=4, temperature=0)
    greedy_b, _ = net.generate(torch.tensor([3, 4, 5]), 1, 0, max_frames=4, temperature=0)
    assert torch.equal(greedy_a, greedy_b)


def test_activation_checkpointing_gives_the_same_gradients():
    data = batch()
    grads = []
    for checkpointing in (False, True):
        net = model("depth", checkpointing=checkpointing)
        talker_losses(net(data))["total"].backward()
        grads.append(net.decoder.blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def conditioned(head: str, conditioning: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    net = model(head, conditioning=conditioning, n_mels=6)
    data = batch()
    data["ref_mels"], data["ref_mel_lengths"] = torch.randn(2, 9, 6), torch.tensor([9, 5])
    data["prompt_frames"] = torch.tensor([0, 3]) if conditioning == "prompt" else torch.zeros(2, dtype=torch.long)
    return net, data


@pytest.mark.parametrize("conditioning", CONDITIONING)
def test_each_way_of_knowing_the_voice_trains(conditioning):
    net, data = conditioned("depth", conditioning)
    out = net(data)
    prompt = int(data["prompt_frames"][1])
    assert [int(t.numel()) for _, t, _ in out["codebooks"]] == [13 - prompt, 11 - prompt, 11 - prompt]
    talker_losses(out, text_weight=0.5)["total"].backward()
    voice = {"table": lambda: net.speaker_embedding.weight, "prompt": lambda: net.prompted,
             "reference": lambda: net.reference.convs[0].weight}[conditioning]()
    assert voice.grad is not None and voice.grad.abs().sum() > 0


@pytest.mark.parametrize("head", HEADS)
def test_prompt_frames_are_given_not_learnt(head):
    """Row 1's first 3 frames are the prompt: none of their targets count, frame 3 onwards and the
    end of speech do; prefilled with the prompt, the cache predicts frame 3 as teacher forcing does."""
    net, data = conditioned(head, "prompt")
    net.eval()
    with torch.no_grad():
        out = net(data)
        logits, targets, where = out["codebooks"][0]
        row1 = targets[int(where[0].sum()):]
        assert row1.tolist() == data["codes"][1, 3:7, 0].tolist() + [V]
        if head != "delay":                                       # a delayed prompt is fed step by step
            hidden, _, _ = net.prefill(data["tokens"][1, :3], 1, 0, prompt=data["codes"][1, :3])
            torch.testing.assert_close(net.heads[0](hidden), logits[int(where[0].sum())], atol=1e-5, rtol=1e-4)
        codes, _ = net.generate(data["tokens"][1, :3], prompt=data["codes"][1, :3], max_frames=4, temperature=0)
        assert codes.shape[1] == K and len(codes) <= 4                # the new frames only


def test_a_reference_talker_needs_a_reference():
    net, _ = conditioned("parallel", "reference")
    with pytest.raises(ValueError, match="conditioned on a reference recording"):
        net.generate(torch.tensor([3, 4]), max_frames=2)
    codes, _ = net.eval().generate(torch.tensor([3, 4]), max_frames=2, reference=torch.randn(7, 6))
    assert codes.shape[1] == K
