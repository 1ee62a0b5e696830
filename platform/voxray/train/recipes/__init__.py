"""Training recipes, one per model family; each reads top to bottom and ends with its
``RECIPE``, a ``voxray.train.contract.Recipe`` (family, metric, columns, train loop, search space,
checkpoint export). This table is the one place a family name becomes a recipe: the CLI, ``jobs/``,
sweeps and ``voxray export`` all dispatch through it.
"""

from __future__ import annotations

from voxray.train.contract import Recipe
from voxray.train.recipes import acoustic, talker, vocoder

RECIPES: dict[str, Recipe] = {module.RECIPE.family: module.RECIPE for module in (acoustic, vocoder, talker)}


def recipe(family: str) -> Recipe:
    if family not in RECIPES:
        raise ValueError(f"unknown model family {family!r} (choose from {', '.join(RECIPES)})")
    return RECIPES[family]
