"""Training recipes, one per model family; each reads top to bottom.

A recipe module holds ``FAMILY``, ``METRIC`` (what best-k checkpoints, early stopping and sweeps
minimise), ``search_space(config)`` (the sweep's default) and
``train(store, run, config, callbacks=None, gate=None, console=True)``. This table is the one
place a family name becomes a recipe: the CLI, ``jobs/`` and sweeps all dispatch through it.
"""

from __future__ import annotations

from types import ModuleType

from voxray.train.recipes import acoustic, talker, vocoder

RECIPES: dict[str, ModuleType] = {"acoustic": acoustic, "vocoder": vocoder, "talker": talker}


def recipe(family: str) -> ModuleType:
    if family not in RECIPES:
        raise ValueError(f"unknown model family {family!r} (choose from {', '.join(RECIPES)})")
    return RECIPES[family]
