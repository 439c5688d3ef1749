"""From timm to vislearn, and from a saved config back to a model.

``from_timm(timm_model)`` builds vislearn's equivalent of a timm model, loads its weights, and by
default checks on a random batch that both give the same outputs: a conversion that would silently
change the outputs is an error, never a result. Converters are registered per timm class name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .cait import CaiT, CaiTConfig, cait_from_timm
from .convnet import ConvNet, ConvNetConfig
from .deit import DeiTConfig, DistilledVisionTransformer, deit_from_timm
from .vit import VisionTransformer, ViTConfig, vit_from_timm
from .xcit import XCiT, XCiTConfig, xcit_from_timm

# timm class name -> function(timm_model) -> our model
CONVERTERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "VisionTransformer": vit_from_timm,
    "VisionTransformerDistilled": deit_from_timm,
    "Cait": cait_from_timm,
    "Xcit": xcit_from_timm,
}
# architecture name (stored in checkpoints) -> (model class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "vit": (VisionTransformer, ViTConfig),
    "deit": (DistilledVisionTransformer, DeiTConfig),
    "cait": (CaiT, CaiTConfig),
    "xcit": (XCiT, XCiTConfig),
    "convnet": (ConvNet, ConvNetConfig),  # the teacher of notebook 02 (DeiT distillation)
}


class ConversionMismatch(RuntimeError):
    """Our converted model does not reproduce the timm model's outputs."""


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    if not hasattr(model.patch_embed, "img_size"):  # XCiT's conv stem works at any size: ask its config
        return (model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size)
    pe = model.patch_embed
    img = pe.img_size if isinstance(pe.img_size, (tuple, list)) else (pe.img_size, pe.img_size)
    return (pe.proj.in_channels, *img)


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, batch: int = 2, seed: int = 0) -> float:
    """Largest |a(x) - b(x)| on a random batch, both models in eval mode."""
    x = torch.randn((batch, *_input_size(a)), generator=torch.Generator().manual_seed(seed))
    modes = a.training, b.training
    a.eval(), b.eval()
    try:
        return (a(x) - b(x)).abs().max().item()
    finally:
        a.train(modes[0]), b.train(modes[1])


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
    """A fresh model from an architecture name and a config dict (as stored in checkpoints)."""
    from .config import check_choice

    check_choice("arch", arch, ARCHITECTURES)
    model_cls, config_cls = ARCHITECTURES[arch]
    return model_cls(config_cls(**config))
