"""Validation's named sums (one process: the all-reduce is the identity)."""

import pytest
import torch

from voxray.train.distributed import Sums


def test_named_sums_add_up_by_name_and_refuse_a_name_not_declared():
    sums = Sums(["loss", "frames"])
    sums.add({"loss": torch.tensor(2.5), "frames": 10})
    sums.add({"frames": 5})
    assert sums.reduce(torch.device("cpu")) == {"loss": 2.5, "frames": 15.0}
    with pytest.raises(KeyError, match="'tokens' is not one of the declared sums"):
        sums.add({"tokens": 1})
