"""Two gloo processes on this CPU: the vocoder recipe's discriminator step on DeepSpeed engines
against plain PyTorch DDP on the same batch, then its generator step with the discriminator
frozen. Writes OUT/rank_<r>.json: ``python -m tests.train.vocoder_gradients STAGE PRECISION OUT``.

Checks DeepSpeed's GAN pitfalls where they would bite: the discriminator's gradients (reduced
over both ranks) equal DDP's (#8224 made ZeRO-2 + bf16 gradients silently wrong for a module
used twice in one backward), and the generator's backward leaves them untouched (#4923)."""

from __future__ import annotations

import copy
import json
import os
import sys

import torch
import torch.distributed as dist


def _run(rank: int, stage: int, precision: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    import deepspeed
    from deepspeed.utils import safe_get_full_grad

    from voxray.config import load_config
    from voxray.models.vocoder import build_discriminators, build_generator, generator_args
    from voxray.train.engine import frozen
    from voxray.train.recipes.vocoder import build_engines, discriminator_step_loss, generator_step_losses

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    config = load_config(overrides=[f"deepspeed.zero_stage={stage}", f"deepspeed.precision={precision}",
                                    "train.batch_size=2"], family="vocoder")
    spec = config.audio
    torch.manual_seed(0)                                   # the same weights on both ranks
    generator = build_generator(generator_args("hifigan", "tiny", n_mels=spec.n_mels, n_fft=spec.n_fft,
                                               hop_length=spec.hop_length))
    discriminator = build_discriminators("tiny")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    reference = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(discriminator).to(dtype))
    (g_engine, _), (d_engine, _) = build_engines(config, generator, discriminator, 2)

    torch.manual_seed(100 + rank)                          # each rank its own batch
    frames = 8
    batch = {"mel": torch.randn(2, spec.n_mels, frames) - 5, "audio": 0.3 * torch.randn(2, 1, frames * spec.hop_length),
             "frames": torch.tensor([frames, frames - 3])}
    mel, real = batch["mel"].to(dtype), batch["audio"].to(dtype)
    fake = g_engine(mel)

    d_loss = discriminator_step_loss(d_engine, real, fake)
    d_engine.backward(d_loss)
    names = [name for name, _ in discriminator.named_parameters()]
    ours = {name: safe_get_full_grad(p).float().clone() for name, p in d_engine.module.named_parameters()}
    ref_loss = discriminator_step_loss(reference, real, fake.detach())
    ref_loss.backward()
    theirs = {name: p.grad.float() for name, p in reference.module.named_parameters()}
    worst = max((ours[n] - theirs[n]).norm().item() / max(theirs[n].norm().item(), 1e-12) for n in names)
    overall = (torch.cat([(ours[n] - theirs[n]).flatten() for n in names]).norm()
               / torch.cat([theirs[n].flatten() for n in names]).norm()).item()
    d_engine.step()

    def held_gradients() -> dict:
        """The discriminator's ``.grad`` (safe_get_full_grad is for right after a backward only)."""
        return {name: None if p.grad is None else p.grad.float().clone() for name, p in d_engine.module.named_parameters()}

    before = held_gradients()
    with frozen(d_engine.module):
        parts = generator_step_losses(d_engine.module, real, fake, batch, config, adversarial=True)
        g_engine.backward(parts["generator"])
    after = held_gradients()
    untouched = all((before[n] is None and after[n] is None)
                    or (before[n] is not None and after[n] is not None and torch.equal(before[n], after[n]))
                    for n in names)
    g_engine.step()
    with open(os.path.join(out, f"rank_{rank}.json"), "w") as handle:
        json.dump({"rank": rank, "worst_relative_error": worst, "relative_error": overall, "d_loss": float(d_loss),
                   "reference_loss": float(ref_loss), "discriminator_untouched": untouched,
                   "trainable_again": all(p.requires_grad for p in discriminator.parameters()),
                   "generator_loss": float(parts["generator"])}, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    from voxray.cluster import free_port

    stage, precision, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    mp.spawn(_run, args=(stage, precision, free_port(), out), nprocs=2)
