"""vislearn.data.attacks: the attacks of the robustness curves and the marking loop's augmentation."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vislearn.config import ParameterError
from vislearn.data import attacks as A
from vislearn.data.photos import photo

pytestmark = pytest.mark.usefixtures("one_thread")


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # (3, H, W)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two real 8-bit photos, (2, 3, 96, 128)."""
    return torch.stack([as_tensor(photo(n)[:96, :128]) for n in ("chelsea", "coffee")])


def psnr(a, b) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_jpeg_is_real_and_its_quality_matters(images):
    q100, q50, q10 = (A.attack(images, "jpeg", q) for q in (100, 50, 10))
    assert q100.shape == images.shape and q100.dtype == images.dtype
    p100, p50, p10 = psnr(q100, images), psnr(q50, images), psnr(q10, images)
    assert p100 > 40 and p10 < 32 and p100 > p50 > p10, (p100, p50, p10)
    # the same bytes as Pillow's own encoder: decode what Pillow writes at quality 50
    buffer = io.BytesIO()
    Image.fromarray(photo("chelsea")[:96, :128]).save(buffer, format="JPEG", quality=50)
    expected = as_tensor(np.asarray(Image.open(buffer)))
    torch.testing.assert_close(q50[0], expected, atol=0, rtol=0)
    assert torch.all(q10 * 255 == (q10 * 255).round())  # decoded pixels are 8-bit


def test_identities(images):
    for name, strength in [("rotation", 0), ("crop", 1.0), ("resize", 1.0), ("blur", 1), ("brightness", 1.0),
                           ("contrast", 1.0), ("hue", 0.0), ("hflip", 0), ("none", 0)]:
        out = A.attack(images, name, strength)
        assert out.shape == images.shape, name
        torch.testing.assert_close(out, images, atol=2e-6, rtol=0, msg=name)


def test_known_values(images):
    torch.testing.assert_close(A.attack(images, "hflip", 1), images.flip(-1))
    torch.testing.assert_close(A.attack(images, "brightness", 0.5), images * 0.5)
    torch.testing.assert_close(A.attack(images, "brightness", 2.0), (images * 2).clamp(0, 1))
    grey = A.attack(images, "contrast", 0.0)               # every pixel the mean grey level of its image
    assert grey.flatten(1).std(1).max() < 1e-6
    assert A.attack(images, "hue", 0.25).shape == images.shape
    # rotating by 90 degrees (a square image) moves pixels exactly: the top row becomes the left column
    square = images[:, :, :64, :64]
    torch.testing.assert_close(A.attack(square, "rotation", 90), torch.rot90(square, 1, (-2, -1)), atol=1e-5, rtol=0)
    # a blur lowers the high-frequency energy
    diff = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert diff(A.attack(images, "blur", 9)) < 0.5 * diff(images)


def test_crop_and_resize_by_area(images):
    crop = A.attack(images, "crop", 0.25)                   # half the side, the centre
    assert crop.shape == (2, 3, 48, 64)
    torch.testing.assert_close(crop, images[:, :, 24:72, 32:96])
    small = A.attack(images, "resize", 0.25)
    assert small.shape == (2, 3, 48, 64)
    # torchvision's antialiased bilinear is Pillow's resampling filter: compare with Pillow on the 8-bit photo
    pil = Image.fromarray(photo("chelsea")[:96, :128]).resize((64, 48), Image.BILINEAR)
    torch.testing.assert_close(small[0], as_tensor(np.asarray(pil)), atol=1.5 / 255, rtol=0)
    assert (small - F.avg_pool2d(images, 2)).abs().mean() < 0.02  # and close to a 2 x 2 average
    assert A.attack(images[0], "crop", 0.5).shape == (3, 67, 90)  # a single image stays single


def test_single_images_and_combinations(images):
    one = A.attack(images[0], "jpeg", 70)
    assert one.shape == images[0].shape
    torch.testing.assert_close(one, A.attack(images, "jpeg", 70)[0])
    both = A.combine(images, [("crop", 0.25), ("hflip", 1)])
    torch.testing.assert_close(both, images[:, :, 24:72, 32:96].flip(-1))
    assert set(A.ATTACKS) >= {"jpeg", "rotation", "crop", "resize", "blur", "brightness", "contrast", "hue", "hflip"}
    for name, spec in A.ATTACKS.items():  # every default strength is accepted
        for s in spec.strengths:
            A.check_strength(name, s)


def test_bad_names_and_strengths_are_clear_errors(images):
    with pytest.raises(ParameterError, match="attack='jpg' is not allowed.*'jpeg'.*'rotation'"):
        A.attack(images, "jpg", 50)
    with pytest.raises(ParameterError, match=r"out of range for attack 'jpeg'.*quality in \[1, 100\]"):
        A.attack(images, "jpeg", 0)
    with pytest.raises(ParameterError, match="out of range for attack 'crop'"):
        A.attack(images, "crop", 1.5)
    with pytest.raises(ParameterError, match="odd kernel size"):
        A.attack(images, "blur", 4)
    with pytest.raises(ParameterError, match="must be an integer"):
        A.attack(images, "jpeg", 55.5)
    with pytest.raises(ParameterError, match="must be a number"):
        A.attack(images, "rotation", "ten")
    with pytest.raises(ParameterError, match=r"\(3, H, W\) or \(B, 3, H, W\)"):
        A.attack(images[:, :1], "jpeg", 50)
    with pytest.raises(ParameterError, match="float"):
        A.attack((images * 255).byte(), "jpeg", 50)
    with pytest.raises(ParameterError, match="pair"):
        A.combine(images, ["jpeg"])


def test_marking_augmentation_is_random_and_differentiable(images):
    augment = A.MarkingAugment()
    rng = np.random.default_rng(0)
    draws = [augment.sample(96, 128, rng) for _ in range(200)]
    kinds = {d[0] for d in draws}
    assert kinds == set(A.AUGMENTATIONS)
    assert 0.4 < np.mean([d[2] for d in draws]) < 0.6   # flips half of the time
    for kind, params, _ in draws:
        if kind == "crop":
            top, left, h, w = params
            assert top + h <= 96 and left + w <= 128 and 0.15 * 96 * 128 <= h * w <= 96 * 128
        if kind == "blur":
            assert params[0] % 2 == 1 and params[0] <= 17
    x = images.clone().requires_grad_(True)
    seen = set()
    for params in draws[:40]:
        out = A.MarkingAugment.apply(x, params)
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, params[0]
        seen.add(params[0])
        x.grad = None
    assert seen == set(A.AUGMENTATIONS)
    same = A.MarkingAugment.apply(images, ("none", (), False))
    assert same is images
    again = A.MarkingAugment()(images, np.random.default_rng(0))
    torch.testing.assert_close(again, A.MarkingAugment.apply(images, A.MarkingAugment().sample(
        96, 128, np.random.default_rng(0))))
    with pytest.raises(ParameterError, match="crop_area"):
        A.MarkingAugment(crop_area=(0.5, 2.0))
