"""Checkpoints: safetensors files plus a manifest, loaded without pickle, written so nothing is lost.

``data/checkpoints/manifest.json`` maps a checkpoint name to its weights file, its training history,
sha256, the recipe, preset and command that made it, the metrics it reached, the date, and the
model's architecture name and config (checkpoints are keyed by architecture name, not module path).
``load(name)`` checks the sha256 before reading; a missing, corrupt or foreign file is one
``CheckpointError`` that names the file and the command that rebuilds it.

``save`` never destroys a good checkpoint. New weights and history go to new files named by their
content (``NAME-<sha256[:12]>.safetensors``), are read back and checked, and only then does one atomic
rename of the manifest switch to them; the files of the previous version are removed after that. An
error or an interruption at any point leaves the previous checkpoint, history and manifest as they
were. Replacing a checkpoint made with a bigger preset (``full`` by ``smoke``) needs ``force=True``.

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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import PRESETS
from ..models.convert import build, from_timm
from ..results import write_json_atomic

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "data" / "checkpoints"
MANIFEST = "manifest.json"
REQUIRED = ("file", "sha256", "arch", "config")   # what every manifest entry must hold


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, foreign or would be lost; the message says how to fix it."""

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


def _root(root: Path | str | None) -> Path:
    return Path(root) if root is not None else BUNDLED_DIR


def read_manifest(root: Path | str | None = None) -> dict[str, Any]:
    """The manifest of a checkpoint folder ({} if it has none yet)."""
    path = _root(root) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); restore it with `git checkout -- {path}` "
                              "(bundled checkpoints) or delete it and retrain") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path} must hold a JSON object (name -> entry), not a {type(manifest).__name__}")
    return manifest


def rebuild_command(entry_or_name: dict | str) -> str:
    """The command that rebuilds a checkpoint: the one its manifest entry recorded, if any."""
    if isinstance(entry_or_name, dict):
        if entry_or_name.get("command"):
            return str(entry_or_name["command"])
        recipe, preset = entry_or_name.get("recipe", "NAME"), entry_or_name.get("preset", "full")
        return f"python -m vislearn.train {recipe} --preset {preset} --out data/checkpoints"
    return f"python -m vislearn.train {entry_or_name} --preset full --out data/checkpoints"


def entry(name: str, root: Path | str | None = None) -> dict[str, Any]:
    """The manifest entry of checkpoint ``name`` (metrics, recipe, config ...), checked for completeness."""
    root = _root(root)
    manifest = read_manifest(root)
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "none"
        raise CheckpointError(f"no checkpoint named {name!r} in {root / MANIFEST} (known: {known}). "
                              f"Build it with: {rebuild_command(name)}")
    e = manifest[name]
    missing = [k for k in REQUIRED if not isinstance(e, dict) or k not in e]
    if missing or not isinstance(e["config"], dict):
        what = f"lacks {', '.join(missing)}" if missing else "has a config that is not an object"
        raise CheckpointError(f"the entry {name!r} in {root / MANIFEST} {what}. "
                              f"Rebuild it with: {rebuild_command(e if isinstance(e, dict) else name)}")
    return e


def history_path(name: str, root: Path | str | None = None) -> Path:
    """Where the training history of checkpoint ``name`` lives (its manifest entry says, if it exists)."""
    root = _root(root)
    recorded = read_manifest(root).get(name, {})
    file = recorded.get("history") if isinstance(recorded, dict) else None
    return root / (file or f"{name}.history.json")


def read_history(name: str, root: Path | str | None = None) -> dict[str, Any]:
    """The training history of checkpoint ``name``: {"steps": [...], "evals": [...], "seconds": s}."""
    path = history_path(name, root)
    if not path.is_file():
        raise CheckpointError(f"no training history {path}. Rebuild it with: {rebuild_command(entry(name, root))}")
    try:
        history = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"training history {path} is not valid JSON ({err}). "
                              f"Rebuild it with: {rebuild_command(entry(name, root))}") from None
    if not isinstance(history, dict) or "steps" not in history:
        raise CheckpointError(f"training history {path} has no 'steps'. Rebuild it with: "
                              f"{rebuild_command(entry(name, root))}")
    return history


def load(name: str, root: Path | str | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model of checkpoint ``name`` and load its weights, after checking the sha256."""
    root = _root(root)
    e = entry(name, root)
    path, fix = root / e["file"], f"Rebuild it with: {rebuild_command(e)}"
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is {'a folder' if path.is_dir() else 'missing'}. {fix}")
    digest = sha256_of(path)
    if digest != e["sha256"]:
        raise CheckpointError(f"checkpoint file {path} is corrupt: sha256 {digest[:12]}... but the manifest "
                              f"says {str(e['sha256'])[:12]}.... {fix}")
    try:
        model = build(e["arch"], e["config"])
    except (TypeError, ValueError) as err:
        first = (str(err).splitlines() or [""])[0]
        raise CheckpointError(f"the manifest entry {name!r} has a config that does not build a "
                              f"{e['arch']!r} model ({first}). {fix}") from None
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is not a safetensors file ({err}); vislearn never "
                              f"unpickles weights. {fix}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)[:160]]
        raise CheckpointError(f"checkpoint file {path} holds weights of another model than its manifest "
                              f"entry describes ({first[0].strip()}). {fix}") from None
    return model.to(map_location).eval()


def check_writable(folder: Path | str) -> Path:
    """``folder`` (created if needed) as a Path, or a CheckpointError saying why nothing can be saved there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"--out {folder} is a file, not a folder: give a folder for the checkpoint")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".vislearn-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoints into {folder} ({err.strerror or err}); "
                              "choose another --out folder") from None
    return folder


def check_replace(name: str, preset: str, root: Path | str | None = None, *, force: bool = False) -> None:
    """Refuse (without ``force``) to replace a checkpoint made with a bigger preset, before any training."""
    old = read_manifest(root).get(name)
    old_preset = old.get("preset") if isinstance(old, dict) else None
    if force or old_preset not in PRESETS or preset not in PRESETS:
        return
    if PRESETS.index(preset) < PRESETS.index(old_preset):
        metrics = old.get("metrics", {})
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items() if "accuracy" in k or k == "jaccard") or "its metrics"
        raise CheckpointError(f"{_root(root) / MANIFEST} holds {name!r} trained with preset {old_preset!r} ({shown}); "
                              f"a {preset!r} run would replace it. Use another --out folder, or --force to replace it")


def _mode_0644(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o644 & ~umask)


def save(model: nn.Module, name: str, *, arch: str, config: dict, recipe: str, preset: str,
         metrics: dict[str, Any], root: Path | str | None = None, extra: dict[str, Any] | None = None,
         history: dict[str, Any], command: str | None = None, force: bool = False) -> Path:
    """Save ``model``'s weights (and its training ``history``) and record them in the manifest, atomically.

    Returns the weights file. Raises CheckpointError (and changes nothing) when the folder is not
    writable, its manifest is unreadable, or (without ``force``) the checkpoint there came from a
    bigger preset.
    """
    root = check_writable(_root(root))
    manifest = read_manifest(root)                   # an unreadable manifest stops us before any write
    check_replace(name, preset, root, force=force)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = root / f".{name}.{os.getpid()}.safetensors.tmp"
    written: list[Path] = []
    try:
        save_file(state, str(tmp), metadata={"name": name, "arch": arch, "config": json.dumps(config)})
        back = load_file(str(tmp))                   # read back before anything points at it
        if back.keys() != state.keys() or any(not torch.equal(back[k], state[k]) for k in state):
            raise CheckpointError(f"{tmp} did not read back as written; nothing was replaced")
        digest = sha256_of(tmp)
        path = root / f"{name}-{digest[:12]}.safetensors"
        os.replace(tmp, path)
        written.append(path)
        _mode_0644(path)
        e = {"file": path.name, "sha256": digest, "bytes": path.stat().st_size, "arch": arch, "config": config,
             "recipe": recipe, "preset": preset, "metrics": metrics,
             "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "torch": torch.__version__, **(extra or {})}
        if command:
            e["command"] = command
        hist = root / f"{name}-{digest[:12]}.history.json"
        write_json_atomic(hist, history)
        written.append(hist)
        _mode_0644(hist)
        e["history"] = hist.name
        old = manifest.get(name) if isinstance(manifest.get(name), dict) else {}
        manifest[name] = e
        write_json_atomic(root / MANIFEST, dict(sorted(manifest.items())))   # the commit point
    except BaseException:
        tmp.unlink(missing_ok=True)
        for p in written:
            p.unlink(missing_ok=True)
        raise
    _remove_replaced(root, manifest, old, name)
    return path


def _remove_replaced(root: Path, manifest: dict[str, Any], old: dict[str, Any], name: str) -> None:
    """After the commit: delete the previous version's files that no manifest entry refers to any more."""
    in_use = set()
    for n, v in manifest.items():
        if isinstance(v, dict):
            in_use |= {v.get("file"), v.get("history") or f"{n}.history.json"}
    for file in (old.get("file"), old.get("history") or f"{name}.history.json") if old else ():
        if file and file not in in_use:
            (root / file).unlink(missing_ok=True)


# --- Published weights -------------------------------------------------------------------------------

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


HUB_DINO = "vit_small_patch16_224.dino"   # the paper's ViT-S/16 trained with DINO on ImageNet, through timm


def hub_dino(name: str = HUB_DINO, *, file: str | Path | None = None) -> tuple[nn.Module, nn.Module]:
    """A published DINO ViT through timm, and the same network as our ``VisionTransformer``.

    ``from_timm`` checks that the two give the same features before returning. Online, timm downloads
    the weights; ``file`` loads them from a local file instead (how the tests check this path offline).

    Raises:
        HubUnavailable: offline, or the weights could not be loaded.
    """
    reference = hub_model(name, file=file)
    return reference, from_timm(reference).eval()
