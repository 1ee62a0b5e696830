"""Vocoder training throughput and copy-synthesis quality, measured side by side in one run.

    .venv/bin/python benchmarks/train_vocoder.py [--store STORE] [--steps 120] [--batch-size 8] [--gpu]

On the same feature store (default: the committed sample corpus, preprocessed first), for the
HiFi-GAN and the Vocos-style generator (the `tiny` preset, each against the same discriminators):

  bare loop      one process, plain PyTorch: the recipe's segments, models, losses and step order
                 (discriminator step, then generator step with the discriminator frozen), two AdamW,
                 the exponential schedule; no Ray, no DeepSpeed
  ray+ds 1 / 2   `voxray train vocoder` with 1 and 2 Ray Train workers (two DeepSpeed ZeRO-2
                 engines each), the samples/s the recipe logs after the first log interval

then the generator alone (forward + backward of the mel loss, no discriminator) at the `tiny` and
`v1` sizes: what makes the Vocos-style generator cheaper. Last, copy synthesis on the test split
with the exported generators of the 1-worker runs against Griffin-Lim: mel L1 between the
resynthesised audio's log-mel and the stored mel, each output scaled to the recording's RMS first
(Griffin-Lim peak-normalises). Each trainer gets one CPU (one torch thread). Target: bare / ray+ds
1 worker <= 1.15. With ``--gpu`` (a CUDA machine): bf16 samples/s of HiFi-GAN v1 on one GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from harness import gpu_run, ray_run, start     # benchmarks/ is on sys.path


def _rows(store: str, split: str) -> list[dict]:
    from voxray.data.store import arrow_rows, read_split

    return arrow_rows(read_split(store, split, ["id", "n_frames", "mel", "audio"]))


def bare_loop(store: str, generator: str, steps: int, batch_size: int, device: str) -> dict:
    """Plain PyTorch GAN steps on the recipe's segments; samples/s after 5 warm-up steps."""
    import numpy as np
    import torch

    from voxray.config import load_config
    from voxray.models.vocoder import build_discriminators, build_generator, generator_args
    from voxray.train.engine import frozen
    from voxray.train.recipes.vocoder import discriminator_step_loss, generator_step_losses, segments
    from voxray.train.schedules import scheduler

    torch.set_num_threads(1)
    config = load_config(overrides=[f"model.generator={generator}", f"train.batch_size={batch_size}"],
                         family="vocoder")
    spec, train = config.audio, config.train
    torch.manual_seed(0)
    g = build_generator(generator_args(generator, "tiny", n_mels=spec.n_mels, n_fft=spec.n_fft,
                                       hop_length=spec.hop_length)).to(device)
    d = build_discriminators("tiny").to(device)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=train.lr, betas=train.betas, eps=train.eps) for m in (g, d)]
    schedules = [scheduler(o, schedule="exponential", warmup_steps=0, max_steps=steps) for o in optimizers]
    rows, rng = _rows(store, "train"), np.random.default_rng(0)
    samples, started = 0, None
    for step in range(steps):
        if step == 5:
            started, samples = time.perf_counter(), 0
        batch = segments([rows[i] for i in rng.integers(0, len(rows), batch_size)], rng, train.segment_frames, spec)
        mel, real = batch["mel"].to(device), batch["audio"].to(device)
        fake = g(mel)
        d_loss = discriminator_step_loss(d, real, fake)
        optimizers[1].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers[1].step()
        with frozen(d):
            parts = generator_step_losses(d, real, fake, batch, config, adversarial=True)
            optimizers[0].zero_grad(set_to_none=True)
            parts["generator"].backward()
        optimizers[0].step()
        for schedule in schedules:
            schedule.step()
        samples += real.shape[0] * real.shape[-1]
    return {"samples_per_s": samples / (time.perf_counter() - started)}


def generator_only(generator: str, preset: str, batch_size: int, steps: int = 6) -> float:
    """Seconds per forward + backward of the generator's mel loss on one batch of segments."""
    import torch

    from voxray.audio import AudioSpec
    from voxray.dsp import log_mel
    from voxray.models.vocoder import build_generator, generator_args

    torch.set_num_threads(1)
    spec = AudioSpec()
    model = build_generator(generator_args(generator, preset, n_mels=spec.n_mels, n_fft=spec.n_fft,
                                           hop_length=spec.hop_length))
    mel = torch.randn(batch_size, spec.n_mels, 32) - 4
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        audio = model(mel)
        (log_mel(audio.squeeze(1), spec) - mel).abs().mean().backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def copy_synthesis(store: str, final: str | None) -> float:
    """Mean mel L1 over the test split of audio resynthesised from the stored mels (level-matched)."""
    import numpy as np
    import torch

    from voxray.audio import AudioSpec
    from voxray.dsp import griffin_lim, log_mel
    from voxray.synthesize import load_vocoder

    spec = AudioSpec(**json.loads(Path(store, "stats.json").read_text())["audio_spec"])
    vocoder = load_vocoder(final) if final else None
    errors = []
    for row in _rows(store, "test"):
        mel = torch.from_numpy(np.array(row["mel"], dtype=np.float32).reshape(int(row["n_frames"]), -1))
        audio = vocoder(mel) if vocoder else griffin_lim(mel, spec, iterations=60)
        recorded = torch.from_numpy(np.array(row["audio"], dtype=np.float32))
        audio = audio * (recorded.pow(2).mean().sqrt() / audio.pow(2).mean().sqrt().clamp(min=1e-8))
        errors.append(float((log_mel(audio.float(), spec).T - mel).abs().mean()))
    return statistics.mean(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--gpu", action="store_true", help="also HiFi-GAN v1 in bf16 on a CUDA GPU")
    args = parser.parse_args()

    from train_acoustic import ensure_store          # benchmarks/ is on sys.path

    scratch = start()
    store = ensure_store(args.store, scratch)
    common = [f"train.batch_size={args.batch_size}", f"train.max_steps={args.steps}", f"train.val_every={args.steps}",
              "train.log_every=10", "train.cpus_per_worker=1", "deepspeed.zero_stage=2"]
    results = {}
    for generator in ("hifigan", "vocos"):
        bare = bare_loop(store, generator, max(30, args.steps // 4), args.batch_size, "cpu")
        one = ray_run("vocoder", store, scratch, f"{generator}-1", [*common, f"model.generator={generator}", "train.num_workers=1"])
        two = ray_run("vocoder", store, scratch, f"{generator}-2", [*common, f"model.generator={generator}", "train.num_workers=2"])
        results[generator] = {"bare": bare, "one": one, "two": two}
    print(f"\ngenerated samples/s (tiny, batch {args.batch_size} x 8192 samples per worker, {args.steps} steps, "
          "1 CPU per worker)")
    print(f"  {'':28}{'HiFi-GAN':>12}{'Vocos-style':>14}")
    for label, key in (("bare PyTorch GAN loop", "bare"), ("Ray Train + DS, 1 worker", "one"),
                       ("Ray Train + DS, 2 workers", "two")):
        print(f"  {label:28}" + "".join(f"{results[g][key]['samples_per_s']:>12,.0f}  " for g in results))
    for g in results:
        bare, one, two = (results[g][k]["samples_per_s"] for k in ("bare", "one", "two"))
        print(f"  {g}: overhead bare / ray 1 worker {bare / one:.3f} (target <= 1.15); 2 workers / 1 worker "
              f"{two / one:.2f}; end to end {results[g]['one']['wall_s']:.0f} s / {results[g]['two']['wall_s']:.0f} s")

    print("\ngenerator alone, forward + backward of the mel loss, ms per batch (1 CPU):")
    for preset in ("tiny", "v1"):
        hifigan, vocos = (generator_only(g, preset, args.batch_size) * 1000 for g in ("hifigan", "vocos"))
        print(f"  {preset:5} HiFi-GAN {hifigan:8.1f}  Vocos-style {vocos:8.1f}  ratio {hifigan / vocos:.1f}x")

    print(f"\ncopy synthesis on the test split, mel L1 (lower is better) after {args.steps} steps:")
    print(f"  Griffin-Lim (60 iterations)   {copy_synthesis(store, None):.3f}")
    for g in results:
        print(f"  {g:28}  {copy_synthesis(store, results[g]['one']['run'] + '/final'):.3f}")

    if args.gpu:
        gpu = gpu_run("vocoder", store, scratch, ["train.batch_size=16", f"train.max_steps={args.steps}",
                                                  f"train.val_every={args.steps}", "train.log_every=10",
                                                  "model.preset=v1"])
        print(f"\nGPU: HiFi-GAN v1, bf16, 1 worker: {gpu['samples_per_s']:,.0f} samples/s "
              f"({gpu['samples_per_s'] / 256:,.0f} input mel frames/s)")


if __name__ == "__main__":
    main()
