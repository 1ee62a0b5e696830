import json
import os
import subprocess
import sys
import textwrap

import pytest

from voxray.config import ConfigError, load_config
from voxray.train.deepspeed_config import batch_math, deepspeed_config


def built(*overrides, world_size=2):
    config = load_config(overrides=list(overrides))
    return deepspeed_config(config.train, config.deepspeed, world_size)


def test_batch_math_in_one_place():
    config = load_config(overrides=["train.batch_size=6", "train.grad_accum=3"])
    assert batch_math(config.train, 4).global_batch == 72
    ds = built("train.batch_size=6", "train.grad_accum=3", world_size=4)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (6, 3, 72)
    with pytest.raises(ValueError, match="world_size"):
        batch_math(config.train, 0)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_precision(precision):
    ds = built(f"deepspeed.precision={precision}", "train.use_gpu=true")      # fp16 is GPU-only; the dict is built anyway
    assert ds["fp16"]["enabled"] == (precision == "fp16") and ds["bf16"]["enabled"] == (precision == "bf16")


def test_zero_stages_and_offload():
    assert built("deepspeed.zero_stage=0")["zero_optimization"] == {"stage": 0}
    assert built("deepspeed.zero_stage=3")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    offloaded = built("deepspeed.zero_stage=2", "deepspeed.offload_optimizer=true")
    assert offloaded["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert offloaded["zero_force_ds_cpu_optimizer"] is False
    assert built("train.grad_clip=0.5")["gradient_clipping"] == 0.5


@pytest.mark.parametrize("override, named", [
    ("deepspeed.zero_stage=4", "deepspeed.zero_stage = 4"),
    ("deepspeed.precision=fp8", "deepspeed.precision = 'fp8'"),
    ("deepspeed.offload_optimizer=true", "zero_stage >= 1"),
    ("train.batch_size=0", "batch_size=0"),
    ("train.warmup_steps=-5", "warmup_steps=-5"),
    ("train.grad_clip=-1", "grad_clip=-1.0"),
    ("train.schedule=linear", "train.schedule = 'linear'"),
    ("loss.pitch=-1", "loss.pitch=-1.0 must be >= 0"),
    ("lora.rank=-2", "rank=-2"),
    ("model.preset=huge", "model.preset = 'huge'"),
])
def test_training_config_errors_name_the_field(override, named):
    overrides = [override] if "offload" not in override else [override, "deepspeed.zero_stage=0"]
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(")):
        load_config(overrides=overrides)


@pytest.mark.integration
def test_real_deepspeed_engine_accepts_every_stage(tmp_path):
    """One CPU process, gloo: DeepSpeed adopts the process group as a worker's does, builds an
    engine from our config and trains a toy model; it compiles no C++ op on the way (its CPU
    backend would JIT-build the inference-only shared-memory all-reduce). Then ``build_engine``'s
    steps at ZeRO-0 (our optimizer clips, no all-reduce over one rank) and at ZeRO-2 (DeepSpeed
    clips) land where plain torch AdamW after ``clip_grad_norm_`` does, with clipping active,
    and the reported gradient norm is the one before clipping."""
    script = textwrap.dedent('''
        import json, os, torch
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        import deepspeed
        from voxray.config import load_config
        from voxray.train.deepspeed_config import deepspeed_config
        from voxray.train.distributed import init_deepspeed_distributed
        torch.distributed.init_process_group("gloo")
        init_deepspeed_distributed(0, 0, 1)
        results = {}
        for stage in (0, 1, 2, 3):
            cfg = load_config(overrides=[f"deepspeed.zero_stage={stage}", "train.batch_size=4", "train.grad_accum=2"])
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
            engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                                              config=deepspeed_config(cfg.train, cfg.deepspeed, 1))
            x = torch.randn(4, 8)
            y = x.sum(1, keepdim=True)
            losses = []
            for _ in range(40):
                loss = ((engine(x) - y) ** 2).mean()
                engine.backward(loss)
                engine.step()
                losses.append(loss.item())
            results[stage] = [engine.global_steps, losses[0], losses[-1]]
        from voxray.train.engine import OptimizerSettings, build_engine, grad_norm
        x, y = torch.randn(6, 8), torch.randn(6, 1)
        def toy():
            torch.manual_seed(1)
            return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        settings = ["train.batch_size=6", "train.grad_clip=0.05", "train.lr=1e-2", "train.weight_decay=0.01",
                    "train.schedule=constant", "train.warmup_steps=0"]
        train = load_config(overrides=settings).train
        plain = toy()
        optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.01, betas=train.betas, eps=train.eps)
        norms = {"torch": []}
        for _ in range(3):
            optimizer.zero_grad()
            ((plain(x) - y) ** 2).mean().backward()
            norms["torch"].append(float(torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.05)))
            optimizer.step()
        gaps, reduces = {}, {}
        for stage in (0, 2):
            cfg = load_config(overrides=[f"deepspeed.zero_stage={stage}", *settings])
            engine, _ = build_engine(toy(), OptimizerSettings.of(cfg.train), deepspeed_config(cfg.train, cfg.deepspeed, 1))
            norms[stage] = []
            for _ in range(3):
                engine.backward(((engine(x) - y) ** 2).mean())
                engine.step()
                norms[stage].append(grad_norm(engine))
            gaps[stage] = max(float((a - b).abs().max()) for a, b in zip(plain.parameters(), engine.module.parameters()))
            reduces[stage] = engine.enable_backward_allreduce
        results["equivalence"] = {"gaps": gaps, "norms": norms, "reduces": reduces}
        print("RESULT", json.dumps(results))
    ''')
    extensions = tmp_path / "torch_extensions"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    assert not extensions.exists() or not any(extensions.iterdir()), list(extensions.rglob("*"))[:5]
    results = json.loads(lines[0][7:])
    equivalence = results.pop("equivalence")
    for stage, (steps, first, last) in results.items():
        assert steps == 20, (stage, steps)          # 40 micro-steps / grad_accum 2
        assert last < 0.5 * first, (stage, first, last)
    norms = equivalence["norms"]
    assert min(norms["torch"]) > 0.05, norms                     # clipping was active on every step
    for stage, gap in equivalence["gaps"].items():
        assert gap < 1e-6, (stage, gap, equivalence)
    for stage in ("0", "2"):
        assert max(abs(a - b) for a, b in zip(norms["torch"], norms[stage])) < 1e-5, norms
    assert equivalence["reduces"] == {"0": False, "2": True}, equivalence      # no all-reduce over one rank
