"""Objects in scenes, with their masks: Fashion-MNIST items pasted onto textured photos.

DINO's most striking figure is a ViT, trained with no labels, whose last-layer [CLS] attention
outlines the object in the image (Caron et al., 2021, "Emerging Properties in Self-Supervised
Vision Transformers", Figure 1 and Table 8). To measure that we need images with *an object on a
background* and each object's ground-truth mask. Fashion-MNIST alone has no background, and
PASCAL VOC is far too big for a CPU; so we build scenes from real data that every install has:

- **Backgrounds**: random square crops of real photos that scikit-image and scikit-learn ship
  (``vislearn.data.photo``): the textures ``grass``, ``gravel``, ``brick`` and crops of the photos
  ``china``, ``flower`` and ``coffee``. Each crop is 48-128 px of the half-resolution photo,
  resized to ``size``, turned grey, its contrast lowered (to 15-35%) and its mean brightness set
  to 0.3-0.4. Why grey and dim: DINO learns whatever two crops of one image share most reliably.
  With colourful, contrasted backgrounds (our first design) that was the background itself: the
  teacher's features told the texture apart (k-NN on the texture name 0.60) and the object class
  not at all (k-NN 0.11, chance); local crops, mostly background, could only agree with the global
  ones through the texture. Grey, low-contrast textures keep the scenes real and textured while
  making the object the most distinctive thing in the image (notes/dino_runs.md).
- **Objects**: one Fashion-MNIST item per scene, resized to a random side of
  ``min_side``-``max_side`` px, pasted at a random position where it fits whole, and colourized
  (a random saturated hue, shaded by the item's own grey levels). Colour and scale vary so that
  only the *shape* of the object says its class; the colour makes the object stand out. Options:
  the colour's brightness (``value``) and a random left-right mirror of the item (``flip``).
- **Masks**: the item's silhouette (its pixels above 5/255: Fashion-MNIST's faint noise counts
  as background), resampled with the same transform; a pixel belongs to the object when the soft
  silhouette (the paste's alpha) is >= 0.5. Pixels with alpha 0 are exactly the background. With
  the defaults (64 px scenes, sides of 32-48 px) an object covers 2-48% of its scene, 6-37% for
  98% of scenes, 19% on average; ``Scenes.coverage`` measures it.
- **Labels**: the item's Fashion-MNIST class, balanced: every class appears ``n / 10`` times
  (plus one for the first ``n % 10`` classes).

Train scenes paste items of Fashion-MNIST's train split, test scenes items of its test split, so
no object is shared between them (backgrounds come from the same photos, at random places).
**Validation** scenes (split ``val``) paste train-split items that no training scene pasted
(``exclude``: the ``items`` of the training scenes, or ``scene_items`` without composing them):
every choice (hyper-parameters, thresholds, designs) is made on them, and test scenes are scored
once, for the setting chosen. Everything is deterministic given ``(split, seed)``: same arguments,
same scenes, bit for bit.

At 64 px with a patch of 8 px, a ViT sees an 8 x 8 grid of patches: fine enough to see an
attention map outline an object. Built in notebook 05 (DINO).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..config import check_choice, check_int
from .fmnist import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays
from .photos import photo

BACKGROUNDS = ("grass", "gravel", "brick", "china", "flower", "coffee")
SCENES_MEAN = (0.398, 0.376, 0.359)  # per-channel mean of default train scenes, in [0, 1]
SCENES_STD = (0.183, 0.172, 0.175)   # and their standard deviation
CLASSES = FASHION_MNIST_CLASSES
CHUNK = 1024  # scenes composed at once (keeps the temporaries small)
SILHOUETTE_LEVEL = 0.02  # an item pixel above this grey level (5/255) is object, not Fashion-MNIST's black


@dataclass(frozen=True)
class SceneConfig:
    size: int = 64                      # scenes are size x size RGB images
    min_side: int = 32                  # smallest side of a pasted item, in pixels (items are square)
    max_side: int = 48                  # largest side; must be <= size
    backgrounds: tuple[str, ...] = BACKGROUNDS  # photos that backgrounds are cropped from
    crop_range: tuple[int, int] = (48, 128)     # side of the background crop, in half-resolution px
    contrast: tuple[float, float] = (0.15, 0.35)  # background contrast kept (1: the photo's own)
    brightness: tuple[float, float] = (0.3, 0.4)  # background mean brightness after the change
    tint: tuple[float, float] = (1.0, 1.0)        # per-channel gain range of the background (1: none)
    background_colour: float = 0.0      # colour kept in the background (0: grey textures, 1: the photo's)
    saturation: tuple[float, float] = (0.6, 1.0)  # saturation of the object's colour
    shade: float = 0.45                 # object pixel = colour * (shade + (1 - shade) * grey level)
    value: tuple[float, float] = (1.0, 1.0)  # brightness of the object's colour (HSV value; 1: full)
    flip: float = 0.0                   # probability that an item is mirrored left-right

    def __post_init__(self):
        check_int("size", self.size, minimum=8)
        if not 1 <= self.min_side <= self.max_side <= self.size:
            raise ValueError(f"need 1 <= min_side ({self.min_side}) <= max_side ({self.max_side}) "
                             f"<= size ({self.size})")
        for name in self.backgrounds:
            check_choice("background", name, BACKGROUNDS)

    def to_dict(self) -> dict:
        return asdict(self)


# The scenes DINO learns the *class* from (notes/dino_runs.md, runs r13-r19). DINO learns whatever
# best tells one scene from another and survives its augmentations: with contrasted textures that
# was the background (texture k-NN 0.60, class at chance); with a random colour per object it was
# the colour (hue k-NN 0.79, class 0.17). White objects on near-flat grey textures leave the shape.
# They are normalized with the default scenes' SCENES_MEAN/STD, as in those runs (so they are not
# exactly zero-mean: a fixed affine change of the input that the first layer absorbs).
DINO_SCENES = SceneConfig(contrast=(0.03, 0.08), saturation=(0.0, 0.0))

# The same scenes made harder for raw pixels in a way that DINO's augmentations (random resized crops)
# teach a network to ignore: objects of 20-48 px instead of 32-48. Chosen on validation scenes among the
# designs of notes/scene_designs.py (the largest lead of DINO over raw pixels: +0.060, 0.587 -> 0.647;
# mirroring the items as well, the design chosen earlier on test scenes, gave +0.053). Notebook 05
# evaluates the models trained on DINO_SCENES on them (k-NN with a bank of these scenes). Training DINO
# on such scenes directly learned more slowly (notes/dino_runs.md, run r22).
VARIED_SCENES = replace(DINO_SCENES, min_side=20)


@dataclass
class Scenes:
    """A set of scenes. ``images`` are normalized with SCENES_MEAN/STD; ``denormalize_scenes`` undoes it."""

    images: torch.Tensor        # (N, 3, S, S) float, normalized
    masks: torch.Tensor         # (N, S, S) bool, True on the object
    labels: torch.Tensor        # (N,) int64 Fashion-MNIST class
    textures: list[str]         # (N,) name of the photo each background was cropped from
    boxes: torch.Tensor         # (N, 4) int64 top, left, side, side of the pasted item
    config: SceneConfig
    items: torch.Tensor | None = None  # (N,) int64 index of each pasted item in its Fashion-MNIST split

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self) -> TensorDataset:
        """(images, labels) as a TensorDataset, what ``vislearn.train.fit`` takes."""
        return TensorDataset(self.images, self.labels)

    def coverage(self) -> torch.Tensor:
        """Fraction of each scene covered by its object: (N,)."""
        return self.masks.flatten(1).float().mean(1)

    def subset(self, index) -> Scenes:
        index = torch.as_tensor(index)
        return Scenes(self.images[index], self.masks[index], self.labels[index],
                      [self.textures[i] for i in index.tolist()], self.boxes[index], self.config,
                      None if self.items is None else self.items[index])


def normalize_scenes(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (..., 3, H, W) -> normalized with the scenes' per-channel mean and std."""
    mean = torch.tensor(SCENES_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(SCENES_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def denormalize_scenes(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``normalize_scenes``, clamped to [0, 1] for display."""
    mean = torch.tensor(SCENES_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(SCENES_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)


@functools.cache
def _texture(name: str) -> torch.Tensor:
    """Photo ``name`` as (3, H/2, W/2) float in [0, 1], averaged 2 x 2 (less aliasing when resized)."""
    x = torch.from_numpy(photo(name)).permute(2, 0, 1).float() / 255.0       # (3, H, W)
    return F.avg_pool2d(x[None], 2)[0]                                       # (3, H/2, W/2)


def _affine_paste(src: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: torch.Tensor,
                  size: int) -> torch.Tensor:
    """Place each square ``src`` image (N, C, h, w) as a side x side square at (top, left) of a blank
    size x size canvas, by bilinear resampling: (N, C, size, size), zero outside the square."""
    n = src.shape[0]
    s = side.float()
    theta = torch.zeros(n, 2, 3)
    # Output pixel x (normalized to [-1, 1]) sits at size/2 * (x + 1) px; the item's normalized
    # coordinate there is (px - centre) / (side / 2). Written as an affine map of x:
    theta[:, 0, 0] = size / s
    theta[:, 0, 2] = (size - 2 * left.float() - s) / s
    theta[:, 1, 1] = size / s
    theta[:, 1, 2] = (size - 2 * top.float() - s) / s
    grid = F.affine_grid(theta, [n, src.shape[1], size, size], align_corners=False)  # (N, S, S, 2)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _crop_resize(texture: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: torch.Tensor,
                 size: int) -> torch.Tensor:
    """Square crops (top, left, side) of one texture (3, H, W), each resized to size: (n, 3, S, S)."""
    n = len(top)
    _, H, W = texture.shape
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side.float() / W
    theta[:, 0, 2] = (2 * left.float() + side.float()) / W - 1
    theta[:, 1, 1] = side.float() / H
    theta[:, 1, 2] = (2 * top.float() + side.float()) / H - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)        # (n, S, S, 2)
    return F.grid_sample(texture.expand(n, -1, -1, -1), grid, mode="bilinear", align_corners=False)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue, saturation, value in [0, 1] (N,) -> RGB (N, 3)."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6                    # (N, 3)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))


SPLITS = ("train", "val", "test")
_SPLIT_KEY = {"train": 0, "test": 1, "val": 2}     # each split its own random stream


def _choose_items(rng: np.random.Generator, item_labels: np.ndarray, pool: np.ndarray,
                  n: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels, then one random item of each chosen class among ``pool`` (indices)."""
    classes = np.unique(item_labels[pool])
    labels = rng.permutation(np.resize(classes, n))
    by_class = {c: pool[item_labels[pool] == c] for c in classes}
    return labels, np.array([rng.choice(by_class[c]) for c in labels], dtype=np.int64)


def _split_items(split: str, items, exclude) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The split's item images and labels, and the pool of indices that may be pasted."""
    item_images, item_labels = items if items is not None else load_fashion_mnist_arrays(
        "test" if split == "test" else "train")
    pool = np.arange(len(item_labels))
    if exclude is not None:
        pool = np.setdiff1d(pool, np.asarray(exclude, dtype=np.int64))
    if split == "val" and exclude is None:
        raise ValueError("validation scenes need exclude=: the items of the training scenes "
                         "(Scenes.items or scene_items(...)), so that no validation object was trained on")
    if len(np.unique(item_labels[pool])) < len(np.unique(item_labels)):
        raise ValueError(f"only {len(pool)} items are left after exclude=, not every class among them")
    return item_images, item_labels, pool


def scene_items(n: int, split: str = "train", seed: int = 0, *,
                items: tuple[np.ndarray, np.ndarray] | None = None, exclude=None) -> np.ndarray:
    """The indices of the items that ``make_scenes`` with the same arguments pastes, (n,), without
    composing a single image (cheap: what the validation split must exclude). The choice does not
    depend on the SceneConfig."""
    n = check_int("n", n, minimum=1)
    check_choice("split", split, SPLITS)
    _, item_labels, pool = _split_items(split, items, exclude)
    return _choose_items(np.random.default_rng([seed, _SPLIT_KEY[split]]), item_labels, pool, n)[1]


def make_scenes(n: int, split: str = "train", seed: int = 0, config: SceneConfig | None = None,
                *, items: tuple[np.ndarray, np.ndarray] | None = None, exclude=None) -> Scenes:
    """``n`` scenes, deterministic given ``(split, seed, config)``.

    Args:
        n: number of scenes.
        split: ``train`` pastes Fashion-MNIST train items, ``test`` its test items, ``val`` the
            train items that are not in ``exclude``.
        seed: seed of everything random (which items, backgrounds, positions, colours).
        config: sizes and ranges; see ``SceneConfig``.
        items: (images (M, 28, 28) uint8, labels (M,)) to paste instead of Fashion-MNIST's split
            (tests use a few synthetic items).
        exclude: indices of items not to paste (required for ``val``: the training scenes' items).
    """
    cfg = config or SceneConfig()
    n = check_int("n", n, minimum=1)
    check_choice("split", split, SPLITS)
    rng = np.random.default_rng([seed, _SPLIT_KEY[split]])
    item_images, item_labels, pool = _split_items(split, items, exclude)
    S = cfg.size

    # Balanced labels, then one random item of each chosen class.
    labels, chosen = _choose_items(rng, item_labels, pool, n)

    # Every random number is drawn first, in a fixed order; images are then composed in chunks.
    textures = [_texture(name) for name in cfg.backgrounds]                   # (3, H, W) each
    tex_id = rng.integers(len(cfg.backgrounds), size=n)
    bg_side, bg_top, bg_left = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for t, texture in enumerate(textures):
        idx = np.flatnonzero(tex_id == t)
        _, H, W = texture.shape
        bg_side[idx] = rng.integers(cfg.crop_range[0], min(cfg.crop_range[1], H, W) + 1, size=len(idx))
        bg_top[idx] = (rng.random(len(idx)) * (H - bg_side[idx] + 1)).astype(np.int64)
        bg_left[idx] = (rng.random(len(idx)) * (W - bg_side[idx] + 1)).astype(np.int64)
    contrast = torch.from_numpy(rng.uniform(*cfg.contrast, size=(n, 1, 1, 1))).float()
    brightness = torch.from_numpy(rng.uniform(*cfg.brightness, size=(n, 1, 1, 1))).float()
    tint = torch.from_numpy(rng.uniform(*cfg.tint, size=(n, 3, 1, 1))).float()
    side = rng.integers(cfg.min_side, cfg.max_side + 1, size=n)
    top = (rng.random(n) * (S - side + 1)).astype(np.int64)
    left = (rng.random(n) * (S - side + 1)).astype(np.int64)
    hue = torch.from_numpy(rng.random(n)).float()
    sat = torch.from_numpy(rng.uniform(*cfg.saturation, size=n)).float()
    # Drawn last, so that configs without them keep the scenes they always had.
    value = torch.from_numpy(rng.uniform(*cfg.value, size=n)).float()
    flipped = rng.random(n) < cfg.flip
    colour = _hsv_to_rgb(hue, sat, value)[:, :, None, None]                     # (N, 3, 1, 1)

    images, masks = torch.empty(n, 3, S, S), torch.empty(n, S, S, dtype=torch.bool)
    for lo in range(0, n, CHUNK):
        c = slice(lo, min(n, lo + CHUNK))
        # Backgrounds: a random crop of a random photo, contrast lowered, brightness shifted, tinted.
        background = torch.empty(c.stop - lo, 3, S, S)
        for t, texture in enumerate(textures):
            idx = np.flatnonzero(tex_id[c] == t)
            if len(idx):
                background[idx] = _crop_resize(texture, *(torch.from_numpy(a[c][idx])
                                                          for a in (bg_top, bg_left, bg_side)), S)
        luma = background.mean(dim=1, keepdim=True)                            # (n, 1, S, S)
        background = luma + cfg.background_colour * (background - luma)
        grey = background.mean(dim=(1, 2, 3), keepdim=True)                    # (n, 1, 1, 1)
        background = (((background - grey) * contrast[c] + brightness[c]) * tint[c]).clamp(0, 1)
        # Objects: resized, placed where they fit whole, colourized, shaded by their grey levels.
        item = torch.from_numpy(item_images[chosen[c]].astype(np.float32) / 255.0)[:, None]   # (n, 1, 28, 28)
        item = torch.where(torch.from_numpy(flipped[c])[:, None, None, None], item.flip(-1), item)
        silhouette = (item > SILHOUETTE_LEVEL).float()
        pasted = _affine_paste(torch.cat([item, silhouette], 1),
                               *(torch.from_numpy(a[c]) for a in (top, left, side)), S)        # (n, 2, S, S)
        grey_levels, alpha = pasted[:, :1], pasted[:, 1:].clamp(0, 1)                       # (n, 1, S, S)
        obj = colour[c] * (cfg.shade + (1 - cfg.shade) * grey_levels / alpha.clamp(min=1e-6))
        images[c] = normalize_scenes(alpha * obj.clamp(0, 1) + (1 - alpha) * background)          # (n, 3, S, S)
        masks[c] = alpha[:, 0] >= 0.5

    return Scenes(images=images, masks=masks, labels=torch.from_numpy(labels),
                  textures=[cfg.backgrounds[t] for t in tex_id],
                  boxes=torch.from_numpy(np.stack([top, left, side, side], 1)), config=cfg,
                  items=torch.from_numpy(chosen))


def train_test_scenes(n_train: int, n_test: int, seed: int = 0,
                      config: SceneConfig | None = None) -> tuple[Scenes, Scenes]:
    """A train and a test set of scenes (different Fashion-MNIST items, different seeds)."""
    return make_scenes(n_train, "train", seed, config), make_scenes(n_test, "test", seed, config)

