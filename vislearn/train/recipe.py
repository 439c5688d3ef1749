"""The one recipe type: a named, preset-dependent training run, and what running it returns.

A ``Recipe`` names an architecture and its config, one settings object per preset (a ``TrainConfig``
for the supervised loop, DINO's own settings for DINO) and the ``trainer`` that turns settings into a
trained model. ``run`` resolves the preset and device, checks the output folder *before* training,
trains, and saves checkpoint, history and manifest entry together (``weights.save``), recording the
command line that rebuilds them. Under torchrun every process trains and rank 0 alone saves, after
training returned, while the others wait for it. Every recipe lives in ``vislearn/recipes/`` (one
module per notebook, found without a hand-kept list); ``python -m vislearn.train NAME`` runs any of them.
"""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..config import ParameterError, check_choice, resolve_device, resolve_preset, seed_everything
from ..data.fmnist import fashion_mnist
from ..models.convert import build
from . import distributed, resume, weights
from .loop import History, LossFn, TrainConfig, evaluate, fit


def fashion_mnist_split(split: str, limit: int | None, seed: int) -> TensorDataset:
    """The default data of a recipe: Fashion-MNIST, normalized."""
    return fashion_mnist(split, limit, seed=seed)


@dataclass
class Trained:
    """A model and where it came from: trained in this run, or loaded from a checkpoint."""

    model: nn.Module
    history: Any                     # History, or DINOHistory for DINO (both have to_dict / plot)
    metrics: dict[str, Any]          # what training measured (the manifest's metrics)
    source: str = ""                 # one line for the notebook: "trained in this run" or the checkpoint
    entry: dict[str, Any] = field(default_factory=dict)   # the manifest entry (also written when saved)
    extra: dict[str, Any] = field(default_factory=dict)   # what the trainer adds to the manifest entry


class Trainer(Protocol):
    def __call__(self, recipe: Recipe, settings: Any, *, device: torch.device, seed: int,
                 progress: bool) -> Trained: ...


def train_supervised(recipe: Recipe, cfg: TrainConfig, *, device: torch.device, seed: int,
                     progress: bool) -> Trained:
    """The default trainer: ``fit`` on the recipe's data with its objective; metrics on the full test set."""
    model = build(recipe.arch, recipe.model)
    train_set = recipe.data("train", cfg.train_limit, seed)
    test_set = recipe.data("test", cfg.test_limit, seed)
    loss_fn = recipe.make_loss(device) if recipe.make_loss is not None else None
    history = fit(model, train_set, test_set, cfg, device=device, loss_fn=loss_fn, seed=seed, progress=progress,
                  on_eval=recipe.probe)
    full_test = evaluate(model, recipe.data("test", None, seed), device)
    metrics = {"test_accuracy": round(full_test["accuracy"], 4), "test_loss": round(full_test["loss"], 4),
               "train_seconds": round(history.seconds, 1), "device": str(device),
               "params": sum(p.numel() for p in model.parameters()), "epochs": cfg.epochs,
               "train_images": len(train_set)}
    return Trained(model, history, metrics, extra={"train_config": jsonable_config(cfg)})


@dataclass(frozen=True)
class Recipe:
    """A named training run: which model, which data, which objective, and how long for each preset."""

    name: str
    arch: str                                   # a key of vislearn.models.convert.ARCHITECTURES
    model: dict[str, Any]                       # the architecture's config, as a dict
    presets: Mapping[str, Any]                  # smoke / classroom / full -> the trainer's settings
    notebook: str                               # the notebook that uses it, e.g. "01_vit_from_scratch"
    description: str = ""
    trainer: Trainer = train_supervised
    data: Callable[[str, int | None, int], TensorDataset] = fashion_mnist_split  # (split, limit, seed)
    make_loss: Callable[[torch.device], LossFn] | None = None  # e.g. distillation (loads its teacher)
    history_type: type = History                # how its saved history reads back
    probe: Callable[[nn.Module], dict[str, Any]] | None = None  # extra values recorded at every evaluation

    def config(self, preset: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """The settings of ``preset``, with ``overrides`` replacing fields of its training config."""
        check_choice("preset", preset, tuple(self.presets))
        return apply_overrides(self.presets[preset], overrides or {})


def apply_overrides(settings: Any, overrides: Mapping[str, Any]) -> Any:
    """``settings`` with some training-config fields replaced (``settings.train`` when it nests one)."""
    if not overrides:
        return settings
    target = settings.train if hasattr(settings, "train") and is_dataclass(settings.train) else settings
    allowed = [f.name for f in fields(target)]
    for key in overrides:
        check_choice("--set key", key, allowed)
    new = replace(target, **overrides)
    return replace(settings, train=new) if target is not settings else new


def jsonable_config(cfg: Any) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(asdict(cfg), default=str))


def command_line(name: str, preset: str, out: Path | str, seed: int, overrides: Mapping[str, Any],
                 world_size: int = 1) -> str:
    """The command that reruns a recipe exactly (what the manifest records and errors quote)."""
    import json

    launcher = ["torchrun", "--nproc-per-node", str(world_size)] if world_size > 1 else ["python"]
    parts = [*launcher, "-m", "vislearn.train", name, "--preset", preset, "--out", str(out)]
    if seed:
        parts += ["--seed", str(seed)]
    for key, value in overrides.items():
        parts += ["--set", f"{key}={json.dumps(value)}"]
    return shlex.join(parts)


def run(recipe: Recipe, preset: str = "auto", *, out: Path | str | None = None, device: str = "auto", seed: int = 0,
        progress: bool = True, overrides: Mapping[str, Any] | None = None, force: bool = False,
        checkpoint_every: int = 0, resume_run: bool = False) -> Trained:
    """Train ``recipe`` at ``preset``; with ``out``, save checkpoint, history and manifest entry together.

    The output folder is checked (writable, and no bigger-preset checkpoint there unless ``force``)
    before the first training step, so a mistake costs seconds, not a training run.

    Args:
        checkpoint_every: with ``out``, ``fit`` (or ``train_dino``) saves its whole state there every so many steps
            (``vislearn.train.resume``); deleted once the final checkpoint is saved.
        resume_run: start from that periodic checkpoint (which must exist and come from the same command).
    """
    preset, dev = resolve_preset(preset), distributed.local_device(resolve_device(device))
    settings = recipe.config(preset, overrides)
    periodic = None
    if out is not None:
        out = weights.check_writable(out)
        weights.check_replace(recipe.name, preset, out, force=force)
        periodic = resume.Periodic(resume.resume_path(out, recipe.name), checkpoint_every, resume_run,
                                   command_line(recipe.name, preset, out, seed, overrides or {}))
        if resume_run and not periodic.path.is_file():
            raise resume.ResumeError(f"--resume: no periodic checkpoint {periodic.path} in --out (written with "
                                     "--checkpoint-every); run without --resume")
    elif checkpoint_every or resume_run:
        raise ParameterError("--checkpoint-every and --resume need --out (the folder of the periodic checkpoint)")
    seed_everything(seed)
    with resume.periodic(periodic if checkpoint_every or resume_run else None):
        result = recipe.trainer(recipe, settings, device=dev, seed=seed, progress=progress)
    if (checkpoint_every or resume_run) and not periodic.used:
        warnings.warn(f"recipe {recipe.name!r} trains with none of fit, train_dino, train_swav: it wrote no "
                      "periodic checkpoint (--checkpoint-every) and could not resume (--resume)", stacklevel=2)
    result.source = f"trained in this run ({recipe.name}, preset {preset})"
    world = distributed.world_size()
    if world > 1:
        result.metrics["world_size"] = world
    if out is not None and distributed.is_main():
        command = command_line(recipe.name, preset, out, seed, overrides or {}, world)
        weights.save(result.model.cpu(), recipe.name, arch=recipe.arch, config=recipe.model, recipe=recipe.name,
                     preset=preset, metrics=result.metrics, root=out, history=result.history.to_dict(),
                     extra={"seed": seed, **result.extra}, command=command, force=force)
        if periodic is not None:
            periodic.remove()                # the final checkpoint is saved: the periodic one has done its job
    distributed.barrier()                  # the other processes wait for rank 0's checkpoint
    if out is not None:
        result.entry = weights.entry(recipe.name, out)
    return result


def bundled(recipe: Recipe, device: torch.device | str = "cpu", root: Path | str | None = None) -> Trained:
    """The bundled checkpoint of ``recipe``: model (eval mode), history, metrics and its manifest entry."""
    e = weights.entry(recipe.name, root)
    model = weights.load(recipe.name, root, map_location=device)
    history = recipe.history_type.from_dict(weights.read_history(recipe.name, root))
    source = (f"bundled checkpoint ({e.get('recipe', recipe.name)} --preset {e.get('preset', '?')}, "
              f"{str(e.get('date', '?'))[:10]}, sha256 {e['sha256'][:12]}...)")
    return Trained(model, history, dict(e.get("metrics", {})), source, e)


def trained_or_bundled(recipe: Recipe, setup, *, progress: bool = True) -> Trained:
    """What every notebook does: train the recipe from scratch with the ``full`` preset, else load it.

    Args:
        setup: the notebook's ``vislearn.setup(...)`` result (preset, device, seed).
    """
    if setup.preset == "full":
        trained = run(recipe, "full", device=str(setup.device), seed=setup.seed, progress=progress)
        trained.model.to(setup.device)
        return trained
    return bundled(recipe, setup.device)

