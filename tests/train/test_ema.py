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


def test_ema_off_is_no_copy_and_eval_weights_are_the_trained_ones():
    """ema_decay 0: no shadow copy, no per-step averaging; validation and export read the
    engine's own weights (the talker's and vocoder's default)."""
    from types import SimpleNamespace

    from voxray.train.ema import load_eval_weights, make_ema, update_ema

    model = torch.nn.Linear(2, 1)
    assert make_ema(model, 0.0) is None and isinstance(make_ema(model, 0.5), EMA)
    engine = SimpleNamespace(module=model, zero_optimization_stage=lambda: 0)
    update_ema(None, engine, step=1)
    target = torch.nn.Linear(2, 1)
    load_eval_weights(target, engine, None)
    assert torch.equal(target.weight, model.weight) and torch.equal(target.bias, model.bias)


def test_resume_keeps_the_runs_decay_and_starts_an_ema_the_checkpoint_lacks(tmp_path):
    """Real DeepSpeed engines (one CPU process, gloo) through ``checkpoint.save``/``load``: an EMA
    resumed with another ``train.ema_decay`` keeps the new decay and the saved average; an EMA
    turned on at resume, from a checkpoint that kept none, starts from the restored weights."""
    import textwrap

    from tests.train.conftest import script_result

    script = textwrap.dedent(f'''
        import json, os, torch
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29534", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        from voxray.config import load_config
        from voxray.train import checkpoint as ckpt
        from voxray.train.data import DataPosition
        from voxray.train.deepspeed_config import deepspeed_config
        from voxray.train.distributed import init_deepspeed_distributed
        from voxray.train.ema import EMA
        from voxray.train.engine import OptimizerSettings, build_engine
        torch.distributed.init_process_group("gloo")
        init_deepspeed_distributed(0, 0, 1)
        cfg = load_config(overrides=["deepspeed.zero_stage=0", "train.batch_size=4", "train.lr=1e-2"])
        def engine():
            torch.manual_seed(0)
            return build_engine(torch.nn.Linear(4, 1), OptimizerSettings.of(cfg.train),
                                deepspeed_config(cfg.train, cfg.deepspeed, 1))[0]
        trained = engine()
        kept = EMA(trained.module, 0.9)
        for _ in range(3):
            trained.backward(trained(torch.randn(4, 4)).pow(2).mean())
            trained.step()
            kept.update(trained.module)
        state = ckpt.TrainerState(step=3)
        out = {{}}
        for name, emas in (("with", {{"model": kept}}), ("without", {{}})):
            folder = os.path.join({str(tmp_path)!r}, name)
            ckpt.save(folder, engines={{"model": trained}}, rank=0, state=state, emas=emas, collate_rng=None,
                      trainable_only=False)
            resumed, ema = engine(), EMA(torch.nn.Linear(4, 1), 0.5)
            out[name] = {{"fresh": ckpt.fresh_emas(folder, {{"model": ema}})}}
            ckpt.load(folder, engines={{"model": resumed}}, rank=0, emas={{"model": ema}}, trainable_only=False)
            target = kept.shadow if name == "with" else trained.module.state_dict()
            out[name].update(decay=ema.decay, gap=max(float((ema.shadow[k] - target[k]).abs().max()) for k in target))
        print("RESULT", json.dumps(out))
    ''')
    out = script_result(script)
    assert out["with"] == {"fresh": [], "decay": 0.5, "gap": 0.0}, out
    assert out["without"] == {"fresh": ["model"], "decay": 0.5, "gap": 0.0}, out
