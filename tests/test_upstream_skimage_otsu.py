"""scikit-image's own tests of Otsu's threshold, run against imgrad.

Ported from ``tests/skimage/filters/test_thresholding.py`` of scikit-image v0.26.0 (commit
ee0a7a3ebd9ac8c2602f40e55bc015a3c8a81ae8, the installed version; the file lived at
``skimage/filters/tests/test_thresholding.py`` before the tests moved out of the package): the
``test_otsu*`` functions and the Otsu half of ``test_bimodal_multiotsu_hist``. Each test keeps
its upstream name and assertions; ``threshold_otsu`` below is :func:`imgrad.otsu_threshold` (the
value; imgrad's ``threshold_otsu`` is the mask) of one image, as a Python number. The images come
from the installed ``skimage.data`` (bundled, no download).

Deliberate differences, and the upstream tests they concern:

- imgrad's Otsu takes no ``hist=`` argument (it thresholds images, per image of a batch):
  ``test_otsu_camera_image_histogram`` and ``test_otsu_camera_image_counts`` are left out, and
  ``test_otsu_zero_count_histogram`` keeps its image half, against scikit-image's histogram half.
- imgrad takes images of rank 2 to 4: the 1-D ``x`` of ``test_otsu_zero_count_histogram`` is
  given as one row.
- imgrad reads a 3-D array as ``(C, H, W)`` and pools the channels of an image on purpose, so it
  does not warn that an ``(H, W, 3)`` array looks like RGB: ``test_otsu_astro_image``'s value is
  kept, its expected warning is an xfail (``test_otsu_astro_image_warns_grayscale``).

Upstream has no ``test_otsu_lena_image`` any more (the Lena image left scikit-image long before
v0.26.0), so there is nothing to port for it.
"""

from __future__ import annotations

import numpy as np
import pytest

import imgrad

data = pytest.importorskip("skimage.data")
util = pytest.importorskip("skimage.util")
color = pytest.importorskip("skimage.color")
filters = pytest.importorskip("skimage.filters")


def threshold_otsu(image: np.ndarray, nbins: int | None = None) -> float | int:
    """imgrad's Otsu threshold of one image, a number as scikit-image's scalar."""
    (value,) = imgrad.otsu_threshold(image, bins=nbins).tolist()
    return value


class TestSimpleImage:
    def setup_method(self):
        self.image = np.array(
            [
                [0, 0, 1, 3, 5],
                [0, 1, 4, 3, 4],
                [1, 2, 5, 4, 1],
                [2, 4, 5, 2, 1],
                [4, 5, 1, 0, 0],
            ],
            dtype=int,
        )

    def test_otsu(self):
        assert threshold_otsu(self.image) == 2

    def test_otsu_negative_int(self):
        image = self.image - 2
        assert threshold_otsu(image) == 0

    def test_otsu_float_image(self):
        image = np.float64(self.image)
        assert 2 <= threshold_otsu(image) < 3


def test_otsu_camera_image():
    camera = util.img_as_ubyte(data.camera())
    assert 101 < threshold_otsu(camera) < 103


# test_otsu_camera_image_histogram and test_otsu_camera_image_counts are left out: they call
# threshold_otsu(hist=...) with a precomputed histogram, and imgrad's Otsu has no hist= argument.


def test_otsu_zero_count_histogram():
    """Issue #5497.

    As the histogram returned by np.bincount starts with zero,
    it resulted in NaN-related issues.
    """
    x = np.array([1, 2])

    t1 = threshold_otsu(x[None])  # imgrad: images are 2-D at least
    t2 = filters.threshold_otsu(hist=np.bincount(x))  # imgrad has no hist=: skimage's side
    assert t1 == t2


def test_otsu_coins_image():
    coins = util.img_as_ubyte(data.coins())
    assert 106 < threshold_otsu(coins) < 108


def test_otsu_coins_image_as_float():
    coins = util.img_as_float(data.coins())
    assert 0.41 < threshold_otsu(coins) < 0.42


def test_otsu_astro_image():
    img = util.img_as_ubyte(data.astronaut())
    # upstream wraps this in expected_warnings(['grayscale']): see the xfail below
    assert 109 < threshold_otsu(img) < 111


@pytest.mark.xfail(
    strict=True,
    reason="imgrad reads a 3-D array as (C, H, W) and pools all channels of an image on "
    "purpose, so it does not warn that an (H, W, 3) array looks like RGB as scikit-image does.",
)
def test_otsu_astro_image_warns_grayscale():
    img = util.img_as_ubyte(data.astronaut())
    with pytest.warns(UserWarning, match="grayscale"):
        threshold_otsu(img)


def test_otsu_one_color_image():
    img = np.ones((10, 10), dtype=np.uint8)
    assert threshold_otsu(img) == 1


def test_otsu_one_color_image_3d():
    img = np.ones((10, 10, 10), dtype=np.uint8)
    assert threshold_otsu(img) == 1


def test_bimodal_multiotsu_hist():
    for name in ["camera", "moon", "coins", "text", "clock", "page"]:
        img = getattr(data, name)()
        assert threshold_otsu(img) == filters.threshold_multiotsu(img, 2)

    for name in ["chelsea", "coffee", "astronaut", "rocket"]:
        img = color.rgb2gray(getattr(data, name)())
        assert threshold_otsu(img) == filters.threshold_multiotsu(img, 2)
