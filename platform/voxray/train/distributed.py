"""torch.distributed as every worker uses it: DeepSpeed adopting the process group Ray Train
set up, and the reductions the loop needs (sums, "every worker still has a batch")."""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist


def init_deepspeed_distributed(rank: int, local_rank: int, world_size: int) -> None:
    """Ray Train already set up torch.distributed; DeepSpeed adopts that process group."""
    import deepspeed

    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["RANK"] = str(rank)
    os.environ["WORLD_SIZE"] = str(world_size)
    skip_inference_shm_op()
    deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)


def skip_inference_shm_op() -> None:
    """On CPU, DeepSpeed's comm backend JIT-compiles its shared-memory all-reduce
    (``deepspeed_shm_comm``) when it starts: a minute of g++ on every new node, and a compiler
    needed there, for a kernel only ``inference_all_reduce`` calls. Training never does: mark the op
    incompatible so the backend skips it (the builder's own switch, ``deepspeed.ops.__compatible_ops__``)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
        if builder is not None:
            deepspeed.ops.__compatible_ops__[builder.NAME] = False


def is_distributed() -> bool:
    """More than one worker: a collective has someone to talk to."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum across workers (identity when not distributed)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor.tolist()


def all_have(have: bool, device: torch.device) -> bool:
    """True when every worker has a batch (one tiny all-reduce; plain ``have`` when not distributed).
    The flag lives on the worker's device: NCCL reduces only GPU tensors."""
    if not is_distributed():
        return have
    flag = torch.tensor([1 if have else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def aligned_batches(batches: list[Any], device: torch.device) -> Iterator[tuple[Any, bool]]:
    """(batch, counts) pairs, as many on every rank (the most any rank has): a rank with fewer
    repeats its first batch with ``counts`` False. ZeRO-3 gathers parameters collectively in
    every forward, so ranks making different numbers of calls would hang."""
    most = torch.tensor([len(batches)], device=device)
    if is_distributed():
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
    if int(most) and not batches:
        raise RuntimeError("a rank has no validation rows while others have some (the val split is smaller "
                           "than the number of workers)")
    for i in range(int(most)):
        yield (batches[i], True) if i < len(batches) else (batches[0], False)


class Sums:
    """Named sums each rank adds to and all ranks reduce in one all-reduce (validation's exact
    means: every row of every rank counted once). The names are declared up front, in the same
    order on every rank; adding a name not declared is an error, not a silent new slot."""

    def __init__(self, names: Iterable[str]) -> None:
        self.values: dict[str, float] = dict.fromkeys(names, 0.0)

    def add(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name not in self.values:
                raise KeyError(f"{name!r} is not one of the declared sums ({', '.join(self.values)})")
            self.values[name] += float(value)

    def reduce(self, device: torch.device) -> dict[str, float]:
        """The sums over all ranks, by name (every rank calls it)."""
        return dict(zip(self.values, all_reduce_sum(list(self.values.values()), device)))
