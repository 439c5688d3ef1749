"""What the timm converters check before they copy weights: each layer is one that we implement.

``from_timm`` must never return a model that silently computes something else, so every converter
inspects the timm model first and raises ``NotImplementedError`` (through ``unsupported``) on any
layer type or option vislearn does not implement.
"""

from __future__ import annotations

from torch import nn


def unsupported(timm_class: str, ours: str, what: str) -> None:
    """Refuse a conversion: the timm model uses ``what``, which our ``ours`` does not implement."""
    raise NotImplementedError(f"from_timm: this timm {timm_class} uses {what}, which vislearn's {ours} does not "
                              "implement; converting it would silently change its outputs")


def is_layernorm(m: nn.Module, eps: float | None) -> bool:
    """A LayerNorm with a scale and a shift and this epsilon."""
    return isinstance(m, nn.LayerNorm) and m.eps == eps and m.elementwise_affine and m.bias is not None


def is_batchnorm(m: nn.Module) -> bool:
    """A BatchNorm2d that uses its running statistics in eval, with a scale and shift, eps 1e-5."""
    return (type(m) is nn.BatchNorm2d and m.eps == 1e-5 and m.affine and m.track_running_stats
            and m.running_mean is not None)


def is_gelu(m: nn.Module) -> bool:
    """The exact GELU (not its tanh approximation)."""
    return type(m) is nn.GELU and m.approximate == "none"


def is_gelu_mlp(m: nn.Module) -> bool:
    """timm's ``Mlp`` as ours: Linear (with bias), exact GELU, Linear (with bias), no norm inside."""
    from timm.layers import Mlp as TimmMlp

    return (type(m) is TimmMlp and is_gelu(m.act) and isinstance(m.norm, nn.Identity)
            and m.fc1.bias is not None and m.fc2.bias is not None)
