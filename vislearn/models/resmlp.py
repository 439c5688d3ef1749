"""ResMLP: feedforward networks for image classification (Touvron et al., 2021), from scratch.

ResMLP asks how far a network gets with no attention at all. Like a ViT it cuts the image into
patches and alternates two residual sublayers, but both are plain linear maps. Token mixing is one
``Linear(N, N)`` applied across the patches, the same for every channel: output patch i is a learned
weighted sum of all input patches, with weights that do not depend on the image (so each row of the
matrix is a fixed "attention map" you can plot as a g x g image). Channel mixing is the usual MLP,
applied to every patch. There is no LayerNorm: ``Affine`` (alpha * x + beta per channel, no
statistics) takes its place, and LayerScale (CaiT) keeps the deep residual stack trainable.

Matches timm's ``MlpMixer`` built with ``ResBlock`` and ``Affine`` (``resmlp_12_224`` ...).
``vislearn.from_timm`` maps its state dict onto ours (``stem`` -> ``patch_embed``, ``ls1`` ->
``ls1.gamma``, Affine parameters (1, 1, D) -> (D,)) and the tests assert equal outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import ParameterError, check_int
from .layers import DropPath, LayerScale, Mlp, PatchEmbed, maybe
from .timm_checks import is_gelu_mlp, unsupported


@dataclass
class ResMLPConfig:
    img_size: int = 28            # input images are img_size x img_size
    patch_size: int = 4           # side of a square patch; img_size must be a multiple
    in_chans: int = 1             # 1 for Fashion-MNIST, 3 for photos
    num_classes: int = 10         # 0: no head, forward returns pooled features
    embed_dim: int = 128          # width D of every patch token
    depth: int = 6                # residual blocks (token mixing + channel MLP)
    mlp_ratio: float = 4.0        # channel-MLP hidden width / embed_dim
    init_values: float = 1e-4     # LayerScale gammas start here (timm: 1e-4 for 12 blocks, 1e-5 / 1e-6 deeper)
    drop_path_rate: float = 0.0   # stochastic depth, the same in every block (as timm)

    def __post_init__(self):
        check_int("patch_size", self.patch_size, minimum=1)
        check_int("depth", self.depth, minimum=0)
        if self.img_size % self.patch_size:
            raise ParameterError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}; "
                                 f"allowed: {[p for p in range(1, self.img_size + 1) if self.img_size % p == 0]}")

    def to_dict(self) -> dict:
        return asdict(self)


class Affine(nn.Module):
    """alpha * x + beta per channel: a LayerNorm without the normalization (no statistics at all, so a
    token's output never depends on the other tokens or the batch)."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)  # beta + alpha * x, as timm (one fused op)


class ResBlock(nn.Module):
    """x + ls1 * token_mix(affine(x)), then x + ls2 * mlp(affine(x)).

    ``linear_tokens`` acts on the patch axis: (B, N, D) -> transpose -> (B, D, N) -> Linear(N, N).
    """

    def __init__(self, dim: int, num_patches: int, *, mlp_ratio: float, init_values: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = nn.Linear(num_patches, num_patches)
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))
        self.ls1 = LayerScale(dim, init_values)
        self.ls2 = LayerScale(dim, init_values)
        self.drop_path = maybe(DropPath(drop_path), drop_path > 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.linear_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # (B, N, D)
        x = x + self.drop_path(self.ls1(mixed))
        x = x + self.drop_path(self.ls2(self.mlp_channels(self.norm2(x))))
        return x


class ResMLP(nn.Module):
    """Image -> patches -> residual MLP blocks -> Affine -> mean over patches -> head."""

    def __init__(self, cfg: ResMLPConfig | None = None, **overrides):
        super().__init__()
        cfg = cfg or ResMLPConfig(**overrides)
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans,
                                      embed_dim=D)
        N = self.patch_embed.num_patches
        self.blocks = nn.Sequential(*[
            ResBlock(D, N, mlp_ratio=cfg.mlp_ratio, init_values=cfg.init_values, drop_path=cfg.drop_path_rate)
            for _ in range(cfg.depth)])
        self.norm = Affine(D)
        self.head = nn.Linear(D, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> patch tokens (B, N, D)."""
        x = self.patch_embed(x)          # (B, N, D)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, D) -> logits (B, classes), or pooled features (B, D) if pre_logits."""
        x = x.mean(dim=1)                # (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def token_mixing_maps(self) -> torch.Tensor:
        """Every block's token-mixing weights as images: (depth, N, g, g); entry [b, i] is how much
        output patch i takes from each input patch of the g x g grid (the same for every image)."""
        g = self.patch_embed.grid_size
        return torch.stack([b.linear_tokens.weight.reshape(-1, g, g) for b in self.blocks])

    def no_weight_decay(self) -> set[str]:
        """Nothing is exempt in timm's rule beyond biases and 1-d parameters (recognised by shape)."""
        return set()


def _init_weights(m: nn.Module) -> None:
    """timm's default MlpMixer init for ResMLP (not Flax's): Xavier-uniform linear weights, zero biases
    (the MLPs' biases ~ N(0, 1e-6)); LeCun-normal patch projection; a zero head."""
    for name, mod in m.named_children():
        if isinstance(mod, nn.Linear):
            if name == "head":
                nn.init.zeros_(mod.weight)
                nn.init.zeros_(mod.bias)
            else:
                nn.init.xavier_uniform_(mod.weight)
                if isinstance(m, Mlp):
                    nn.init.normal_(mod.bias, std=1e-6)
                else:
                    nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Conv2d):
            fan_in = mod.weight[0].numel()
            nn.init.trunc_normal_(mod.weight, std=(1 / fan_in) ** 0.5 / 0.87962566103423978)
            nn.init.zeros_(mod.bias)


# --- timm -> vislearn ------------------------------------------------------------------------------

def _refuse(what: str) -> None:
    unsupported("MlpMixer", "ResMLP", what)


def config_from_timm(model) -> ResMLPConfig:
    """Read a ResMLPConfig off a timm ``MlpMixer`` made of ResBlocks; raise on anything we do not implement."""
    from timm.layers import PatchEmbed as TimmPatchEmbed
    from timm.models.mlp_mixer import Affine as TimmAffine
    from timm.models.mlp_mixer import ResBlock as TimmResBlock

    pe, blocks = model.stem, list(model.blocks)
    if not blocks or type(blocks[0]) is not TimmResBlock:
        _refuse(f"blocks other than ResMLP's ResBlock ({type(blocks[0]).__name__ if blocks else 'none'}): "
                "MLP-Mixer, gMLP ... are other models")
    first = blocks[0]
    drop_path = float(getattr(first.drop_path, "drop_prob", 0.0))
    checks = [
        (f"global_pool={model.global_pool!r}", model.global_pool != "avg"),
        (f"a patch embedding other than timm's PatchEmbed ({type(pe).__name__})", type(pe) is not TimmPatchEmbed),
        ("a normalized patch embedding", not isinstance(pe.norm, nn.Identity)),
        ("non-square, padded, dynamic or bias-free patches", pe.patch_size[0] != pe.patch_size[1]
         or pe.img_size is None or pe.img_size[0] != pe.img_size[1] or not pe.flatten
         or pe.dynamic_img_pad or pe.proj.bias is None),
        ("a final norm other than Affine", type(model.norm) is not TimmAffine),
        ("head dropout", model.head_drop.p > 0),
    ]
    for b in blocks:
        checks += [
            (f"a custom block type {type(b).__name__}", type(b) is not TimmResBlock),
            ("a norm other than Affine", not (type(b.norm1) is type(b.norm2) is TimmAffine)),
            (f"an MLP other than Linear-GELU-Linear ({type(b.mlp_channels).__name__})",
             not is_gelu_mlp(b.mlp_channels)),
            ("blocks of different widths", b.mlp_channels.fc1.out_features != first.mlp_channels.fc1.out_features),
            ("different drop_path rates per block", float(getattr(b.drop_path, "drop_prob", 0.0)) != drop_path),
            ("dropout inside the MLPs", b.mlp_channels.drop1.p > 0 or b.mlp_channels.drop2.p > 0),
        ]
    for what, bad in checks:
        if bad:
            _refuse(what)
    D = model.embed_dim
    return ResMLPConfig(
        img_size=pe.img_size[0], patch_size=pe.patch_size[0], in_chans=pe.proj.in_channels,
        num_classes=model.num_classes, embed_dim=D, depth=len(blocks),
        mlp_ratio=first.mlp_channels.fc1.out_features / D, init_values=float(first.ls1.detach().flatten()[0]),
        drop_path_rate=drop_path,
    )


def state_dict_from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ResMLP keys and shapes -> ours: ``stem.`` -> ``patch_embed.``, ``blocks.i.ls1`` ->
    ``blocks.i.ls1.gamma``, and the Affine ``alpha``/``beta`` from (1, 1, D) to (D,)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("stem."):
            key = "patch_embed." + key[len("stem."):]
        if key.endswith((".ls1", ".ls2")):
            key += ".gamma"
        if key.endswith((".alpha", ".beta")):
            value = value.reshape(-1)
        out[key] = value
    return out


def resmlp_from_timm(model) -> ResMLP:
    """Our ResMLP with the weights of a timm ``MlpMixer`` made of ResBlocks."""
    ours = ResMLP(config_from_timm(model))
    ours.load_state_dict(state_dict_from_timm(model.state_dict()), strict=True)
    return ours
