"""AdaLoRA (``lora.adalora``): peft's rank allocator driven around DeepSpeed's ``engine.step()``
lands where peft's own documented loop does, resumes exactly from a checkpoint, and is refused
where it cannot work."""

from __future__ import annotations

import textwrap

import pytest

from voxray.config import ConfigError, load_config
from tests.conftest import TALKER_CPU_CONFIG
from tests.train.conftest import script_result


@pytest.mark.integration
def test_adalora_under_deepspeed_matches_peft_and_resumes_exactly(tmp_path):
    """One CPU process, gloo. A toy model with AdaLoRA adapters (rank 4 -> 2) trained 12 steps:
    peft's documented loop (plain AdamW; ``update_and_allocate`` after ``step``; its regulariser
    through ``outputs.loss``) against voxray's ``build_engine`` at ZeRO-0 and ZeRO-2 with
    ``AdaLoraSteps`` and its ``penalty``: the same weights and rank pattern (at ZeRO-2 only if the
    pruned singular values are written into the optimizer's fp32 masters). Then ZeRO-2 stopped at
    step 6 through ``checkpoint.save`` with the allocator's state and resumed into fresh objects:
    the 12-step result again."""
    script = textwrap.dedent(f'''
        import json, os, types, torch
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29537", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        from voxray.config import load_config
        from voxray.models.adapters import apply_lora
        from voxray.train import checkpoint as ckpt
        from voxray.train.adalora import AdaLoraSteps
        from voxray.train.deepspeed_config import deepspeed_config
        from voxray.train.distributed import init_deepspeed_distributed
        from voxray.train.engine import OptimizerSettings, build_engine
        torch.distributed.init_process_group("gloo")
        init_deepspeed_distributed(0, 0, 1)

        class Toy(torch.nn.Module):
            def __init__(self, as_output):
                super().__init__()
                self.q, self.o, self.as_output = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8), as_output
            def forward(self, x, y):
                loss = ((self.o(torch.tanh(self.q(x))) - y) ** 2).mean()
                return types.SimpleNamespace(loss=loss) if self.as_output else {{"mse": loss}}

        settings = ["train.lr=2e-2", "train.schedule=constant", "train.warmup_steps=0", "train.grad_clip=1e6",
                    "train.weight_decay=0.0", "train.batch_size=6", "lora.rank=4", "lora.adalora=true",
                    "lora.target_rank=2", "lora.adalora_warmup=2", "lora.adalora_final=3", "lora.adalora_interval=2",
                    "train.max_steps=12"]
        torch.manual_seed(5)
        data = [(torch.randn(6, 8), torch.randn(6, 8)) for _ in range(12)]

        def model(cfg, as_output):
            torch.manual_seed(0)
            return apply_lora(Toy(as_output), cfg.lora, target_modules=r"^(q|o)$", total_steps=12)

        def alive(m):
            return {{n: [bool(v) for v in p.detach().flatten()] for n, p in m.named_parameters() if "lora_E" in n}}

        def weights(m):
            return {{n.replace("module.", ""): p.detach().clone() for n, p in m.named_parameters() if "lora_" in n}}

        cfg = load_config(overrides=settings)
        peft = model(cfg, True)
        optimizer = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=2e-2, weight_decay=0.0,
                                      betas=cfg.train.betas, eps=cfg.train.eps)
        for step, (x, y) in enumerate(data, 1):
            # peft's AdaLoraModel.forward adds the regulariser to outputs.loss; PeftModel.forward
            # skips it for a model without a task type (it calls the base model directly)
            peft.base_model(x, y).loss.backward()
            optimizer.step()
            peft.base_model.update_and_allocate(step)
            optimizer.zero_grad()
        reference, pattern = weights(peft), alive(peft)

        def engine(stage):
            cfg = load_config(overrides=[*settings, f"deepspeed.zero_stage={{stage}}"])
            built, _ = build_engine(model(cfg, False), OptimizerSettings.of(cfg.train),
                                    deepspeed_config(cfg.train, cfg.deepspeed, 1))
            return built, AdaLoraSteps.of(built.module)

        def train(built, steps, first, last):
            for step in range(first, last + 1):
                x, y = data[step - 1]
                built.backward(built(x, y)["mse"] + steps.penalty())
                steps.before_step()
                built.step()
                steps.after_step(step)

        out = {{}}
        for stage in (0, 2):
            built, steps = engine(stage)
            train(built, steps, 1, 12)
            got = weights(built.module)
            out[stage] = {{"gap": max(float((got[n] - reference[n]).abs().max()) for n in reference),
                          "same_pattern": alive(built.module) == pattern, "ranks": steps.ranks()}}
        built, steps = engine(2)
        train(built, steps, 1, 6)
        folder = os.path.join({str(tmp_path)!r}, "ckpt")
        ckpt.save(folder, engines={{"model": built}}, rank=0, state=ckpt.TrainerState(step=6), emas={{}},
                  collate_rng=None, trainable_only=True, extras={{"adalora_model": steps.state()}})
        scored = len(steps.state()["exp_avg_ipt"])
        built, steps = engine(2)
        ckpt.load(folder, engines={{"model": built}}, rank=0, emas={{}}, trainable_only=True)
        steps.load(ckpt.read_extra(folder, "adalora_model"), torch.device("cpu"))
        train(built, steps, 7, 12)
        got = weights(built.module)
        out["resumed"] = {{"gap": max(float((got[n] - reference[n]).abs().max()) for n in reference),
                          "same_pattern": alive(built.module) == pattern, "scored": scored}}
        out["reference_ranks"] = sum(sum(v) for v in pattern.values())
        print("RESULT", json.dumps(out))
    ''')
    out = script_result(script)
    assert out["reference_ranks"] == 4, out                     # 2 modules x target rank 2: pruned from 8
    for stage in ("0", "2"):
        assert out[stage]["same_pattern"] and out[stage]["ranks"] == 4, out
        assert out[stage]["gap"] < 1e-5, out
    assert out["resumed"]["scored"] > 0 and out["resumed"]["same_pattern"], out
    assert out["resumed"]["gap"] < 1e-5, out


@pytest.mark.parametrize("overrides, message", [
    (["lora.adalora=true"], "lora.adalora needs lora.rank > 0"),
    (["lora.adalora=true", "lora.rank=8", "lora.dora=true"], "unset lora.dora and lora.ff_rank"),
    (["lora.adalora=true", "lora.rank=4", "lora.target_rank=8"], "prunes from lora.rank down"),
    (["lora.adalora=true", "lora.rank=8", "deepspeed.zero_stage=3"], "ZeRO-3 partitions"),
    (["lora.adalora=true", "lora.rank=8", "train.max_steps=600"], "leave no steps of train.max_steps=600"),
    (["lora.adalora=true", "lora.rank=8", "finetune.init_from=x", "finetune.export=adapter"],
     "export merged"),
])
def test_adalora_settings_that_cannot_work_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TALKER_CPU_CONFIG, ["deepspeed.zero_stage=2", "train.max_steps=2000", *overrides])


def test_a_sweep_under_adalora_varies_the_rank_it_prunes_to():
    from voxray.train.recipes import talker

    config = load_config(TALKER_CPU_CONFIG, ["deepspeed.zero_stage=2", "train.max_steps=2000", "lora.rank=8",
                                             "lora.adalora=true", "finetune.init_from=x"])
    space = talker.search_space(config)
    assert space["lora.target_rank"] == {"choice": [1, 2, 4, 8]} and "lora.rank" not in space
