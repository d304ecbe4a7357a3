"""Canny: pixel-exact parity with cv2.Canny, dtype paths, thresholds, batch, module, errors."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgrad.canny import Canny, CannyResult, canny

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
PHOTOS = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
assert len(PHOTOS) >= 9, f"the sample photographs are missing from {SAMPLES}"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def as_stored(path: str) -> np.ndarray:
    """The photograph as stored: (H, W) gray or (H, W, C) colour, uint8."""
    return np.array(Image.open(path))


def chw(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, -1, 0))


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.split("/")[-1])
def test_equals_cv2_on_photographs(path):
    """Every pixel equals cv2.Canny for ksize 3/5/7, L1/L2, two threshold pairs, gray/colour."""
    cv2 = pytest.importorskip("cv2")
    a = as_stored(path)
    x = torch.from_numpy(chw(a))
    for low, high in ((100, 200), (50, 150)):
        for ksize in (3, 5, 7):
            for l2 in (False, True):
                expected = cv2.Canny(a, low, high, apertureSize=ksize, L2gradient=l2) > 0
                out = canny(x, low, high, ksize=ksize, l2gradient=l2)
                out = out.numpy() if a.ndim == 2 else out[0].numpy()
                assert np.array_equal(out, expected), (low, high, ksize, l2)


def test_swapped_and_fractional_thresholds_like_cv2():
    cv2 = pytest.importorskip("cv2")
    a = as_stored(PHOTOS[2])
    assert np.array_equal(canny(a, 200, 100), cv2.Canny(a, 200, 100) > 0)
    for ksize, l2 in ((3, True), (7, False), (7, True)):
        expected = cv2.Canny(a, 60.5, 140.7, apertureSize=ksize, L2gradient=l2) > 0
        assert np.array_equal(canny(a, 60.5, 140.7, ksize=ksize, l2gradient=l2), expected)


def test_numpy_in_numpy_out_and_shapes():
    a = as_stored(PHOTOS[0])  # RGB
    out = canny(chw(a), 100, 200)
    assert isinstance(out, np.ndarray) and out.dtype == np.bool_ and out.shape == (1, *a.shape[:2])
    g = as_stored(PHOTOS[2])
    assert canny(torch.from_numpy(g), 100, 200).shape == g.shape


def test_uint16_scaled_by_257_gives_same_edges():
    a = chw(as_stored(PHOTOS[0]))
    wide = torch.from_numpy(a.astype(np.int32) * 257).to(torch.uint16)
    for ksize in (3, 5):
        for l2 in (False, True):
            expected = canny(a, 50, 150, ksize=ksize, l2gradient=l2)
            out = canny(wide, 50 * 257, 150 * 257, ksize=ksize, l2gradient=l2)
            assert np.array_equal(out.numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_scaled_gives_same_edges(dtype):
    """Floats x / 256 with thresholds / 256 (exact scaling) give the uint8 edges."""
    a = as_stored(PHOTOS[2])
    x = torch.from_numpy(a).to(dtype) / 256
    for ksize in (3, 5):
        for l2 in (False, True):
            expected = canny(a, 50, 150, ksize=ksize, l2gradient=l2)
            out = canny(x, 50 / 256, 150 / 256, ksize=ksize, l2gradient=l2)
            assert np.array_equal(out.numpy(), expected)


def test_threshold_boundaries():
    """A step of height h gives an L1 magnitude of 4h (Sobel 3): == high is not strong."""
    x = torch.zeros(8, 8)
    x[:, 4:] = 10.0  # |gx| = 40 on columns 3 and 4; NMS keeps column 3 (m > left, m >= right)
    assert canny(x, 10, 39)[:, 3].all()
    assert not canny(x, 10, 40).any()
    assert not canny(x, 40, 50).any()  # == low is not weak either


def test_batch_equals_one_by_one_and_module_equals_function():
    images = [np.atleast_3d(as_stored(p))[:300, :300, 0] for p in PHOTOS[1:4]]
    batch = torch.from_numpy(np.stack(images))[:, None]
    out = canny(batch, 80, 160, ksize=5)
    for i in range(batch.shape[0]):
        assert torch.equal(out[i], canny(batch[i], 80, 160, ksize=5))
    module = Canny(80, 160, ksize=5)
    assert torch.equal(module(batch), out)
    assert "ksize=5" in repr(module)
    assert list(module.parameters()) == []


def test_relative_and_quantile_thresholds():
    a = torch.from_numpy(as_stored(PHOTOS[2]))
    res = canny(a, 100, 200, return_details=True)
    assert isinstance(res, CannyResult)
    peak = float(
        canny(a, 0, 0, return_details=True).magnitude.max()
    )  # the largest magnitude survives NMS
    relative = canny(a, 0.2, 0.4, thresholds="relative")
    assert torch.equal(relative, canny(a, 0.2 * peak, 0.4 * peak))
    quantile = canny(a, 0.8, 0.9, thresholds="quantile")
    assert 0 < int(quantile.sum()) < a.numel() // 5
    # numpy's linear-interpolation quantiles of the L1 gradient norm, ends included
    from imgrad.gradients import sobel

    gy, gx = sobel(a.float(), border="replicate")
    norm = (gy.abs() + gx.abs()).double().numpy().ravel()
    for low, high in ((0.8, 0.9), (0.0, 0.37), (0.5, 1.0)):
        lo, hi = np.quantile(norm, [low, high])
        got = canny(a, low, high, thresholds="quantile")
        assert torch.equal(got, canny(a, lo, hi)), (low, high)


def test_automatic_thresholds_use_otsu_on_magnitude():
    from imgrad.gradients import sobel
    from imgrad.thresholds import otsu_threshold

    a = torch.from_numpy(as_stored(PHOTOS[2])).float()
    gy, gx = sobel(a, border="replicate")
    high = float(otsu_threshold(gy.abs() + gx.abs())[0])
    assert torch.equal(canny(a), canny(a, high / 2, high))
    assert canny(a).any()


def test_details_and_sigma():
    a = torch.from_numpy(as_stored(PHOTOS[2]))
    res = canny(a, 100, 200, return_details=True, l2gradient=True)
    assert res.magnitude.shape == res.orientation.shape == a.shape
    assert bool((res.magnitude[res.edges] > 100).all())
    assert float(res.orientation.min()) >= 0 and float(res.orientation.max()) < 2 * np.pi
    blurred = canny(a, 30, 60, sigma=1.5)
    assert blurred.sum() < canny(a, 30, 60).sum()


def test_luminance_color():
    """Edges of the BT.601 luma, computed from the RGB photograph (in place, channel by channel)
    or handed over as a float32 grey image: the same edges."""
    a = chw(as_stored(PHOTOS[0]))
    out = canny(a, 50, 100, color="luminance")
    r, g, b = torch.from_numpy(a).float().unbind(0)
    luma = r * 0.299 + g * 0.587 + b * 0.114
    assert out.shape == (1, *a.shape[1:]) and out.any()
    assert np.array_equal(out, canny(luma[None].numpy(), 50, 100))


def test_bad_inputs():
    x = torch.zeros(8, 8)
    with pytest.raises(ValueError, match="ksize must be 3, 5 or 7, got 4"):
        canny(x, 1, 2, ksize=4)
    with pytest.raises(ValueError, match="give both low and high"):
        canny(x, 1)
    with pytest.raises(ValueError, match="thresholds must be one of"):
        canny(x, 1, 2, thresholds="percent")
    with pytest.raises(ValueError, match=r"takes fractions in \[0, 1\]; got low=10"):
        canny(x, 10, 20, thresholds="relative")
    with pytest.raises(ValueError, match="color must be one of"):
        canny(x, 1, 2, color="green")
    with pytest.raises(ValueError, match="sigma must be positive and finite, got -1"):
        canny(x, 1, 2, sigma=-1)
    with pytest.raises(ValueError, match=r"sigma=2.7 needs a Gaussian of radius 9 pixels, more "):
        canny(x, 1, 2, sigma=2.7)  # refused before building 2r + 1 taps: 1e9 would not fit
    assert canny(x, 1, 2, sigma=8 / 3).shape == (8, 8)  # radius 8: allowed
    with pytest.raises(TypeError, match="low must be a number, got str"):
        canny(x, "1", 2)
    with pytest.raises(TypeError, match="high must be a number, got bool"):
        canny(x, 1, np.bool_(True))
    with pytest.raises(TypeError, match="bool images are not supported"):
        canny(x > 0, 1, 2)
    with pytest.raises(TypeError, match="l2gradient must be True or False"):
        Canny(1, 2, l2gradient=1)
    with pytest.raises(ValueError, match="color='luminance' needs 3 channels"):
        canny(torch.zeros(2, 8, 8), 1, 2, color="luminance")


def test_numpy_numbers_as_thresholds_and_sigma():
    """Thresholds computed with numpy (np.int64, np.float32) work like Python numbers."""
    a = chw(as_stored(PHOTOS[0]))
    assert np.array_equal(canny(a, np.int64(50), np.float32(150)), canny(a, 50, 150))
    blurred = canny(a, 0.1, 0.3, thresholds="relative", sigma=np.float64(1.5))
    assert np.array_equal(blurred, canny(a, 0.1, 0.3, thresholds="relative", sigma=1.5))


@CUDA
def test_cuda_equals_cpu():
    a = torch.from_numpy(chw(as_stored(PHOTOS[0])))
    for ksize, l2 in ((3, False), (5, True), (7, False)):
        cpu = canny(a, 50, 150, ksize=ksize, l2gradient=l2)
        assert torch.equal(canny(a.cuda(), 50, 150, ksize=ksize, l2gradient=l2).cpu(), cpu)
    assert torch.equal(canny(a.cuda()).cpu(), canny(a))


def test_compiled_strips_equal_cv2_on_large_image(monkeypatch):
    """The compiled strip kernel (IMGRAD_COMPILE=1) gives the same edges as cv2."""
    cv2 = pytest.importorskip("cv2")
    monkeypatch.setenv("IMGRAD_COMPILE", "1")
    a = cv2.resize(as_stored(PHOTOS[2]), (2048, 1100), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(canny(a, 100, 200), cv2.Canny(a, 100, 200) > 0)


@pytest.mark.parametrize(
    ("dtype", "kwargs"),
    [
        (torch.uint8, {"ksize": 5, "l2gradient": True}),  # colour, int32 products
        (torch.uint8, {"ksize": 7}),  # OpenCV's round(g / 16)
        (torch.uint16, {"ksize": 7, "l2gradient": True}),  # int64 scores and sector products
        (torch.float32, {"sigma": 1.0}),  # floating path
    ],
)
def test_compiled_plans_equal_eager(monkeypatch, dtype, kwargs):
    """Each kind of compiled strip kernel (own plan, own graph) gives the eager kernel's edges."""
    a = torch.from_numpy(chw(as_stored(PHOTOS[0])))[..., :160, :200].to(dtype)
    if dtype == torch.uint16:
        a = a * 257
    elif dtype.is_floating_point:
        a = a / 255
    low, high = {torch.uint8: (100, 200), torch.uint16: (25700, 51400)}.get(dtype, (0.1, 0.6))
    monkeypatch.setenv("IMGRAD_COMPILE", "0")
    eager = canny(a, low, high, **kwargs)
    monkeypatch.setenv("IMGRAD_COMPILE", "1")
    assert torch.equal(canny(a, low, high, **kwargs), eager)
    assert eager.sum() > 100


def test_strips_and_reused_grid_equal_cv2(monkeypatch):
    """Strips of a few rows over a batch (the last one overlapping), then a smaller image in the
    state grid kept from the larger call: the same edges as cv2."""
    cv2 = pytest.importorskip("cv2")
    module = importlib.import_module("imgrad.canny")  # imgrad.canny is also the function
    images = [np.atleast_3d(as_stored(p))[:200, :301, 0].copy() for p in PHOTOS[1:4]]
    monkeypatch.setattr(module, "STRIP_ELEMENTS", 5000)  # 5 rows of a 3-image batch per strip
    out = canny(torch.from_numpy(np.stack(images))[:, None], 100, 200)
    for i, a in enumerate(images):
        assert np.array_equal(out[i, 0].numpy(), cv2.Canny(a, 100, 200) > 0)
    small = images[0][:50, :70].copy()
    assert np.array_equal(canny(small, 100, 200), cv2.Canny(small, 100, 200) > 0)
