"""Presets, device choice, seeding and parameter checks: the first call of every notebook.

Every notebook starts with ``setup = vislearn.setup(preset=PRESET, device=DEVICE, seed=SEED)``.
It resolves ``auto`` values, seeds every random number generator, prints what it chose, and
turns a bad parameter into one short error that names the allowed values.

Presets (see DESIGN.md):
    smoke      CI on 2 CPU cores: seconds per notebook, tiny subsets, proves the plumbing.
    classroom  A laptop CPU: a few minutes per notebook, real data, bundled checkpoints.
    full       A GPU: trains from scratch at the scale of the bundled checkpoints.
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

PRESETS = ("smoke", "classroom", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRESET_ENV = "VISLEARN_PRESET"


class ParameterError(ValueError):
    """A notebook or command-line parameter with a value we do not accept.

    In Jupyter it renders as one line instead of a stack trace: the learner only needs to know
    which parameter is wrong and what the allowed values are.
    """

    def _render_traceback_(self) -> list[str]:  # IPython hook: show the message, not the stack
        return [f"\x1b[31mParameterError\x1b[0m: {self}"]


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise a ParameterError naming both."""
    allowed = tuple(allowed)
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ParameterError(f"{name}={value!r} is not allowed; choose one of: {options}")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise a ParameterError that says what was expected."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name}={value!r} must be an integer")
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name}={value!r} must be an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise ParameterError(f"{name}={value!r} must be an integer <= {maximum}")
    return int(value)


MAX_SEED = 2**63 - 1   # torch.manual_seed takes a signed 64-bit integer


def resolve_preset(preset: str = "auto") -> str:
    """``auto`` becomes ``$VISLEARN_PRESET`` if set, else ``full`` on CUDA, else ``classroom``."""
    check_choice("preset", preset, ("auto",) + PRESETS)
    if preset != "auto":
        return preset
    env = os.environ.get(PRESET_ENV, "").strip()
    if env:
        check_choice(f"${PRESET_ENV}", env, PRESETS)
        return env
    import torch  # imported on use: `import vislearn.config` (and `vislearn --help`) stays light

    return "full" if torch.cuda.is_available() else "classroom"


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU. Asking for a missing GPU says so."""
    import torch

    check_choice("device", device, DEVICES)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError(
            "device='cuda' was asked for, but this machine has no CUDA GPU that torch can use; "
            "use device='cpu' (or 'auto', which picks the best device present)"
        )
    if device == "mps" and not _mps_available():
        raise ParameterError("device='mps' was asked for, but Apple's MPS backend is not available here; "
                             "use device='cpu' or 'auto'")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch Generator seeded the same way."""
    import torch

    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Setup:
    """What ``setup`` resolved. ``pick`` chooses a value by preset; ``seconds`` says how long ago it ran."""

    preset: str
    device: torch.device
    seed: int
    started: float = field(default_factory=time.perf_counter, compare=False)  # perf_counter() at setup

    def seconds(self) -> float:
        """Seconds since ``setup`` (a notebook's running time, for its results table)."""
        return time.perf_counter() - self.started

    def pick(self, **by_preset: Any) -> Any:
        """Return the value for the current preset: ``setup.pick(smoke=256, classroom=10_000, full=None)``."""
        missing = [p for p in PRESETS if p not in by_preset]
        unknown = [p for p in by_preset if p not in PRESETS]
        if missing or unknown:
            raise ParameterError(f"pick() needs exactly the presets {PRESETS}; missing {missing}, unknown {unknown}")
        return by_preset[self.preset]

    def describe(self) -> str:
        import torch

        gpu = f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else ""
        return (f"preset={self.preset}  device={self.device}{gpu}  seed={self.seed}  "
                f"torch={torch.__version__}  python={platform.python_version()}")


def imported_checkout() -> Path:
    """The folder whose ``vislearn/`` package this Python imported (a checkout, or site-packages)."""
    return Path(__file__).resolve().parents[1]


def checkout_warning(cwd: Path | str | None = None) -> str | None:
    """A warning when the notebook runs inside one checkout of the course but imported ``vislearn``
    from another (the shared course venv points at whichever checkout ran ``scripts/env.sh`` last),
    else None. A notebook's working directory is its own folder, so ``cwd`` finds its checkout."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    imported = imported_checkout()
    for folder in (cwd, *cwd.parents):
        if (folder / "vislearn" / "__init__.py").is_file() and (folder / "pyproject.toml").is_file():
            if folder.resolve() == imported:
                return None
            return (f"WARNING: this notebook is in the checkout {folder}, but Python imported vislearn from "
                    f"{imported}: you are running the other checkout's code. Run `source {folder}/scripts/env.sh` "
                    f"(it points the course venv at this checkout), then restart the kernel.")
    return None


def setup(preset: str = "auto", device: str = "auto", seed: int = 0, *, verbose: bool = True) -> Setup:
    """Resolve the notebook parameters, seed everything and print the result.

    Args:
        preset: ``auto``, ``smoke``, ``classroom`` or ``full``.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        seed: a non-negative integer; every random number generator is seeded with it.
        verbose: print one line saying what was resolved.
    """
    chosen = Setup(preset=resolve_preset(preset), device=resolve_device(device),
                   seed=check_int("seed", seed, minimum=0, maximum=MAX_SEED))
    seed_everything(chosen.seed)
    if verbose:
        print(f"{chosen.describe()}  vislearn={imported_checkout()}")
        warning = checkout_warning()
        if warning:
            print(warning)
    return chosen
