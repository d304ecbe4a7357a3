"""Every operator and every border: exact numbers, peers, accuracy, properties, dtypes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import check_contract, expected_dtype, make_image
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import imgrad

# --------------------------------------------------------------------------- independent taps
# Written out from REFERENCE.md's table, not imported from imgrad: (derivative, origin), smoothing.
TAPS: dict[str, tuple[list[float], int, list[float]]] = {
    "sobel1": ([-1, 0, 1], 1, [1]),
    "sobel3": ([-1, 0, 1], 1, [1, 2, 1]),
    "sobel5": ([-1, -2, 0, 2, 1], 2, [1, 4, 6, 4, 1]),
    "sobel7": ([-1, -4, -5, 0, 5, 4, 1], 3, [1, 6, 15, 20, 15, 6, 1]),
    "scharr": ([-1, 0, 1], 1, [3, 10, 3]),
    "prewitt": ([-1, 0, 1], 1, [1, 1, 1]),
    "central": ([-0.5, 0, 0.5], 1, [1]),
    "forward": ([-1, 1], 0, [1]),
}
#: Second-difference taps (centred) for the operators that define them.
SECOND = {
    "sobel1": [1, -2, 1],
    "sobel3": [1, -2, 1],
    "sobel5": [1, 0, -2, 0, 1],
    "sobel7": [1, 2, -1, -4, -1, 2, 1],
    "central": [1, -2, 1],
}
OPS = list(TAPS)
BORDERS = ["reflect101", "reflect", "replicate", "constant", "circular"]
NP_MODE = {
    "reflect101": "reflect",
    "reflect": "symmetric",
    "replicate": "edge",
    "constant": "constant",
    "circular": "wrap",
}


def _call(name: str) -> dict:
    """Keyword arguments of spatial_gradient for an operator key."""
    if name.startswith("sobel"):
        return {"operator": "sobel", "ksize": int(name[5:])}
    return {"operator": name}


def _apply2d(img: np.ndarray, k: np.ndarray, origin: tuple[int, int], border: str, value: float):
    """out[i, j] = sum_ab k[a, b] * f[i + a - oy, j + b - ox] on the numpy-padded image."""
    kh, kw = k.shape
    oy, ox = origin
    widths = ((oy, kh - 1 - oy), (ox, kw - 1 - ox))
    if border == "constant":
        p = np.pad(img, widths, mode="constant", constant_values=value)
    else:
        p = np.pad(img, widths, mode=NP_MODE[border])
    out = np.zeros(img.shape, dtype=np.float64)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            out[i, j] = np.sum(k * p[i : i + kh, j : j + kw])
    return out


def reference_first(img: np.ndarray, name: str, border: str, value: float = 0.0):
    """(gy, gx) of a 2-D float64 array with the full 2-D kernels (outer products)."""
    d, o, s = TAPS[name]
    d, s = np.array(d, dtype=np.float64), np.array(s, dtype=np.float64)
    so = len(s) // 2
    gx = _apply2d(img, np.outer(s, d), (so, o), border, value)
    gy = _apply2d(img, np.outer(d, s), (o, so), border, value)
    return gy, gx


def reference_second(img: np.ndarray, name: str, border: str, value: float = 0.0):
    """(gyy, gxy, gxx) of a 2-D float64 array with full 2-D kernels."""
    d, o, s = TAPS[name]
    d, s, s2 = (np.array(t, dtype=np.float64) for t in (d, s, SECOND[name]))
    so, o2 = len(s) // 2, len(s2) // 2
    gxx = _apply2d(img, np.outer(s, s2), (so, o2), border, value)
    gyy = _apply2d(img, np.outer(s2, s), (o2, so), border, value)
    gxy = _apply2d(img, np.outer(d, d), (o, o), border, value)
    return gyy, gxy, gxx


def _cv2():
    return pytest.importorskip("cv2")


# --------------------------------------------------------------------------- exact, by hand


X2 = (np.arange(5, dtype=np.float64) ** 2)[None].repeat(3, axis=0)  # rows of 0 1 4 9 16


@pytest.mark.parametrize(
    ("border", "value", "expected"),
    [
        # middle row; smoothing 1 + 2 + 1 = 4 times (f[j+1] - f[j-1]) with the border's f[-1], f[5]
        ("reflect101", 0.0, [0, 16, 32, 48, 0]),  # f[-1] = f[1] = 1, f[5] = f[3] = 9
        ("reflect", 0.0, [4, 16, 32, 48, 28]),  # f[-1] = f[0] = 0, f[5] = f[4] = 16
        ("replicate", 0.0, [4, 16, 32, 48, 28]),
        ("constant", 10.0, [-36, 16, 32, 48, 4]),  # f[-1] = f[5] = 10: 4 (1 - 10), 4 (10 - 9)
        ("circular", 0.0, [-60, 16, 32, 48, -36]),  # f[-1] = f[4] = 16, f[5] = f[0] = 0
    ],
)
def test_sobel3_ramp_x_squared_every_border(border, value, expected):
    """Hand-computed Sobel 3 of x² along a row with every border rule."""
    g = imgrad.sobel(torch.from_numpy(X2), border=border, border_value=value)
    assert g.gx[1].tolist() == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sobel1", [0, 0, 0, 1, 1, 0, 0, 0]),
        ("sobel3", [0, 0, 0, 4, 4, 0, 0, 0]),
        ("sobel5", [0, 0, 16, 48, 48, 16, 0, 0]),  # [-1 -2 0 2 1] gives 1 3 3 1; times 16
        ("sobel7", [0, 64, 320, 640, 640, 320, 64, 0]),  # [-1 -4 -5 0 5 4 1]: 1 5 10 10 5 1; x64
        ("scharr", [0, 0, 0, 16, 16, 0, 0, 0]),
        ("prewitt", [0, 0, 0, 3, 3, 0, 0, 0]),
        ("central", [0, 0, 0, 0.5, 0.5, 0, 0, 0]),
        ("forward", [0, 0, 0, 1, 0, 0, 0, 0]),
    ],
)
def test_step_edge_exact_every_operator(name, expected):
    """A 0/1 step between columns 3 and 4 of an 8-wide image, written out by hand."""
    x = torch.zeros(5, 8, dtype=torch.float64)
    x[:, 4:] = 1
    g = imgrad.spatial_gradient(x, **_call(name))
    assert g.gx.tolist() == [expected] * 5
    assert torch.equal(g.gy, torch.zeros_like(x))


def test_delta_gives_flipped_kernels():
    """Correlating a unit impulse gives the kernel point-reflected: Sobel 3 and Scharr."""
    x = torch.zeros(5, 5, dtype=torch.float64)
    x[2, 2] = 1
    gx = imgrad.sobel(x).gx[1:4, 1:4]
    assert gx.tolist() == [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    gy = imgrad.scharr(x).gy[1:4, 1:4]
    assert gy.tolist() == [[3, 10, 3], [0, 0, 0], [-3, -10, -3]]


# --------------------------------------------------------------------------- independent impl.


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape", [(4, 5), (7, 9)])
def test_first_derivatives_match_numpy_reference(name, border, shape):
    """Every operator x border equals the 2-D-kernel, np.pad, double-loop reference."""
    img = make_image(shape, torch.float64, seed=shape[1]).numpy() * 10
    value = 2.5 if border == "constant" else 0.0
    gy, gx = imgrad.spatial_gradient(img, **_call(name), border=border, border_value=value)
    ry, rx = reference_first(img, name, border, value)
    np.testing.assert_allclose(gx, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gy, ry, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("name", list(SECOND))
def test_second_derivatives_match_numpy_reference(name, border):
    """Second derivatives of every operator that has them, on every border."""
    img = make_image((6, 7), torch.float64, seed=3).numpy() * 10
    value = -1.0 if border == "constant" else 0.0
    got = imgrad.second_derivatives(img, **_call(name), border=border, border_value=value)
    for g, r in zip(got, reference_second(img, name, border, value), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_integer_data_is_exact_in_float32():
    """Integer taps on integer data are exact: uint8 Sobel 7 equals the float64 reference."""
    img = make_image((8, 9), torch.uint8, seed=5)
    gy, gx = imgrad.sobel(img, ksize=7)
    ry, rx = reference_first(img.double().numpy(), "sobel7", "reflect101")
    assert gx.dtype == torch.float32
    assert np.array_equal(gx.double().numpy(), rx) and np.array_equal(gy.double().numpy(), ry)


def test_engine_keeps_integer_data_integer_and_exact_past_24_bits():
    """int32 data with integral taps stays int32 (Canny's path): Sobel 7 of 16-bit data, whose
    responses pass 2**24 (float32 would round them), equals the float64 reference."""
    from imgrad.gradients import first_derivatives_extended
    from imgrad.operators import get_operator

    rng = np.random.default_rng(11)
    img = rng.integers(0, 2000, (9, 12)) + np.where(np.arange(12) >= 6, 63000, 0)
    x = torch.from_numpy(np.pad(img, 3, mode="edge")).to(torch.int32)[None, None]
    gy, gx = first_derivatives_extended(x, get_operator("sobel", 7), 3)
    ry, rx = reference_first(img.astype(np.float64), "sobel7", "replicate")
    assert gy.dtype == gx.dtype == torch.int32
    assert np.abs(rx).max() > 2**24
    assert np.array_equal(gx[0, 0].numpy(), rx) and np.array_equal(gy[0, 0].numpy(), ry)


# --------------------------------------------------------------------------- OpenCV


CV_BORDERS = {
    "reflect101": "BORDER_REFLECT_101",
    "reflect": "BORDER_REFLECT",
    "replicate": "BORDER_REPLICATE",
    "constant": "BORDER_CONSTANT",
}


def _cv_input(np_dtype) -> np.ndarray:
    rng = np.random.default_rng(7)
    if np_dtype == np.uint8:
        return rng.integers(0, 256, (9, 11)).astype(np.uint8)
    if np_dtype == np.int16:
        return rng.integers(-3000, 3000, (9, 11)).astype(np.int16)
    return rng.random((9, 11)).astype(np.float32)


def _cv_compare(got: np.ndarray, want: np.ndarray, np_dtype) -> None:
    assert got.dtype == np.float32
    if np_dtype == np.float32:
        # float32 rounding of sums of up to 49 terms: relative to the largest response
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    else:
        assert np.array_equal(got, want), np.abs(got - want).max()


@pytest.mark.parametrize("np_dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("border", list(CV_BORDERS))
@pytest.mark.parametrize("ksize", [1, 3, 5, 7])
def test_sobel_equals_cv2(ksize, border, np_dtype):
    """cv2.Sobel (first and second orders) with the matching border: bit-exact on integers."""
    cv2 = _cv2()
    img = _cv_input(np_dtype)
    bt = getattr(cv2, CV_BORDERS[border])
    gy, gx = imgrad.sobel(img, ksize=ksize, border=border)
    _cv_compare(gx, cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=ksize, borderType=bt), np_dtype)
    _cv_compare(gy, cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=ksize, borderType=bt), np_dtype)
    gyy, gxy, gxx = imgrad.second_derivatives(img, ksize=ksize, border=border)
    _cv_compare(gxx, cv2.Sobel(img, cv2.CV_32F, 2, 0, ksize=ksize, borderType=bt), np_dtype)
    _cv_compare(gyy, cv2.Sobel(img, cv2.CV_32F, 0, 2, ksize=ksize, borderType=bt), np_dtype)
    _cv_compare(gxy, cv2.Sobel(img, cv2.CV_32F, 1, 1, ksize=ksize, borderType=bt), np_dtype)
    lap = imgrad.laplacian(img, ksize, border=border)
    _cv_compare(lap, cv2.Laplacian(img, cv2.CV_32F, ksize=ksize, borderType=bt), np_dtype)


@pytest.mark.parametrize("np_dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("border", list(CV_BORDERS))
def test_scharr_equals_cv2(border, np_dtype):
    """cv2.Scharr with the matching border."""
    cv2 = _cv2()
    img = _cv_input(np_dtype)
    bt = getattr(cv2, CV_BORDERS[border])
    gy, gx = imgrad.scharr(img, border=border)
    _cv_compare(gx, cv2.Scharr(img, cv2.CV_32F, 1, 0, borderType=bt), np_dtype)
    _cv_compare(gy, cv2.Scharr(img, cv2.CV_32F, 0, 1, borderType=bt), np_dtype)


def test_laplacian_kernels_by_hand():
    """cv2.Laplacian's documented kernels: ksize 1 is the 5-point stencil, ksize 3 the corners."""
    x = torch.zeros(7, 7, dtype=torch.float64)
    x[3, 3] = 1
    assert imgrad.laplacian(x, 1)[2:5, 2:5].tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert imgrad.laplacian(x, 3)[2:5, 2:5].tolist() == [[2, 0, 2], [0, -8, 0], [2, 0, 2]]


# --------------------------------------------------------------------------- scikit-image


@pytest.mark.parametrize(
    ("name", "factor", "fy", "fx"),
    [
        ("sobel", 4, "sobel_h", "sobel_v"),
        ("scharr", 16, "scharr_h", "scharr_v"),
        ("prewitt", 3, "prewitt_h", "prewitt_v"),
    ],
)
def test_skimage_is_raw_over_factor_with_reflect(name, factor, fy, fx):
    """skimage's *_h is +gy / factor and *_v is +gx / factor (same sign), border 'reflect'."""
    filters = pytest.importorskip("skimage.filters")
    img = make_image((7, 8), torch.float64, seed=11).numpy()
    gy, gx = imgrad.spatial_gradient(img, name, border="reflect")
    np.testing.assert_allclose(getattr(filters, fy)(img), gy / factor, rtol=0, atol=1e-14)
    np.testing.assert_allclose(getattr(filters, fx)(img), gx / factor, rtol=0, atol=1e-14)
    # the sign is not flipped by scikit-image's true convolution: a step right gives +
    step = np.zeros((5, 6))
    step[:, 3:] = 1
    assert getattr(filters, fx)(step)[2, 3] > 0
    assert imgrad.spatial_gradient(step, name, border="reflect").gx[2, 3] > 0
    # and the default border (reflect101) differs from scikit-image at the image border
    assert not np.allclose(
        imgrad.spatial_gradient(img, name).gx / factor, getattr(filters, fx)(img)
    )


def test_skimage_sobel_magnitude():
    """skimage.filters.sobel = sqrt((gx² + gy²) / 2) of the /4 responses, border reflect."""
    filters = pytest.importorskip("skimage.filters")
    img = make_image((7, 8), torch.float64, seed=12).numpy()
    m = imgrad.gradient_magnitude(img, border="reflect")
    np.testing.assert_allclose(filters.sobel(img), m / 4 / math.sqrt(2), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- kornia


def test_kornia_spatial_gradient_sobel_normalized():
    """kornia spatial_gradient(normalized=True) stacks [dx, dy] in dim 2, replicate padding."""
    kornia = pytest.importorskip("kornia")
    x = make_image((2, 3, 6, 7), torch.float32, seed=13)
    k = kornia.filters.spatial_gradient(x, mode="sobel", order=1, normalized=True)
    gy, gx = imgrad.sobel(x, border="replicate", normalized=True)
    torch.testing.assert_close(k[:, :, 0], gx, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k[:, :, 1], gy, rtol=1e-6, atol=1e-6)
    # the default border is not kornia's
    assert not torch.allclose(k[:, :, 0], imgrad.sobel(x, normalized=True).gx, atol=1e-3)


def test_kornia_spatial_gradient_diff_is_central_replicate():
    """kornia's mode='diff' normalised equals imgrad central differences with replicate."""
    kornia = pytest.importorskip("kornia")
    x = make_image((1, 2, 5, 6), torch.float64, seed=14)
    k = kornia.filters.spatial_gradient(x, mode="diff", order=1, normalized=True)
    gy, gx = imgrad.central_difference(x, border="replicate", normalized=True)
    torch.testing.assert_close(k[:, :, 0], gx, rtol=0, atol=1e-15)
    torch.testing.assert_close(k[:, :, 1], gy, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- accuracy


def _analytic(n: int, dtype=torch.float64):
    """f = sin(3x)·cos(2y) + x·y² on [0, 1]² sampled n×n, and its autograd derivatives."""
    h = 1.0 / (n - 1)
    t = torch.arange(n, dtype=dtype) * h
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    xx.requires_grad_(True)
    yy.requires_grad_(True)
    f = torch.sin(3 * xx) * torch.cos(2 * yy) + xx * yy**2
    fy, fx = torch.autograd.grad(f.sum(), (yy, xx))
    return f.detach(), fy, fx, h


@pytest.mark.parametrize("name", ["central", "sobel3", "scharr", "prewitt", "sobel5"])
def test_normalized_derivatives_converge_at_order_two(name):
    """Interior error of normalized derivatives drops by ≈4 when h halves (order 2)."""
    errors = []
    for n in (17, 33, 65):
        f, fy, fx, h = _analytic(n)
        gy, gx = imgrad.spatial_gradient(f, **_call(name), normalized=True, spacing=h)
        # the same physical points [1/4, 3/4]² on every grid, away from the borders
        q = slice((n - 1) // 4, 3 * (n - 1) // 4 + 1)
        err = max((gx - fx)[q, q].abs().max().item(), (gy - fy)[q, q].abs().max().item())
        errors.append(err)
    assert errors[-1] < 1e-2
    for coarse, fine in zip(errors, errors[1:], strict=False):
        order = math.log2(coarse / fine)
        assert 1.8 < order < 2.2, (name, errors)


def test_normalized_second_derivatives_converge_at_order_two():
    """Central second differences are order 2 too (gxx, gyy and gxy against autograd)."""
    errors = []
    for n in (17, 33, 65):
        h = 1.0 / (n - 1)
        t = torch.arange(n, dtype=torch.float64) * h
        yy, xx = torch.meshgrid(t, t, indexing="ij")
        f = torch.sin(3 * xx) * torch.cos(2 * yy)
        fxx = -9 * f
        fyy = -4 * f
        fxy = -6 * torch.cos(3 * xx) * torch.sin(2 * yy)
        g = imgrad.second_derivatives(f, "central", normalized=True, spacing=h)
        q = slice((n - 1) // 4, 3 * (n - 1) // 4 + 1)
        errors.append(
            max(
                (g.gxx - fxx)[q, q].abs().max().item(),
                (g.gyy - fyy)[q, q].abs().max().item(),
                (g.gxy - fxy)[q, q].abs().max().item(),
            )
        )
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 1.8 < math.log2(coarse / fine) < 2.2, errors


@pytest.mark.parametrize(("edge_order", "lo", "hi"), [(1, 0.8, 1.2), (2, 1.8, 2.2)])
def test_gradient_edge_order_converges_on_the_boundary(edge_order, lo, hi):
    """imgrad.gradient's one-sided ends are order 1 (edge_order=1) or 2 (edge_order=2)."""
    errors = []
    for n in (33, 65, 129):
        h = 1.0 / (n - 1)
        x = (torch.arange(n, dtype=torch.float64) * h).requires_grad_(True)
        f = torch.sin(3 * x) + x**3
        (df,) = torch.autograd.grad(f.sum(), x)
        (g,) = imgrad.gradient(f.detach(), spacing=h, edge_order=edge_order)
        errors.append(max(abs(g[0] - df[0]).item(), abs(g[-1] - df[-1]).item()))
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert lo < math.log2(coarse / fine) < hi, errors


# --------------------------------------------------------------------------- the engine's sums

#: Every stencil of the table above: the engine's shorter eager sums must cover all of them.
STENCILS = sorted(
    {tuple(t) for d, _, s in TAPS.values() for t in (d, s)} | {tuple(t) for t in SECOND.values()}
)


def _special_values(dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A 2-D array mixing ordinary values with ±0, ±inf, NaN and values near overflow."""
    g = torch.Generator().manual_seed(seed)
    big = torch.finfo(dtype).max
    x = (torch.rand((9, 40), generator=g, dtype=torch.float64) - 0.5) * 8
    pick = torch.randint(0, 12, x.shape, generator=g)
    for code, value in enumerate([0.0, -0.0, math.inf, -math.inf, math.nan, big, -big, big / 3]):
        x[pick == code] = value
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("taps", STENCILS, ids=str)
def test_eager_sums_are_the_plain_product_sum_bit_for_bit(taps, dtype):
    """Eagerly, without autograd, ``correlate`` skips the product of a unit first tap (x1 - x0
    for [-1, 0, 1], ``2 x1 + x0`` then ``+ x2`` for [1, 2, 1]); it must give the bits of the
    plain sum of products taken in tap order, which tensor taps (the modules' buffers) and a
    recording autograd still compute, overflow, infinities and NaN included."""
    from imgrad.engine import correlate
    from imgrad.operators import Stencil

    stencil = Stencil(tuple(float(t) for t in taps), len(taps) // 2)
    x = _special_values(dtype, seed=len(taps))
    for dim in (0, 1):
        short = correlate(x, stencil, dim)
        plain = correlate(x, stencil, dim, torch.tensor(stencil.taps, dtype=dtype))
        recorded = correlate(x.clone().requires_grad_(True), stencil, dim).detach()
        terms = [x.narrow(dim, k, plain.shape[dim]) * t for k, t in enumerate(taps) if t]
        expected = terms[0]
        for term in terms[1:]:  # left to right, in the data's dtype
            expected = expected + term
        for other in (plain, recorded, expected):
            assert torch.equal(short.isnan(), other.isnan())
            keep_inf = {"posinf": math.inf, "neginf": -math.inf}
            assert torch.equal(short.nan_to_num(0.0, **keep_inf), other.nan_to_num(0.0, **keep_inf))


# --------------------------------------------------------------------------- properties

PROPS = settings(max_examples=30, deadline=None)
SYMMETRIC_OPS = ["sobel1", "sobel3", "sobel5", "scharr", "prewitt", "central"]


@PROPS
@given(
    name=st.sampled_from(OPS),
    border=st.sampled_from(BORDERS),
    c=st.integers(-(2**20), 2**20).map(lambda k: k / 64),
    h=st.integers(4, 7),
    w=st.integers(4, 7),
)
def test_constant_image_gives_exactly_zero(name, border, c, h, w):
    """A constant image has derivative exactly 0 (constant border: with value = the constant)."""
    x = torch.full((h, w), c, dtype=torch.float64)
    g = imgrad.spatial_gradient(x, **_call(name), border=border, border_value=c)
    assert torch.equal(g.gx, torch.zeros_like(x)) and torch.equal(g.gy, torch.zeros_like(x))
    if name in SECOND:
        for s in imgrad.second_derivatives(x, **_call(name), border=border, border_value=c):
            assert torch.equal(s, torch.zeros_like(x))


def test_constant_border_sees_an_edge_near_the_border():
    """With border='constant' (0) a constant image is 0 inside and non-zero next to the border."""
    g = imgrad.sobel(torch.full((5, 6), 3.0))
    assert g.gx[:, 1:-1].abs().sum() == 0  # reflect101: zero everywhere
    g = imgrad.sobel(torch.full((5, 6), 3.0), border="constant")
    assert g.gx[1:-1, 1:-1].abs().sum() == 0
    assert g.gx[2, 0] == 12 and g.gx[2, -1] == -12  # 4 * (3 - 0) and 4 * (0 - 3)


@PROPS
@given(
    name=st.sampled_from(OPS),
    border=st.sampled_from(BORDERS),
    a=st.floats(-4, 4),
    b=st.floats(-4, 4),
    seed=st.integers(0, 2**16),
)
def test_linearity(name, border, a, b, seed):
    """D(a·f + b·g) = a·D(f) + b·D(g)."""
    f = make_image((5, 6), torch.float64, seed=seed)
    g = make_image((5, 6), torch.float64, seed=seed + 1)
    kw = {**_call(name), "border": border}
    lhs = imgrad.spatial_gradient(a * f + b * g, **kw)
    df, dg = imgrad.spatial_gradient(f, **kw), imgrad.spatial_gradient(g, **kw)
    for left, u, v in zip(lhs, df, dg, strict=True):
        torch.testing.assert_close(left, a * u + b * v, rtol=1e-10, atol=1e-10)


@PROPS
@given(
    name=st.sampled_from(OPS),
    border=st.sampled_from(["reflect101", "reflect", "replicate"]),
    col=st.integers(6, 9),
    lo=st.integers(-50, 50),
    hi=st.integers(-50, 50),
)
def test_vertical_step_gives_a_line_and_zero_orthogonal_derivative(name, border, col, lo, hi):
    """A vertical step: gx is a line of the step's sign where the stencil spans the edge, 0
    elsewhere; the orthogonal derivative gy is exactly 0."""
    x = torch.full((6, 16), float(lo), dtype=torch.float64)
    x[:, col:] = hi
    gy, gx = imgrad.spatial_gradient(x, **_call(name), border=border)
    assert torch.equal(gy, torch.zeros_like(x))
    d, o, _ = TAPS[name]
    reach = range(col - (len(d) - 1 - o), col + o)  # columns whose stencil spans the edge
    sign = (hi > lo) - (hi < lo)
    for j in range(16):
        column = gx[:, j]
        assert (column == column[0]).all()  # the same on every row: a line along the edge
        expected_sign = sign if j in reach else 0
        assert torch.sign(column[0]).item() == expected_sign, (j, gx[0])


@PROPS
@given(
    name=st.sampled_from(SYMMETRIC_OPS),
    border=st.sampled_from(BORDERS),
    seed=st.integers(0, 2**16),
    k=st.integers(1, 3),
)
def test_rot90_equivariance_of_magnitude(name, border, seed, k):
    """|∇ rot90(f)| = rot90(|∇ f|) for symmetric operators and borders (integer data: exact)."""
    f = make_image((5, 7), torch.int32, seed=seed).double()
    kw = {**_call(name), "border": border, "border_value": 3.0}
    m = imgrad.gradient_magnitude(f, **kw)
    rotated = imgrad.gradient_magnitude(torch.rot90(f, k, (-2, -1)), **kw)
    assert torch.equal(rotated, torch.rot90(m, k, (-2, -1)))


# --------------------------------------------------------------------------- second order exact


@pytest.mark.parametrize("name", list(SECOND))
@pytest.mark.parametrize("border", BORDERS)
def test_second_derivatives_exact_on_quadratics(name, border):
    """Normalized gxx of x²/2 = 1, gxy of x·y = 1, gyy of y²/2 = 1, the others 0 (interior)."""
    n = 11
    t = torch.arange(n, dtype=torch.float64) - 5
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    r = 3  # interior: away from every border's influence
    inner = (slice(r, n - r), slice(r, n - r))
    kw = {**_call(name), "border": border, "normalized": True}
    for f, want in [
        (xx**2 / 2, (0, 0, 1)),
        (xx * yy, (0, 1, 0)),
        (yy**2 / 2, (1, 0, 0)),
    ]:
        got = imgrad.second_derivatives(f, **kw)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g[inner], torch.full_like(g[inner], w)), (name, g[inner])
    lap = imgrad.laplacian(xx**2 + yy**2, 3, border=border, normalized=True)
    assert torch.equal(lap[inner], torch.full_like(lap[inner], 4.0))


@pytest.mark.parametrize("name", ["sobel", "scharr", "central"])
def test_first_derivatives_spacing_divides_each_axis(name):
    """A plane 3·y + 5·x sampled every sy = 2 rows and sx = 0.5 columns has slopes 3/2 and 10."""
    yy, xx = torch.meshgrid(
        torch.arange(7, dtype=torch.float64), torch.arange(8, dtype=torch.float64), indexing="ij"
    )
    g = imgrad.spatial_gradient(3 * yy + 5 * xx, name, normalized=True, spacing=(2.0, 0.5))
    inner = (slice(1, -1), slice(1, -1))
    assert torch.equal(g.gy[inner], torch.full((5, 6), 1.5, dtype=torch.float64))
    assert torch.equal(g.gx[inner], torch.full((5, 6), 10.0, dtype=torch.float64))


def test_second_derivatives_spacing_scales_by_squares():
    """spacing=(sy, sx) divides gyy by sy², gxy by sy·sx, gxx by sx²."""
    f = make_image((6, 6), torch.float64, seed=21)
    base = imgrad.second_derivatives(f, normalized=True)
    scaled = imgrad.second_derivatives(f, normalized=True, spacing=(0.5, 2.0))
    torch.testing.assert_close(scaled.gyy, base.gyy * 4)
    torch.testing.assert_close(scaled.gxy, base.gxy)
    torch.testing.assert_close(scaled.gxx, base.gxx / 4)


# --------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("name", OPS)
def test_gradcheck_every_operator(name):
    """gradcheck and gradgradcheck in float64 through every operator."""
    x = make_image((1, 1, 5, 6), torch.float64, seed=31).requires_grad_(True)

    def fn(t):
        return tuple(imgrad.spatial_gradient(t, **_call(name)))

    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@pytest.mark.parametrize("border", BORDERS)
def test_gradcheck_every_border(border):
    """The border extension is differentiable (index_select / pad)."""
    x = make_image((1, 2, 4, 5), torch.float64, seed=32).requires_grad_(True)
    assert gradcheck(lambda t: tuple(imgrad.sobel(t, border=border, normalized=True)), (x,))


@pytest.mark.parametrize("name", list(SECOND))
def test_gradcheck_second_derivatives(name):
    """gradcheck through second derivatives and the laplacian."""
    x = make_image((1, 1, 5, 5), torch.float64, seed=33).requires_grad_(True)
    assert gradcheck(lambda t: tuple(imgrad.second_derivatives(t, **_call(name))), (x,))
    assert gradcheck(lambda t: imgrad.laplacian(t, 3), (x,))


def test_gradcheck_magnitude():
    """gradcheck/gradgradcheck of the L2 magnitude of a Sobel gradient (non-zero gradients)."""
    x = make_image((1, 1, 5, 6), torch.float64, seed=34).requires_grad_(True)
    assert gradcheck(imgrad.gradient_magnitude, (x,))
    assert gradgradcheck(imgrad.gradient_magnitude, (x,))
    assert gradcheck(lambda t: imgrad.gradient_magnitude(t, norm="squared"), (x,))


# --------------------------------------------------------------------------- dtypes, containers


@pytest.mark.parametrize("name", OPS)
def test_contract_every_operator(name, any_dtype, device):
    """Every operator honours the contract for every accepted dtype."""
    x = make_image((3, 2, 5, 6), any_dtype, device)
    check_contract(lambda t: imgrad.spatial_gradient(t, **_call(name)), x)


def test_contract_second_derivatives_laplacian_and_colour(device):
    """Second derivatives, laplacian, magnitude and the colour modes honour the contract."""
    x = make_image((2, 3, 5, 6), torch.float32, device)
    check_contract(lambda t: imgrad.second_derivatives(t, ksize=5), x)
    check_contract(lambda t: imgrad.laplacian(t, 3), make_image((2, 3, 5, 6), torch.uint8, device))
    check_contract(lambda t: imgrad.gradient_magnitude(t, "scharr"), x)
    check_contract(lambda t: imgrad.sobel(t, color="luminance"), x, channels_out=1)
    check_contract(lambda t: imgrad.sobel(t, color="max"), x, channels_out=1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.int16, torch.int32])
def test_integers_never_wrap(dtype):
    """A bright-to-dark 255/0 step gives -255 * 4, not a wrapped value, in a float dtype."""
    x = torch.zeros(4, 6, dtype=dtype)
    x[:, :3] = 255
    gx = imgrad.sobel(x).gx
    assert gx.dtype == expected_dtype(dtype)
    assert gx[0].tolist() == [0, 0, -1020, -1020, 0, 0]
    assert imgrad.forward_difference(x).gx[0, 2].item() == -255
    # 16-bit extremes: a 65535/0 Sobel 7 response is exact in float32
    if dtype == torch.uint16:
        y = torch.zeros(8, 8, dtype=dtype)
        y[:, 4:] = 65535
        assert imgrad.sobel(y, ksize=7).gx[0, 3].item() == 65535 * 10 * 64


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", OPS)
def test_half_precision_is_float32_rounded_once(name, half):
    """float16/bfloat16 are computed in float32 and rounded once at the end."""
    x = (make_image((1, 2, 6, 7), torch.float32, seed=41) * 300).to(half)
    got = imgrad.spatial_gradient(x, **_call(name))
    want = imgrad.spatial_gradient(x.float(), **_call(name))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == half
        assert torch.equal(g, w.to(half))


def test_half_precision_has_no_intermediate_overflow():
    """Raw Sobel 7 of a 255 step is 163200 (> float16 max): normalised, the result is finite."""
    big = torch.zeros(8, 8, dtype=torch.float16)
    big[:, 4:] = 255
    gx = imgrad.sobel(big, ksize=7, normalized=True).gx
    # raw 255 * 10 * 64 on the columns next to the step, divided by the gain 32 * 64
    assert gx[0, 3].item() == pytest.approx(255 * 10 * 64 / 2048, rel=1e-3)
    assert gx.isfinite().all()
    assert imgrad.sobel(big, ksize=7).gx[0, 3].item() == float("inf")  # the raw value itself


@pytest.mark.parametrize("np_dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_numpy_in_numpy_out(np_dtype):
    """numpy input gives numpy output with the documented dtype, same numbers as tensors."""
    a = (np.arange(30).reshape(5, 6) % 7).astype(np_dtype)
    g = imgrad.sobel(a)
    assert isinstance(g.gx, np.ndarray) and isinstance(g.gy, np.ndarray)
    t = imgrad.sobel(torch.from_numpy(a))
    assert g.gx.dtype == t.gx.numpy().dtype
    assert np.array_equal(g.gx, t.gx.numpy()) and np.array_equal(g.gy, t.gy.numpy())
    # a non-contiguous and a read-only view work as well
    wide = np.repeat(a, 2, axis=1)[:, ::2]
    assert np.array_equal(imgrad.sobel(wide).gx, g.gx)
    ro = np.broadcast_to(a[:1], (5, 6))
    assert imgrad.sobel(ro).gx.shape == (5, 6)


def test_pil_in_tensor_out():
    """PIL images become (C, H, W) tensors: grey L -> 1 channel, RGB -> 3 channels."""
    pil = pytest.importorskip("PIL.Image")
    arr = (np.arange(30).reshape(5, 6) * 8).astype(np.uint8)
    g = imgrad.sobel(pil.fromarray(arr))
    assert isinstance(g.gx, torch.Tensor) and g.gx.shape == (1, 5, 6)
    assert g.gx.dtype == torch.float32
    assert torch.equal(g.gx[0], imgrad.sobel(torch.from_numpy(arr)).gx)
    rgb = np.stack([arr, arr // 2, 255 - arr], axis=-1)
    g = imgrad.sobel(pil.fromarray(rgb))
    assert g.gx.shape == (3, 5, 6)
    assert torch.equal(g.gx[2], -imgrad.sobel(torch.from_numpy(arr)).gx)


def test_pil_modes_give_the_pictures_values():
    """Palette images give the gradients of their colours (not of palette indices), bilevel
    images 0/255, big-endian 16-bit images their values: as the files' reader does."""
    pil = pytest.importorskip("PIL.Image")
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    rgb = pil.fromarray(np.stack([ramp, ramp, ramp], axis=-1))
    palette = rgb.quantize(16)
    assert palette.mode == "P"
    colours = np.array(palette.convert("RGB"))
    assert torch.equal(
        imgrad.sobel(palette).gx, imgrad.sobel(torch.from_numpy(colours).permute(2, 0, 1)).gx
    )
    assert imgrad.sobel(palette).gx[0, 3, 1] == 8 * 16  # 16 per column, Sobel gain 8
    bilevel = pil.fromarray(ramp > 100)
    want = imgrad.sobel(torch.from_numpy((ramp > 100) * np.float32(255))).gx
    assert torch.equal(imgrad.sobel(bilevel).gx[0], want)
    deep = pil.new("I;16B", (6, 4))
    deep.putdata([257 * v for v in range(24)])
    assert torch.equal(
        imgrad.sobel(deep).gx[0],
        torch.full((4, 6), 8.0 * 257).index_fill(1, torch.tensor([0, 5]), 0),
    )


def test_big_endian_arrays_are_read_as_their_values():
    a = np.arange(30, dtype=np.float32).reshape(5, 6)
    for order in (">f4", ">u2", ">i4"):
        np.testing.assert_array_equal(imgrad.sobel(a.astype(order)).gx, imgrad.sobel(a).gx)


def test_numpy_numbers_are_numbers():
    """Options computed with numpy (np.float32, np.int64) work like Python numbers."""
    a = np.arange(30, dtype=np.float32).reshape(5, 6)
    want = imgrad.sobel(a, normalized=True, spacing=2.0).gx
    np.testing.assert_array_equal(imgrad.sobel(a, normalized=True, spacing=np.float32(2)).gx, want)
    spaced = imgrad.sobel(a, normalized=True, spacing=(np.int64(2), np.float64(2))).gx
    np.testing.assert_array_equal(spaced, want)


def test_luminance_and_max_colour_modes():
    """luminance = gradient of BT.601 luma; max = per pixel the channel of largest magnitude."""
    x = make_image((3, 5, 6), torch.float64, seed=42)
    luma = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    g = imgrad.sobel(x, color="luminance")
    torch.testing.assert_close(g.gx[0], imgrad.sobel(luma).gx, rtol=1e-12, atol=1e-12)
    m = imgrad.sobel(x, color="max")
    per = imgrad.sobel(x)
    mag = per.gx**2 + per.gy**2
    idx = mag.argmax(0, keepdim=True)
    assert torch.equal(m.gx, per.gx.gather(0, idx)) and torch.equal(m.gy, per.gy.gather(0, idx))


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int16, torch.int32, torch.float16, torch.float32, torch.float64]
)
@pytest.mark.parametrize("chunk", [None, 50])
def test_luminance_in_place_has_the_formula_bits(dtype, chunk, monkeypatch):
    """Without autograd the luma is computed in place, band of rows by band (``chunk`` 50: two
    rows of the 2 x 11-pixel batch per band, the last band one row); it has the bits of the
    formula ``(r * 0.299 + g * 0.587) + b * 0.114`` on the channels converted to the compute
    dtype (what the autograd path computes), also from a channels-last input, and the input is
    left as it was."""
    from imgrad import _memory
    from imgrad._input import compute_dtype
    from imgrad.gradients import luminance

    if chunk is not None:
        monkeypatch.setattr(_memory, "CHUNK_ELEMENTS", chunk)
    x = make_image((2, 3, 9, 11), torch.float64, seed=3) * 250
    x = (x.round() if not dtype.is_floating_point else x).to(dtype)
    before = x.clone()
    cdtype = compute_dtype(dtype)
    r, g, b = x.to(cdtype).unbind(1)
    want = (r * 0.299 + g * 0.587 + b * 0.114).unsqueeze(1)
    got = luminance(x, cdtype)
    assert got.dtype == cdtype and torch.equal(got, want) and torch.equal(x, before)
    assert torch.equal(luminance(x.contiguous(memory_format=torch.channels_last), cdtype), want)
    if dtype.is_floating_point:  # the autograd path
        recorded = luminance(x.to(cdtype).requires_grad_())
        assert recorded.requires_grad and torch.equal(recorded.detach(), want)
    if dtype != torch.float16:  # (half results are rounded to half at the end)
        luma_gradients = imgrad.sobel(want)
        for got_g, want_g in zip(imgrad.sobel(x, color="luminance"), luma_gradients, strict=True):
            assert torch.equal(got_g, want_g)


def test_luminance_under_torch_func_transforms():
    """torch.func.vmap and torch.func.grad see the functional luma (their wrapped tensors take
    no in-place writes into fresh buffers): the same values as the plain batched call."""
    x = make_image((4, 3, 9, 11), torch.float64, seed=5)
    want = imgrad.sobel(x, color="luminance").gx
    mapped = torch.func.vmap(lambda im: imgrad.sobel(im, color="luminance").gx)(x)
    assert torch.equal(mapped, want)
    grad = torch.func.grad(lambda im: imgrad.sobel(im, color="luminance").gx.sum())(x)
    x_ = x.clone().requires_grad_()
    imgrad.sobel(x_, color="luminance").gx.sum().backward()
    assert torch.equal(grad, x_.grad)
    # and torch.func.grad of the function is the module's backward, bit for bit
    grad = torch.func.grad(lambda im: imgrad.gradient_magnitude(im).sum())(x)
    x_ = x.clone().requires_grad_()
    imgrad.GradientMagnitude()(x_).sum().backward()
    assert torch.equal(grad, x_.grad)


def test_nan_propagates_to_the_stencil_neighbourhood():
    """nan_policy='propagate': a NaN spreads to the 3x3 neighbourhood of Sobel 3 only."""
    x = torch.zeros(7, 7)
    x[3, 3] = float("nan")
    gx = imgrad.sobel(x).gx
    nan = gx.isnan()
    assert nan[2:5, 2:5].sum() == 6  # the centre column has a zero tap and is skipped
    assert nan.sum() == 6


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("image", "kwargs", "exc", "match"),
    [
        (torch.rand(5), {}, ValueError, r"must have shape \(H, W\), \(C, H, W\) or \(N, C, H, W\)"),
        (torch.rand(1, 1, 1, 5, 5), {}, ValueError, r"got \(1, 1, 1, 5, 5\)"),
        (torch.rand(0, 5), {}, ValueError, r"size 0x5 is too small.*at least 1x1"),
        (torch.rand(3, 3), {"ksize": 7}, None, None),  # smaller than the stencil: as OpenCV
        (torch.rand(3, 3), {"ksize": 5}, None, None),
        (torch.zeros(3, 3, dtype=torch.complex64), {}, TypeError, r"complex images"),
        (torch.zeros(3, 3, dtype=torch.bool), {}, TypeError, r"bool images"),
        (np.zeros((3, 3), dtype=bool), {}, TypeError, r"bool images"),
        (np.zeros((3, 3), dtype=np.complex128), {}, TypeError, r"complex images"),
        ([[1.0, 2.0]], {}, TypeError, r"torch.Tensor, numpy.ndarray or PIL.Image.Image"),
        (torch.rand(4, 4), {"border": "mirror"}, ValueError, r"unknown border 'mirror'"),
        (torch.rand(4, 4), {"operator": "roberts"}, ValueError, r"unknown operator 'roberts'"),
        (torch.rand(4, 4), {"color": "rgb"}, ValueError, r"color must be one of.*'rgb'"),
        (torch.rand(4, 4), {"color": "luminance"}, ValueError, r"needs 3 channels"),
        (torch.rand(4, 4), {"ksize": 4}, ValueError, r"ksize must be one of \(1, 3, 5, 7\)"),
        (torch.rand(4, 4), {"ksize": True}, ValueError, r"ksize must be one of"),
        (torch.rand(4, 4), {"operator": "scharr", "ksize": 5}, ValueError, r"sobel only"),
        (torch.rand(4, 4), {"spacing": 2.0}, ValueError, r"pass normalized=True"),
        (torch.rand(4, 4), {"spacing": 0, "normalized": True}, ValueError, r"positive"),
        (torch.rand(4, 4), {"spacing": (1, 2, 3), "normalized": True}, ValueError, r"pair"),
        (torch.rand(4, 4), {"normalized": 1}, TypeError, r"normalized must be True or False"),
        (torch.rand(4, 4), {"nan_policy": "omit"}, ValueError, r"nan_policy must be"),
        (torch.rand(4, 4), {"border": 0}, TypeError, r"border must be a str"),
    ],
)
def test_errors(image, kwargs, exc, match):
    """Bad input or options raise with a message that quotes the problem."""
    if exc is None:
        assert imgrad.sobel(image, **kwargs).gx.shape == (3, 3)
        return
    kwargs = {"operator": "sobel", **kwargs}
    with pytest.raises(exc, match=match):
        imgrad.spatial_gradient(image, **kwargs)


def test_nan_policy_raise():
    """nan_policy='raise' counts the NaNs; without NaN it computes as usual."""
    x = torch.zeros(4, 4)
    x[1, 1] = x[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"contains 2 NaN value\(s\)"):
        imgrad.sobel(x, nan_policy="raise")
    assert torch.equal(imgrad.sobel(torch.ones(4, 4), nan_policy="raise").gx, torch.zeros(4, 4))


def test_second_order_errors():
    """Operators without second-difference taps and color='max' are rejected."""
    with pytest.raises(ValueError, match=r"prewitt has no second-derivative stencil"):
        imgrad.second_derivatives(torch.rand(4, 4), "prewitt")
    with pytest.raises(ValueError, match=r"color='max' is defined for first derivatives only"):
        imgrad.second_derivatives(torch.rand(3, 4, 4), color="max")
    with pytest.raises(ValueError, match=r"ksize must be one of"):
        imgrad.laplacian(torch.rand(4, 4), 9)


# --------------------------------------------------------------------------- border extension


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.uint8])
def test_pad_and_extend_equal_numpy_pad_for_every_halo(border, dtype):
    """The engine's border extension (F.pad's arithmetic where it applies, the index gather
    elsewhere: halos as long as the axis or longer, integer data) is numpy.pad's, per axis and on
    both last axes at once, for batches of any rank."""
    from imgrad.engine import extend, pad

    img = make_image((2, 3, 4, 5), torch.float64, seed=9).numpy() * 100
    x = torch.from_numpy(img).to(dtype)
    kwargs = {"constant_values": 7} if border == "constant" else {}
    mode = NP_MODE[border]
    for halo in range(1, 8):
        for axis in (-2, -1):
            widths = [(0, 0)] * 4
            widths[axis] = (halo, halo + 1)
            want = np.pad(x.numpy(), widths, mode=mode, **kwargs)
            assert np.array_equal(pad(x, axis, halo, halo + 1, border, 7).numpy(), want)
        want = np.pad(x.numpy(), [(0, 0), (0, 0), (halo, halo), (halo, halo)], mode, **kwargs)
        assert np.array_equal(extend(x, halo, border, 7).numpy(), want)
        assert np.array_equal(extend(x[0, 0], halo, border, 7).numpy(), want[0, 0])
