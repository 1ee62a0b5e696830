"""docs/adding-a-family.md, done: the toy family of ``toy_family.py`` registered in the config
table and the recipe table (what the doc's two dispatch lines do in the package) trains from the
CLI, resumes, exports a kept checkpoint, shows its keys in --help-config and docs/config.md, and
gives sweeps a valid default space, with nothing else in voxray changed."""

from __future__ import annotations

import pytest

from tests.train import toy_family
from tests.train.conftest import metrics
from voxray import cli
from voxray.config.loading import FAMILIES, load_config, reference_markdown
from voxray.export import read_final
from voxray.train.recipes import RECIPES

pytestmark = pytest.mark.integration


def test_a_fourth_family_trains_resumes_exports_and_sweeps_through_the_core(sample_store, tmp_path, monkeypatch,
                                                                            capsys):
    from voxray.tune.space import default_space

    monkeypatch.setitem(FAMILIES, "toy", toy_family.ToyConfig)         # config/loading.py's table
    monkeypatch.setitem(RECIPES, "toy", toy_family.RECIPE)              # train/recipes/__init__.py's table
    assert cli.main(["train", "toy", "--help-config"]) == 0
    assert "model.hidden = 32  # width of the next-frame predictor's hidden layer [>= 1]" in capsys.readouterr().out
    assert "## toy" in reference_markdown() and "| `loss.l1` | `1.0` |" in reference_markdown()

    run = str(tmp_path / "toy")
    common = ["train", "toy", "--data", sample_store, "--output", run, "train.batch_size=4", "train.val_every=2",
              "train.log_every=2", "train.warmup_steps=0", "deepspeed.zero_stage=0", "train.max_failures=0"]
    assert cli.main([*common, "train.max_steps=4"]) == 0
    assert cli.main([*common, "train.max_steps=6"]) == 0                   # resumes at 4
    assert [r["step"] for r in metrics(run, "resumed")] == [4]
    assert [r["step"] for r in metrics(run, "val")] == [2, 4, 6]
    assert "val next-frame L1" in capsys.readouterr().out
    assert read_final(f"{run}/final", family="toy").manifest["step"] == 6

    out = str(tmp_path / "best")
    assert cli.main(["export", run, "--checkpoint", "best", "--output", out]) == 0
    assert read_final(out, family="toy").manifest["build"] == {"n_mels": 80, "hidden": 32}
    space = default_space(load_config(overrides=["family=toy"], family="toy"))
    assert {d.key for d in space} == {"train.lr", "model.hidden"}
