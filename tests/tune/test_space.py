import pytest

from voxray.config import ConfigError, load_config
from voxray.tune.space import apply, default_space, load_space, parse_space, to_tune


def test_default_space_covers_lr_and_loss_weights_and_lora_rank_when_finetuning():
    plain = {d.key for d in default_space(load_config())}
    assert plain == {"train.lr", "loss.mel", "loss.duration", "loss.pitch", "loss.energy"}
    finetune = default_space(load_config(overrides=["finetune.init_from=runs/base/final", "lora.rank=8"]))
    rank = [d for d in finetune if d.key == "lora.rank"]
    assert rank and rank[0].kind == "choice" and rank[0].values == (4, 8, 16, 32, 64)


def test_yaml_space_and_apply(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {loguniform: [1.0e-4, 1.0e-2]}\ntrain.warmup_steps: {int: [10, 100]}\n"
                    "model.swiglu: {choice: [true, false]}\nloss.mel: {uniform: [0.5, 2]}\n")
    dimensions = load_space(str(path), load_config())
    assert [(d.key, d.kind) for d in dimensions] == [("train.lr", "loguniform"), ("train.warmup_steps", "int"),
                                                     ("model.swiglu", "choice"), ("loss.mel", "uniform")]
    assert set(to_tune(dimensions)) == {"train.lr", "train.warmup_steps", "model.swiglu", "loss.mel"}
    config = apply(load_config(), {"train.lr": 3e-4, "train.warmup_steps": 42, "model.swiglu": False})
    assert (config.train.lr, config.train.warmup_steps, config.model.swiglu) == (3e-4, 42, False)


@pytest.mark.parametrize("space, named", [
    ({"train.learning_rate": {"uniform": [0.1, 1]}}, "unknown config key 'train.learning_rate'"),
    ({"train": {"uniform": [0.1, 1]}}, "unknown config key 'train'"),
    ({"train.lr": {"gaussian": [0.1, 1]}}, "'train.lr': unknown distribution 'gaussian'"),
    ({"train.lr": {"uniform": [1, 0.1]}}, "'train.lr': uniform needs low < high"),
    ({"train.lr": {"loguniform": [0, 0.1]}}, "'train.lr': loguniform needs low > 0"),
    ({"train.lr": {"uniform": [-1, 0.1]}}, "'train.lr': the value -1.0 is not valid"),
    ({"loss.pitch": {"uniform": [-0.5, 1]}}, "'loss.pitch': the value -0.5 is not valid"),
    ({"lora.rank": {"choice": []}}, "'lora.rank': choice needs a non-empty list"),
    ({"train.batch_size": {"int": [0.5, 4]}}, "'train.batch_size': int needs integer bounds"),
    ({"model.preset": {"choice": ["tiny", "huge"]}}, "'model.preset': the value 'huge' is not valid"),
    ({}, "non-empty mapping"),
])
def test_bad_spaces_name_the_key(space, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[")):
        parse_space(space, load_config())


def test_the_default_space_is_the_familys():
    vocoder = {d.key for d in default_space(load_config(family="vocoder"))}
    assert vocoder == {"train.lr", "discriminator.lr", "loss.mel", "loss.feature"}
