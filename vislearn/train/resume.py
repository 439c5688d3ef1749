"""Periodic checkpoints of a running ``fit``, and resuming from the last one (``--resume``).

``python -m vislearn.train NAME --out DIR --checkpoint-every 500`` makes ``fit`` (or ``train_dino``) write, every 500
steps, everything it needs to carry on exactly where it was: weights, AdamW's moments, the data
order of the current epoch, the state of its random generators, the history so far and the command
of the run. It goes to ``DIR/.NAME.resume.safetensors`` (safetensors: no pickle), through a temporary
file and one rename, so a crash while writing leaves the previous one intact; under torchrun rank 0
writes it. After the final checkpoint is saved it is deleted. The same command with ``--resume``
starts from it and ends with the weights the uninterrupted run would have had (one process: bit for
bit; under torchrun the per-rank dropout / drop-path streams are reseeded at the resumed step).

The trainers find the periodic checkpoint through ``current()`` (set by ``periodic(...)`` in
``recipe.run``), so recipes need no new argument. ``fit``, ``train_dino`` and ``train_swav`` honour it
(the first such loop of a run); a trainer that calls none of them writes none (``run`` warns).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from . import distributed
from .weights import CheckpointError


class ResumeError(CheckpointError):
    """A periodic checkpoint is missing, unreadable or belongs to another run."""


def resume_path(out: Path | str, name: str) -> Path:
    """Where the periodic checkpoint of recipe ``name`` lives in the ``--out`` folder."""
    return Path(out) / f".{name}.resume.safetensors"


@dataclass
class Periodic:
    """Where and how often a running ``fit`` saves its state, and whether it starts from it."""

    path: Path
    every: int = 0          # steps between checkpoints (0: write none)
    resume: bool = False    # start from ``path`` (which must exist and belong to ``command``)
    command: str = ""       # the run's command, recorded, and checked on resume
    used: bool = False      # set by fit: this run's trainer honours periodic checkpoints

    def due(self, step: int, total: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < total

    def save(self, step: int, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
             order: torch.Tensor, state: dict[str, Any], extra: dict[str, torch.Tensor] | None = None) -> None:
        """Write the state after ``step`` steps atomically (rank 0 only). ``state``: the JSON-able
        rest (history, unlogged losses ...); ``extra``: more tensors (DINO's centre)."""
        if not distributed.is_main():
            return
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        opt_state = opt.state_dict()
        for i, s in opt_state["state"].items():
            tensors |= {f"opt.{i}.{k}": v.detach().cpu().contiguous() for k, v in s.items()
                        if isinstance(v, torch.Tensor)}
        tensors |= {"rng.gen": gen.get_state(), "rng.torch": torch.get_rng_state(), "order": order.cpu()}
        tensors |= {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()}
        meta = {"step": step, "command": self.command, "param_groups": opt_state["param_groups"], **state}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            save_file(tensors, str(tmp), metadata={"vislearn": json.dumps(meta)})
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
             device: torch.device, seed: int) -> tuple[torch.Tensor, dict[str, Any], dict[str, torch.Tensor]]:
        """Restore model, optimizer and generators; returns (the epoch's order, the JSON-able state,
        the extra tensors)."""
        fix = f"run without --resume to start over (and delete {self.path})"
        if not self.path.is_file():
            raise ResumeError(f"--resume: no periodic checkpoint {self.path} (written with --checkpoint-every); "
                              "run without --resume")
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = json.loads((f.metadata() or {})["vislearn"])
            tensors = load_file(str(self.path))
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise ResumeError(f"--resume: {self.path} is not a periodic checkpoint ({err}); {fix}") from None
        if self.command and meta.get("command") != self.command:
            raise ResumeError(f"--resume: {self.path} belongs to another run ({meta.get('command')!r}, not "
                              f"{self.command!r}); rerun that command with --resume, or {fix}")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = v.to(device) if name != "step" else v
        opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
        gen.set_state(tensors["rng.gen"])
        torch.set_rng_state(tensors["rng.torch"])
        if distributed.world_size() > 1:
            torch.manual_seed(seed + distributed.rank() + 1_000_003 * meta["step"])
        extra = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")}
        return tensors["order"].to(device), meta, extra

    def remove(self) -> None:
        if distributed.is_main():
            self.path.unlink(missing_ok=True)


_CURRENT: ContextVar[Periodic | None] = ContextVar("vislearn_periodic", default=None)


def current() -> Periodic | None:
    """The periodic checkpoint settings of the run in progress (None: none asked for)."""
    return _CURRENT.get()


@contextmanager
def periodic(settings: Periodic | None) -> Iterator[Periodic | None]:
    """Make ``settings`` the current periodic checkpoint settings for the block."""
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)
