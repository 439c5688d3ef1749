"""The named training runs behind the bundled checkpoints: one module per notebook, found automatically.

Each module here (``nb01_vit``, ``nb02_deit``, ...) defines ``RECIPES``, a tuple of
``vislearn.train.Recipe``; ``all_recipes`` imports every module of this package and collects them, so
a new notebook's recipes need no list to be edited. ``python -m vislearn.train --list`` shows them.

    python -m vislearn.train vit_fmnist --preset full --out data/checkpoints
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from ..config import ParameterError, check_choice
from ..train.recipe import Recipe, Trained, bundled


@functools.cache
def all_recipes() -> dict[str, Recipe]:
    """Every recipe of every module in this package, by name (modules in file order)."""
    found: dict[str, Recipe] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for recipe in getattr(module, "RECIPES", ()):
            if recipe.name in found:
                raise ParameterError(f"recipe {recipe.name!r} is defined twice (in {module.__name__} and before)")
            found[recipe.name] = recipe
    return found


def get(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name is a ParameterError listing the known ones."""
    recipes = all_recipes()
    check_choice("recipe", name, tuple(recipes))
    return recipes[name]


def load_bundled(name: str, device="cpu") -> Trained:
    """The bundled checkpoint of recipe ``name``, whatever the preset."""
    return bundled(get(name), device)


__all__ = ["all_recipes", "get", "load_bundled"]
