"""vislearn.data.photos: real photos from installed packages."""

import numpy as np
import pytest

from vislearn.config import ParameterError
from vislearn.data import photos as data


def test_photos_are_real_rgb_images():
    imgs = data.photos()
    assert set(imgs) == set(data.PHOTO_NAMES)
    for name, img in imgs.items():
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, name
        assert min(img.shape[:2]) >= 256 and img.std() > 10, name  # real content, not a blank
    assert data.photo("astronaut").shape == (512, 512, 3)
    with pytest.raises(ParameterError, match="'astronaut'"):
        data.photo("lena")
