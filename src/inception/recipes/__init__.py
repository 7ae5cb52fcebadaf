"""Training recipes: each is a module whose `recipe()` returns a `TrainConfig` and whose docstring
gives the launch command and the command that measures its result and cost, pointing at the
BENCHMARKS.md section that holds the figures (with the machine they were measured on)."""

from __future__ import annotations

from collections.abc import Callable

from inception.config import ConfigError
from inception.recipes import fashion_mnist, finetune, paper
from inception.train.config import TrainConfig

RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "paper": paper.recipe,
    "fashion-mnist": fashion_mnist.recipe,
    "fashion-mnist-long": fashion_mnist.long_recipe,
    "finetune": finetune.recipe,
}


def get_recipe(name: str) -> TrainConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]()
