"""Magnitude (exact, no eps, finite backward) and orientation (exact, strictly inside its range)."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from conftest import check_contract, make_image
from torch.autograd import gradcheck, gradgradcheck

import imgrad

PI = math.pi


def _pair(gy, gx, dtype=torch.float64):
    return imgrad.Gradients(torch.tensor(gy, dtype=dtype), torch.tensor(gx, dtype=dtype))


# --------------------------------------------------------------------------- magnitude


@pytest.mark.parametrize(
    ("norm", "expected"),
    [("l2", [5.0, 5.0, 13.0, 0.0]), ("l1", [7.0, 7.0, 17.0, 0.0]), ("squared", [25, 25, 169, 0])],
)
def test_magnitude_exact_values(norm, expected, dtype):
    """3-4-5 and 5-12-13 triangles, any signs; a zero vector is 0."""
    g = _pair([3.0, -3.0, -5.0, 0.0], [4.0, -4.0, 12.0, -0.0], dtype)
    m = imgrad.magnitude(g, norm)
    assert m.dtype == dtype
    assert m.tolist() == expected


def test_magnitude_default_is_l2_and_accepts_plain_tuples_and_numpy():
    """The default norm is L2; a plain (gy, gx) tuple works; numpy in gives numpy out."""
    assert imgrad.magnitude((torch.tensor([6.0]), torch.tensor([8.0]))).tolist() == [10.0]
    out = imgrad.magnitude((np.array([6.0, 0.0]), np.array([8.0, 0.0])))
    assert isinstance(out, np.ndarray) and out.tolist() == [10.0, 0.0]


def test_flat_image_gives_exactly_zero_unlike_kornia():
    """No eps: a flat image has magnitude exactly 0; kornia's sobel gives sqrt(1e-6) = 1e-3."""
    x = torch.full((1, 1, 6, 7), 0.5)
    m = imgrad.gradient_magnitude(x)
    assert torch.equal(m, torch.zeros_like(x))
    kornia = pytest.importorskip("kornia")
    k = kornia.filters.sobel(x)
    torch.testing.assert_close(k, torch.full_like(x, 1e-3))
    # elsewhere kornia's sobel is the normalised replicate L2 magnitude plus the eps bias
    y = make_image((1, 1, 6, 7), torch.float64, seed=1)
    ref = imgrad.gradient_magnitude(y, border="replicate", normalized=True)
    torch.testing.assert_close(kornia.filters.sobel(y) ** 2 - 1e-6, ref**2, rtol=1e-9, atol=1e-12)


def test_backward_at_zero_gradient_is_finite_and_zero():
    """d|g|/dg at g = 0 is exactly 0 (not NaN); elsewhere it is g / |g|."""
    gy = torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64, requires_grad=True)
    gx = torch.tensor([0.0, 4.0, -2.0], dtype=torch.float64, requires_grad=True)
    imgrad.magnitude((gy, gx)).sum().backward()
    assert gy.grad[0].item() == 0.0 and gy.grad[2].item() == 0.0 and gx.grad[0].item() == 0.0
    torch.testing.assert_close(gy.grad, torch.tensor([0.0, 0.6, 0.0], dtype=torch.float64))
    torch.testing.assert_close(gx.grad, torch.tensor([0.0, 0.8, -1.0], dtype=torch.float64))
    # through the whole pipeline on a flat image
    x = torch.full((1, 1, 5, 5), 2.0, requires_grad=True)
    imgrad.gradient_magnitude(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("norm", ["l2", "l1", "squared"])
def test_magnitude_gradcheck(norm):
    """gradcheck (and gradgradcheck for smooth norms) away from the kinks."""
    gy = (torch.rand(3, 4, dtype=torch.float64) + 0.1).requires_grad_(True)
    gx = (-torch.rand(3, 4, dtype=torch.float64) - 0.1).requires_grad_(True)
    assert gradcheck(lambda a, b: imgrad.magnitude((a, b), norm), (gy, gx))
    if norm != "l1":
        assert gradgradcheck(lambda a, b: imgrad.magnitude((a, b), norm), (gy, gx))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grad", [False, True], ids=["fast", "autograd"])
def test_gradient_magnitude_of_half_precision_is_rounded_once(half, grad, monkeypatch):
    """float16/bfloat16 images: the float32 magnitude rounded once, on the fast path and the
    autograd (reference) path alike, and in the module; the two-call form rounds gy, gx to half
    first, which moves some pixels by an ulp (so the test can tell the two apart)."""
    monkeypatch.setattr(imgrad.fast, "EAGER_MIN_PIXELS", 0)  # the fast path for a small image
    x = (torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 200).to(half)
    want = imgrad.gradient_magnitude(x.float()).to(half)
    got = imgrad.gradient_magnitude(x.requires_grad_(grad))
    assert got.dtype == half and torch.equal(got.detach(), want)
    assert torch.equal(imgrad.GradientMagnitude()(x).detach(), want)
    two_calls = imgrad.magnitude(imgrad.sobel(x.detach()))
    assert (two_calls != want).sum() > 100


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_magnitude_half_precision_widened(half):
    """300² + 400² overflows float16; computed in float32 the result 500 is exact."""
    m = imgrad.magnitude(_pair([300.0], [400.0], half))
    assert m.dtype == half and m.tolist() == [500.0]
    assert imgrad.magnitude(_pair([300.0], [400.0], half), "l1").tolist() == [700.0]


def test_gradient_magnitude_is_magnitude_of_gradient(device):
    """gradient_magnitude = magnitude(spatial_gradient(...)), and honours the contract."""
    x = make_image((2, 3, 5, 6), torch.float32, device)
    for norm in ("l2", "l1", "squared"):
        m = check_contract(lambda t, n=norm: imgrad.gradient_magnitude(t, "prewitt", norm=n), x)
        assert torch.equal(m, imgrad.magnitude(imgrad.prewitt(x), norm))
    u8 = make_image((2, 1, 5, 6), torch.uint8, device)
    check_contract(imgrad.gradient_magnitude, u8)


@pytest.mark.parametrize("compiled", ["0", "1"])
def test_l2_square_root_is_correctly_rounded_in_every_path(monkeypatch, compiled):
    """float32 L2 magnitudes are IEEE sqrtf of gy² + gx² (numpy's correctly rounded square root),
    not eager torch.sqrt's (1 ulp off for many inputs): the function, the fast path (eager and
    compiled) and the reference path agree with numpy bit for bit."""
    fast = importlib.import_module("imgrad.fast")
    monkeypatch.setattr(fast, "EAGER_MIN_PIXELS", 0)  # the small image takes the fast path
    monkeypatch.setenv("IMGRAD_COMPILE", compiled)
    rng = np.random.default_rng(0)
    gy, gx = (rng.normal(0, 300, (256, 256)).astype(np.float32) for _ in "yx")
    want = np.sqrt(gy * gy + gx * gx)
    assert np.array_equal(imgrad.magnitude((gy, gx)), want)
    img = make_image((64, 80), torch.float32, seed=4) * 255
    gy, gx = imgrad.sobel(img)
    want = torch.from_numpy(np.sqrt((gy * gy + gx * gx).numpy()))
    assert torch.equal(imgrad.gradient_magnitude(img), want)  # fast path
    assert torch.equal(imgrad.gradient_magnitude(img.clone().requires_grad_()), want)  # reference


def test_magnitude_errors():
    """Bad norm, mismatched shapes, integer or non-tensor inputs raise with clear messages."""
    g = _pair([1.0], [1.0])
    with pytest.raises(ValueError, match=r"norm must be one of 'l2', 'l1', 'squared'; got 'linf'"):
        imgrad.magnitude(g, "linf")
    with pytest.raises(ValueError, match=r"norm must be one of"):
        imgrad.gradient_magnitude(torch.rand(4, 4), norm="L3")
    with pytest.raises(ValueError, match=r"shapes differ: \(2,\) vs \(3,\)"):
        imgrad.magnitude((torch.zeros(2), torch.zeros(3)))
    with pytest.raises(TypeError, match=r"must be floating point"):
        imgrad.magnitude((torch.zeros(2, dtype=torch.int32), torch.zeros(2, dtype=torch.int32)))
    with pytest.raises(TypeError, match=r"expected Gradients\(gy, gx\)"):
        imgrad.magnitude(torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"both tensors or both numpy arrays; got list and list"):
        imgrad.magnitude(([1.0], [2.0]))
    with pytest.raises(TypeError, match=r"got Tensor and ndarray"):
        imgrad.magnitude((torch.ones(3, 3), np.ones((3, 3))))


def test_magnitude_of_big_endian_arrays():
    """Non-native byte order (FITS data) is read as its values."""
    gy, gx = np.full((2, 2), 3.0, ">f4"), np.full((2, 2), 4.0, ">f8")
    assert imgrad.magnitude((gy, gx)).tolist() == [[5.0, 5.0], [5.0, 5.0]]


# --------------------------------------------------------------------------- orientation

# (gy, gx) of the 8 compass directions, +y down: E, SE, S, SW, W, NW, N, NE
COMPASS = [(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)]


def _compass(dtype=torch.float64):
    return _pair([float(a) for a, _ in COMPASS], [float(b) for _, b in COMPASS], dtype)


def test_orientation_compass_radians_unsigned():
    """[0, 2π): E 0, SE π/4 (clockwise on screen), S π/2, ..., NE 7π/4; exact."""
    got = imgrad.orientation(_compass())
    assert got.tolist() == [k * PI / 4 for k in range(8)]


def test_orientation_compass_degrees_unsigned():
    """[0, 360): exact multiples of 45."""
    assert imgrad.orientation(_compass(), degrees=True).tolist() == [45.0 * k for k in range(8)]


def test_orientation_compass_signed():
    """(−π, π]: W is +π, the upper half (gy < 0) negative."""
    rad = imgrad.orientation(_compass(), signed=True).tolist()
    assert rad == [0.0, PI / 4, PI / 2, 3 * PI / 4, PI, -3 * PI / 4, -PI / 2, -PI / 4]
    deg = imgrad.orientation(_compass(), signed=True, degrees=True).tolist()
    assert deg == [0.0, 45.0, 90.0, 135.0, 180.0, -135.0, -90.0, -45.0]


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("degrees", [False, True])
def test_zero_vectors_of_any_sign_are_zero(signed, degrees):
    """(±0, ±0) → +0 (atan2 gives ±π for (±0, −0))."""
    g = _pair([0.0, -0.0, 0.0, -0.0], [0.0, 0.0, -0.0, -0.0])
    out = imgrad.orientation(g, degrees=degrees, signed=signed)
    assert out.tolist() == [0.0] * 4
    assert not torch.signbit(out).any()
    assert torch.atan2(torch.tensor(0.0), torch.tensor(-0.0)).item() == pytest.approx(PI)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_negative_angle_is_strictly_below_the_top(dtype):
    """gy = −1e-30, gx = 1: OpenCV returns exactly 360; here strictly < 2π and < 360."""
    g = _pair([-1e-30], [1.0], dtype)
    rad = imgrad.orientation(g)
    deg = imgrad.orientation(g, degrees=True)
    assert 0 < rad.item() < 2 * PI
    assert rad.item() < torch.tensor(2 * PI, dtype=dtype).item()
    assert 359.99 < deg.item() < 360.0
    assert rad.dtype == dtype


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_orientation_stays_inside(half):
    """Rounding to half must not land on 2π / 360: a tiny negative angle stays below the top."""
    g = _pair([-1e-3], [1.0], half)
    deg = imgrad.orientation(g, degrees=True)
    rad = imgrad.orientation(g)
    assert deg.dtype == half and rad.dtype == half
    assert deg.item() < 360.0 and rad.item() < torch.tensor(2 * PI, dtype=half).item()
    assert deg.item() > 350.0
    # elsewhere half results are the float32 results rounded once
    c32 = imgrad.orientation(_compass(torch.float32), degrees=True)
    assert torch.equal(imgrad.orientation(_compass(half), degrees=True), c32.to(half))


def test_signed_minus_pi_folds_to_pi():
    """(−0, −1) and (−tiny, −1) give atan2 = −π; signed mode returns +π."""
    g = _pair([-0.0, -1e-300, 0.0], [-1.0, -1.0, -1.0])
    assert torch.atan2(g.gy, g.gx)[0].item() == -PI
    out = imgrad.orientation(g, signed=True)
    assert out.tolist() == [PI, PI, PI]
    assert imgrad.orientation(g, signed=True, degrees=True).tolist() == [180.0] * 3
    assert (imgrad.orientation(g) == PI).all()


def test_orientation_range_on_random_vectors():
    """Every result lies in [0, 2π) (unsigned) or (−π, π] (signed) and matches atan2."""
    g = torch.Generator().manual_seed(5)
    gy, gx = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    u = imgrad.orientation((gy, gx))
    s = imgrad.orientation((gy, gx), signed=True)
    assert ((u >= 0) & (u < 2 * PI)).all() and ((s > -PI) & (s <= PI)).all()
    torch.testing.assert_close(s, torch.atan2(gy, gx), rtol=0, atol=0)
    torch.testing.assert_close(
        torch.remainder(u - s, 2 * PI), torch.zeros_like(u), atol=1e-12, rtol=0
    )


def test_orientation_numpy_in_numpy_out():
    """numpy arrays in, numpy array out, same values as tensors."""
    out = imgrad.orientation((np.array([1.0, -1.0]), np.array([0.0, 0.0])), degrees=True)
    assert isinstance(out, np.ndarray) and out.tolist() == [90.0, 270.0]


def test_orientation_of_an_image_pipeline(device):
    """orientation(sobel(image)): a diagonal ramp x + y has orientation 45° everywhere inside."""
    t = torch.arange(6, dtype=torch.float64, device=device)
    x = t[None, :] + t[:, None]
    theta = imgrad.orientation(imgrad.sobel(x), degrees=True)
    assert torch.equal(
        theta[1:-1, 1:-1], torch.full((4, 4), 45.0, dtype=torch.float64, device=device)
    )


def test_nan_gradient_gives_nan_magnitude_for_every_norm():
    """A NaN component is not hidden: the magnitude is NaN (and 0 stays exactly 0)."""
    gy = torch.tensor([float("nan"), 0.0, 3.0])
    gx = torch.tensor([1.0, 0.0, 4.0])
    for norm in ("l2", "l1", "squared"):
        m = imgrad.magnitude(imgrad.Gradients(gy, gx), norm)
        assert m[0].isnan() and m[1] == 0, norm
    assert imgrad.magnitude(imgrad.Gradients(gy, gx))[2] == 5
