"""From timm to vislearn, and from a saved config back to a model; the parity checks that prove both.

``from_timm(timm_model)`` builds vislearn's equivalent of a timm model, loads its weights, and by
default checks on a random batch that both give the same outputs: a conversion that would silently
change the outputs is an error, never a result. Converters are registered per timm class name.

``parity_table`` is how notebooks and tests prove a model equal to timm's: randomize every weight of
the timm model (fresh models have zero biases and unit norms that would hide a mistake), convert,
compare outputs on random inputs, one row per case. ``build`` makes a model from the architecture
name and config stored with a checkpoint (checkpoints are keyed by this name, not by module path).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch
from torch import nn

from ..config import ParameterError, check_choice
from .cait import CaiT, CaiTConfig, cait_from_timm
from .convit import ConViT, ConViTConfig, convit_from_timm
from .convnet import ConvNet, ConvNetConfig
from .deit import DeiTConfig, DistilledVisionTransformer, deit_from_timm
from .layers import eval_mode
from .levit import LeViT, LeViTConfig, levit_from_timm
from .patchconvnet import PatchConvNet, PatchConvNetConfig
from .resmlp import ResMLP, ResMLPConfig, resmlp_from_timm
from .vit import VisionTransformer, ViTConfig, vit_from_timm
from .xcit import XCiT, XCiTConfig, xcit_from_timm

# timm class name -> function(timm_model) -> our model
CONVERTERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "VisionTransformer": vit_from_timm,
    "VisionTransformerDistilled": deit_from_timm,
    "Cait": cait_from_timm,
    "Xcit": xcit_from_timm,
    "Levit": levit_from_timm,
    "LevitDistilled": levit_from_timm,
    "ConVit": convit_from_timm,
    "MlpMixer": resmlp_from_timm,  # ResMLP only (timm builds it as an MlpMixer of ResBlocks)
}
# architecture name (stored in checkpoints) -> (model class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "vit": (VisionTransformer, ViTConfig),
    "deit": (DistilledVisionTransformer, DeiTConfig),
    "cait": (CaiT, CaiTConfig),
    "xcit": (XCiT, XCiTConfig),
    "levit": (LeViT, LeViTConfig),
    "resmlp": (ResMLP, ResMLPConfig),
    "convit": (ConViT, ConViTConfig),
    "patchconvnet": (PatchConvNet, PatchConvNetConfig),  # no timm model: proven against timm's pieces
    "convnet": (ConvNet, ConvNetConfig),  # the teacher of notebook 02 (DeiT distillation)
}


class ConversionMismatch(RuntimeError):
    """Our converted model does not reproduce the timm model's outputs."""


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    if not hasattr(getattr(model, "patch_embed", None), "img_size"):  # conv stems (XCiT, LeViT): ask the config
        return (model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size)
    pe = model.patch_embed
    img = pe.img_size if isinstance(pe.img_size, (tuple, list)) else (pe.img_size, pe.img_size)
    return (pe.proj.in_channels, *img)


@torch.no_grad()
def output_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest |a(x) - b(x)| over every output (a tensor, or a tuple of them), in the models' current modes."""
    out_a, out_b = a(x), b(x)
    pairs = zip(out_a, out_b, strict=True) if isinstance(out_a, tuple) else [(out_a, out_b)]
    return max((p - q).abs().max().item() for p, q in pairs)


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, batch: int = 2, seed: int = 0) -> float:
    """Largest |a(x) - b(x)| on a random batch at a's input size, both models in eval mode."""
    x = torch.randn((batch, *_input_size(a)), generator=torch.Generator().manual_seed(seed))
    with eval_mode(a, b):
        return output_diff(a, b, x)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Overwrite every parameter and float buffer with noise, in place; BatchNorm variances stay positive.

    Fresh models hide mistakes: zero biases, unit LayerNorm weights and tiny LayerScale gammas make
    whole branches vanish, so a bug there would still "match".
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=g) * scale
        t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)
    return model


@torch.no_grad()
def randomize_deep_(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """``randomize_``, then every Linear/Conv weight divided by ``scale * sqrt(fan_in)``: each layer keeps
    its input's size, so deep models without LayerNorm (LeViT's BatchNorms, ResMLP's Affine) give finite,
    O(1) outputs on random weights instead of overflowing, and a 1e-5 comparison still means something."""
    randomize_(model, seed=seed, scale=scale)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            m.weight.mul_(1 / (scale * m.weight[0].numel() ** 0.5))
    return model


DIFF = "max abs diff vs timm"   # the column every parity table reports


def parity_table(cases: Mapping[str, nn.Module | tuple[nn.Module, Sequence[int]]], *, batch: int = 4,
                 atol: float = 1e-5, extra: Callable[[nn.Module], Mapping[str, Any]] | None = None,
                 compare: Callable[[nn.Module, nn.Module, torch.Tensor], Mapping[str, float]] | None = None,
                 ) -> list[dict[str, Any]]:
    """Prove our models equal to timm's: one row per (case, input size).

    Each timm model is randomized (``randomize_``, seed = its position in ``cases``), converted by
    ``from_timm``, and both are run in eval mode on the same random images.

    Args:
        cases: name -> timm model, or (timm model, input sizes to test; default its own size).
        extra: more columns from our converted model (e.g. its LayerScale statistics).
        compare: ``compare(ours, timm_model, x) -> {column: difference}``; default one column, ``DIFF``.
            Every difference must be <= atol.
    Raises:
        ConversionMismatch: a difference above ``atol`` (the row says which case and size).
    """
    rows = []
    for i, (name, case) in enumerate(cases.items()):
        reference, sizes = case if isinstance(case, tuple) else (case, None)
        reference = randomize_(reference, seed=i).eval()
        ours = from_timm(reference, verify=False).eval()
        channels, default = _input_size(ours)[:2]
        for size in sizes or [default]:
            x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(size))
            diffs = dict(compare(ours, reference, x)) if compare else {DIFF: output_diff(ours, reference, x)}
            rows.append({"configuration": name, "input px": size, **(extra(ours) if extra else {}), **diffs})
            bad = {k: v for k, v in diffs.items() if not v <= atol}
            if bad:
                raise ConversionMismatch(f"{name} at {size} px: {bad} > {atol}")
    return rows


def from_timm(timm_model: nn.Module, *, verify: bool = True, atol: float = 1e-4) -> nn.Module:
    """vislearn's equivalent of ``timm_model``, with its weights.

    Args:
        timm_model: a timm model of a supported class (see ``CONVERTERS``).
        verify: run both on a random batch and raise ConversionMismatch if they differ by > atol.
    """
    name = type(timm_model).__name__
    if name not in CONVERTERS:
        raise NotImplementedError(f"from_timm: no converter for timm's {name}; supported: {sorted(CONVERTERS)}")
    ours = CONVERTERS[name](timm_model)
    if verify:
        diff = max_abs_diff(ours, timm_model)
        if not diff <= atol:
            raise ConversionMismatch(f"from_timm({name}): outputs differ by {diff:.3g} > {atol}")
    return ours.train(timm_model.training)


def build(arch: str, config: dict) -> nn.Module:
    """A fresh model from an architecture name and a config dict (as stored in checkpoints).

    Raises:
        ParameterError: an unknown architecture, an unknown config field, or a value of the wrong type.
    """
    check_choice("arch", arch, ARCHITECTURES)
    model_cls, config_cls = ARCHITECTURES[arch]
    check_config(config_cls, config)
    return model_cls(config_cls(**config))


def check_config(config_cls: type, config: Mapping[str, Any]) -> None:
    """Every key a field of ``config_cls``, every value of its field's type (judged by the default)."""
    defaults = {f.name: f.default for f in fields(config_cls)}
    for key, value in config.items():
        check_choice(f"{config_cls.__name__} field", key, defaults)
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (isinstance(default, float) or isinstance(value, int))
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:                   # None, tuples, factories: left to the config's own checks
            ok = True
        if not ok:
            kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(default)]
            raise ParameterError(f"{config_cls.__name__}.{key}={value!r} must be {kind}")
