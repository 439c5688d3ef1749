"""Bundled checkpoints: safetensors files plus a manifest, loaded without pickle.

``data/checkpoints/manifest.json`` maps a checkpoint name to its file, sha256, the recipe and
preset that made it, the metrics it reached, the date, and the model's architecture and config.
``load(name)`` checks the sha256 before reading; a missing or corrupt file is one clear error that
names the command that rebuilds it. Writes are atomic (temporary file, then rename).

``hub_model(name)`` loads published weights through timm when online; offline it raises
``HubUnavailable`` so notebooks can say so and carry on with bundled weights.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .models import build
from .results import write_json_atomic

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or unknown; the message says how to rebuild it."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[31mCheckpointError\x1b[0m: {self}"]


class HubUnavailable(RuntimeError):
    """Published weights could not be fetched (offline, or unknown model)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: Path | None = None) -> dict[str, Any]:
    path = Path(root or BUNDLED_DIR) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def rebuild_command(entry_or_name: dict | str) -> str:
    if isinstance(entry_or_name, dict):
        return (f"python -m vislearn.train {entry_or_name['recipe']} --preset {entry_or_name['preset']} "
                f"--out {BUNDLED_DIR.relative_to(BUNDLED_DIR.parent.parent)}")
    return f"python -m vislearn.train {entry_or_name} --preset full --out data/checkpoints"


def save(model: nn.Module, name: str, *, arch: str, config: dict, recipe: str, preset: str,
         metrics: dict[str, Any], root: Path | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model``'s weights as ``root/NAME.safetensors`` (default: the bundled folder) and record it
    in the manifest."""
    root = Path(root or BUNDLED_DIR)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.safetensors"
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"name": name, "arch": arch, "config": json.dumps(config)})
    os.replace(tmp, path)
    manifest = read_manifest(root)
    manifest[name] = {
        "file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size,
        "arch": arch, "config": config, "recipe": recipe, "preset": preset, "metrics": metrics,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__, **(extra or {}),
    }
    write_json_atomic(root / MANIFEST, dict(sorted(manifest.items())))
    return path


def entry(name: str, root: Path | None = None) -> dict[str, Any]:
    """The manifest entry of checkpoint ``name`` (metrics, recipe, config ...)."""
    root = Path(root or BUNDLED_DIR)
    manifest = read_manifest(root)
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "none"
        raise CheckpointError(f"no checkpoint named {name!r} in {root / MANIFEST} (known: {known}). "
                              f"Build it with: {rebuild_command(name)}")
    return manifest[name]


def history_path(name: str, root: Path | None = None) -> Path:
    """Where the training history of checkpoint ``name`` lives (written by ``vislearn.train``)."""
    return Path(root or BUNDLED_DIR) / f"{name}.history.json"


def read_history(name: str, root: Path | None = None) -> dict[str, Any]:
    """The training history of checkpoint ``name``: {"steps": [...], "evals": [...], "seconds": s}."""
    path = history_path(name, root)
    if not path.exists():
        raise CheckpointError(f"no training history {path}. Rebuild it with: {rebuild_command(name)}")
    return json.loads(path.read_text())


def load(name: str, root: Path | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model of checkpoint ``name`` and load its weights, after checking the sha256."""
    root = Path(root or BUNDLED_DIR)
    e = entry(name, root)
    path = root / e["file"]
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing. Rebuild it with: {rebuild_command(e)}")
    digest = sha256_of(path)
    if digest != e["sha256"]:
        raise CheckpointError(f"checkpoint file {path} is corrupt: sha256 {digest[:12]}... but the manifest "
                              f"says {e['sha256'][:12]}.... Rebuild it with: {rebuild_command(e)}")
    model = build(e["arch"], e["config"])
    model.load_state_dict(load_file(str(path), device=str(map_location)))
    return model.to(map_location).eval()


HUB_HOST = ("huggingface.co", 443)  # where timm's published weights live


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a connection to the weights hub? Offline this fails at once (no DNS)."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_model(name: str, *, file: str | Path | None = None, **kwargs) -> nn.Module:
    """A timm model with its published weights (online), or from a local weights ``file``.

    Raises:
        HubUnavailable: the weights could not be fetched (no network) or the name is unknown.
    """
    import timm

    if file is None and not hub_reachable():
        # fail in a second with one clear line, instead of minutes of download retries
        raise HubUnavailable(f"could not load published weights for {name!r}: the weights hub "
                             f"({HUB_HOST[0]}) is not reachable from this machine (offline?)")
    overlay = {"file": str(file)} if file is not None else None
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()
    except Exception as err:
        raise HubUnavailable(f"could not load published weights for {name!r} "
                             f"({type(err).__name__}: {str(err)[:160]})") from err
