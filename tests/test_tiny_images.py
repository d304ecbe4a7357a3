"""Images smaller than the stencil (1x1, 1x7, 7x1, ...) work and equal OpenCV.

A side shorter than the stencil's radius is extended by the border rule applied again and again
(a one-pixel side reflects onto itself), exactly as OpenCV's ``borderInterpolate`` does: every
expected value here comes from cv2 itself (``Sobel``, ``Scharr``, ``Laplacian``, ``Canny``), or,
for the ``circular`` border that OpenCV lacks, from ``numpy.pad(mode="wrap")`` and a direct 2-D
correlation with the taps of ``cv2.getDerivKernels``. Integer data are compared exactly, float32
data as ``tests/test_operators.py`` compares them.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from imgrad_cli.main import cli

import imgrad
from imgrad import batch, fast
from imgrad import io as imgrad_io
from imgrad.canny import canny
from imgrad.tiled import process_huge

cv2 = pytest.importorskip("cv2")

SIZES = [(1, 1), (1, 2), (2, 1), (1, 7), (7, 1), (2, 2), (3, 3), (2, 9), (9, 2)]
IDS = [f"{h}x{w}" for h, w in SIZES]
CV_BORDERS = {
    "reflect101": cv2.BORDER_REFLECT_101,
    "reflect": cv2.BORDER_REFLECT,
    "replicate": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}
DTYPES = [np.uint8, np.int16, np.float32]
#: Canny thresholds scale with the Sobel gain (sum |derivative| x sum smoothing): 8, 96, 1280.
CANNY_GAIN = {3: 1, 5: 12, 7: 160}


def tiny(shape: tuple[int, ...], np_dtype, seed: int = 0) -> np.ndarray:
    """Random data as the parity tests of ``test_operators.py`` make it."""
    rng = np.random.default_rng([seed, *shape])
    if np_dtype == np.uint8:
        return rng.integers(0, 256, shape).astype(np.uint8)
    if np_dtype == np.int16:
        return rng.integers(-3000, 3000, shape).astype(np.int16)
    return rng.random(shape).astype(np.float32)


def gain(dx: int, dy: int, ksize: int) -> float:
    """Sum of the absolute taps of OpenCV's 2-D kernel (ksize -1: Scharr)."""
    kx, ky = cv2.getDerivKernels(dx, dy, ksize)
    return float(np.abs(kx).sum() * np.abs(ky).sum())


def assert_cv(got: np.ndarray, want: np.ndarray, np_dtype, scale: float = 0.0) -> None:
    """Exact for integer data; float32 to its rounding, relative to the largest response or to
    ``scale``, the largest sum of absolute terms (``max |image| * gain``): on a flat image the
    exact answer is 0 and float32 sums of the taps leave rounding of the terms' size."""
    assert isinstance(got, np.ndarray) and got.dtype == np.float32, type(got)
    assert got.shape == want.shape, (got.shape, want.shape)
    if np_dtype == np.float32:
        atol = 1e-6 * max(float(np.abs(want).max(initial=0.0)), scale)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)
    else:
        assert np.array_equal(got, want), (got, want)


def cv_sobel(img: np.ndarray, dx: int, dy: int, ksize: int, border: str) -> np.ndarray:
    return cv2.Sobel(img, cv2.CV_32F, dx, dy, ksize=ksize, borderType=CV_BORDERS[border])


# --------------------------------------------------------------------------- OpenCV borders


@pytest.mark.parametrize("border", list(CV_BORDERS))
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_sobel_second_derivatives_and_laplacian_equal_cv2(size, border):
    """cv2.Sobel (dx/dy 1 and 2, and 1/1) and cv2.Laplacian, ksize 1/3/5/7, every dtype."""
    for np_dtype, ksize in itertools.product(DTYPES, (1, 3, 5, 7)):
        img = tiny(size, np_dtype)
        top = float(np.abs(img).max())
        gy, gx = imgrad.sobel(img, ksize=ksize, border=border)
        for got, dx, dy in ((gx, 1, 0), (gy, 0, 1)):
            assert_cv(got, cv_sobel(img, dx, dy, ksize, border), np_dtype, top * gain(1, 0, ksize))
        gyy, gxy, gxx = imgrad.second_derivatives(img, ksize=ksize, border=border)
        for got, dx, dy in ((gxx, 2, 0), (gyy, 0, 2), (gxy, 1, 1)):
            scale = top * gain(dx, dy, ksize)
            assert_cv(got, cv_sobel(img, dx, dy, ksize, border), np_dtype, scale)
        lap = imgrad.laplacian(img, ksize, border=border)
        want = cv2.Laplacian(img, cv2.CV_32F, ksize=ksize, borderType=CV_BORDERS[border])
        assert_cv(lap, want, np_dtype, 2 * top * gain(2, 0, ksize))


@pytest.mark.parametrize("border", list(CV_BORDERS))
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_scharr_equals_cv2(size, border):
    for np_dtype in DTYPES:
        img = tiny(size, np_dtype, seed=1)
        gy, gx = imgrad.scharr(img, border=border)
        bt, scale = CV_BORDERS[border], float(np.abs(img).max()) * gain(1, 0, -1)
        assert_cv(gx, cv2.Scharr(img, cv2.CV_32F, 1, 0, borderType=bt), np_dtype, scale)
        assert_cv(gy, cv2.Scharr(img, cv2.CV_32F, 0, 1, borderType=bt), np_dtype, scale)


def test_one_row_with_reflect101_is_flat_across_it():
    """What cv2 gives for a (1, 7) uint8 with its default border: the row reflects onto itself,
    so d/dy is 0 and d/dx is the smoothing gain (1, 4, 16, 64) times the 1-D derivative."""
    row = np.array([[0, 10, 50, 200, 30, 255, 7]], np.uint8)
    for ksize in (3, 5, 7):
        gy, gx = imgrad.sobel(row, ksize=ksize)
        assert not gy.any() and not cv_sobel(row, 0, 1, ksize, "reflect101").any()
        assert np.array_equal(gx, cv_sobel(row, 1, 0, ksize, "reflect101"))
    assert imgrad.sobel(row).gx.tolist() == [[0, 200, 760, -80, 220, -92, 0]]  # 4 (f[j+1] - f[j-1])
    one = np.array([[9]], np.uint8)
    assert imgrad.sobel(one, ksize=7).gx.tolist() == [[0]]
    assert imgrad.sobel(one, border="constant").gx.tolist() == [[0]]  # -9 * 4 + 9 * 4
    assert imgrad.laplacian(one, border="constant").tolist() == [[-36]]
    assert cv2.Laplacian(one, cv2.CV_32F, borderType=cv2.BORDER_CONSTANT).tolist() == [[-36]]


@pytest.mark.parametrize("border", list(CV_BORDERS))
@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_magnitude_and_orientation_equal_cv2(size, border, monkeypatch):
    """gradient_magnitude (with the fused path allowed even eagerly) and orientation, from cv2's
    derivatives: the L2 norm exactly numpy's correctly rounded sqrt (cv2.magnitude within a few
    ulps of it), L1 and squared exact; orientation within cv2.phase's own error (0.0096°)."""
    monkeypatch.setattr(fast, "EAGER_MIN_PIXELS", 0)
    monkeypatch.setenv("IMGRAD_COMPILE", "0")
    for np_dtype, ksize in itertools.product(DTYPES, (1, 3, 5, 7)):
        img = tiny(size, np_dtype, seed=2)
        cx, cy = cv_sobel(img, 1, 0, ksize, border), cv_sobel(img, 0, 1, ksize, border)
        scale = 2 * float(np.abs(img).max()) * gain(1, 0, ksize)
        mag = imgrad.gradient_magnitude(img, ksize=ksize, border=border)
        assert_cv(mag, np.sqrt(cx * cx + cy * cy), np_dtype, scale)
        if np_dtype != np.float32:
            # cv2.magnitude is not correctly rounded (2 ulps off seen on int16 data)
            np.testing.assert_allclose(mag, cv2.magnitude(cx, cy), rtol=5e-7, atol=0)
        l1 = imgrad.gradient_magnitude(img, ksize=ksize, border=border, norm="l1")
        assert_cv(l1, np.abs(cx) + np.abs(cy), np_dtype, scale)
        sq = imgrad.gradient_magnitude(img, ksize=ksize, border=border, norm="squared")
        assert_cv(sq, cx * cx + cy * cy, np_dtype, scale * scale)
        if np_dtype == np.float32:
            continue  # an angle of nearly-zero float gradients is not a parity check
        angle = imgrad.orientation(imgrad.sobel(img, ksize=ksize, border=border), degrees=True)
        want = cv2.phase(cx, cy, angleInDegrees=True)
        wrapped = (angle.astype(np.float64) - want + 180) % 360 - 180  # cv2 may say 360 for 0
        assert np.abs(wrapped).max(initial=0.0) <= 0.0096, (angle, want)
        assert ((angle >= 0) & (angle < 360)).all()


@pytest.mark.parametrize("ksize", [1, 3, 5, 7])
def test_fast_path_below_and_from_its_smallest_size(ksize, monkeypatch):
    """The fused path needs 2r + 2 pixels a side: one pixel less takes the reference path, and
    both sides of that limit (and a batch of tiny images) equal cv2."""
    monkeypatch.setattr(fast, "EAGER_MIN_PIXELS", 0)
    monkeypatch.setenv("IMGRAD_COMPILE", "0")
    calls = []
    real = fast.gradient_magnitude
    monkeypatch.setattr(fast, "gradient_magnitude", lambda *a: calls.append(1) or real(*a))
    r = max(1, ksize // 2)
    for side, fused in ((2 * r + 1, False), (2 * r + 2, True), (1, False)):
        for shape in ((side, 23), (23, side)):
            calls.clear()
            img = tiny(shape, np.uint8, seed=3)
            for border in CV_BORDERS:
                cx, cy = cv_sobel(img, 1, 0, ksize, border), cv_sobel(img, 0, 1, ksize, border)
                mag = imgrad.gradient_magnitude(img, ksize=ksize, border=border)
                assert np.array_equal(mag, np.sqrt(cx * cx + cy * cy)), (shape, border)
            assert bool(calls) == fused, shape
    stack = np.stack([tiny((1, 7), np.uint8, seed=s) for s in range(4)])[:, None]  # (4, 1, 1, 7)
    mags = imgrad.gradient_magnitude(torch.from_numpy(stack), ksize=ksize)
    for i in range(4):
        cx, cy = (
            cv_sobel(stack[i, 0], 1, 0, ksize, "reflect101"),
            cv_sobel(stack[i, 0], 0, 1, ksize, "reflect101"),
        )
        assert np.array_equal(mags[i, 0].numpy(), np.sqrt(cx * cx + cy * cy))


# --------------------------------------------------------------------------- Canny


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_canny_equals_cv2(size):
    """cv2.Canny, apertureSize 3/5/7, L2gradient both ways, grey and colour, random and
    black-and-white data; float32 holding the same integers too (ksize 3 and 5)."""
    found = 0
    for seed in range(4):
        grey = tiny(size, np.uint8, seed=seed)
        if seed % 2:
            grey = np.where(grey > 127, 255, 0).astype(np.uint8)
        colour = tiny((*size, 3), np.uint8, seed=seed + 10)
        for ksize, l2, (low, high) in itertools.product(
            (3, 5, 7), (False, True), ((100, 200), (40, 120), (200, 100))
        ):
            low, high = low * CANNY_GAIN[ksize], high * CANNY_GAIN[ksize]
            options = {"ksize": ksize, "l2gradient": l2}
            want = cv2.Canny(grey, low, high, apertureSize=ksize, L2gradient=l2) > 0
            found += int(want.sum())
            assert np.array_equal(canny(grey, low, high, **options), want), (ksize, l2)
            if ksize != 7:  # Sobel 7 on floats does not round to 1/16 as OpenCV's uint8 does
                got = canny(grey.astype(np.float32), low, high, **options)
                assert np.array_equal(got, want), (ksize, l2, "float32")
            want = cv2.Canny(colour, low, high, apertureSize=ksize, L2gradient=l2) > 0
            chw = np.ascontiguousarray(np.moveaxis(colour, -1, 0))
            assert np.array_equal(canny(chw, low, high, **options)[0], want), (ksize, l2)
    if size != (1, 1):  # a single pixel has no gradient under the replicate border
        assert found > 0


def test_canny_details_and_blur_on_tiny_images():
    """The other Canny options work too; a blur larger than the image names the limit."""
    row = np.array([[0, 0, 0, 255, 255, 255, 255]], np.uint8)
    result = canny(row, 100, 200, return_details=True)
    assert result.edges.tolist() == (cv2.Canny(row, 100, 200) > 0).tolist()
    assert result.magnitude.shape == result.orientation.shape == (1, 7)
    assert canny(row.T.copy(), 0.2, 0.5, thresholds="relative").shape == (7, 1)
    assert canny(row, sigma=0.5).shape == (1, 7)
    with pytest.raises(ValueError, match=r"more than the image \(1x1\); use sigma <= 0.333333"):
        canny(np.zeros((1, 1), np.uint8), sigma=1.0)


# --------------------------------------------------------------------------- circular


def _wrap_correlate(img: np.ndarray, ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """``sum ky[a] kx[b] f[i + a - oy, j + b - ox]`` over ``numpy.pad(mode="wrap")``, float64."""
    oy, ox = len(ky) // 2, len(kx) // 2
    h, w = img.shape
    padded = np.pad(img.astype(np.float64), ((oy, oy), (ox, ox)), mode="wrap")
    out = np.zeros((h, w))
    for a, b in itertools.product(range(len(ky)), range(len(kx))):
        out += ky[a] * kx[b] * padded[a : a + h, b : b + w]
    return out


def _kernels(dx: int, dy: int, ksize: int) -> tuple[np.ndarray, np.ndarray]:
    """(along y, along x) taps, OpenCV's own (ksize -1 is Scharr)."""
    kx, ky = cv2.getDerivKernels(dx, dy, ksize)
    return ky.ravel().astype(np.float64), kx.ravel().astype(np.float64)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_circular_border_equals_wrap_padding(size):
    """No OpenCV border wraps round: numpy's ``wrap`` padding (which repeats a short side as
    often as needed) and a direct correlation, for derivatives, Laplacian and magnitude."""
    for np_dtype in (np.uint8, np.float32):
        img = tiny(size, np_dtype, seed=4)
        scale = 2 * float(np.abs(img).max()) * gain(2, 0, 7)  # the largest of them all

        def check(got, want, np_dtype=np_dtype, scale=scale):
            assert_cv(got, want.astype(np.float32), np_dtype, scale)

        for ksize in (1, 3, 5, 7):
            gy, gx = imgrad.sobel(img, ksize=ksize, border="circular")
            want_x = _wrap_correlate(img, *_kernels(1, 0, ksize))
            want_y = _wrap_correlate(img, *_kernels(0, 1, ksize))
            check(gx, want_x)
            check(gy, want_y)
            mag = imgrad.gradient_magnitude(img, ksize=ksize, border="circular")
            check(mag, np.sqrt(want_x**2 + want_y**2))
            gyy, gxy, gxx = imgrad.second_derivatives(img, ksize=ksize, border="circular")
            want_xx = _wrap_correlate(img, *_kernels(2, 0, ksize))
            want_yy = _wrap_correlate(img, *_kernels(0, 2, ksize))
            check(gxx, want_xx)
            check(gyy, want_yy)
            check(gxy, _wrap_correlate(img, *_kernels(1, 1, ksize)))
            check(imgrad.laplacian(img, ksize, border="circular"), want_xx + want_yy)
        gy, gx = imgrad.scharr(img, border="circular")
        check(gx, _wrap_correlate(img, *_kernels(1, 0, -1)))
        check(gy, _wrap_correlate(img, *_kernels(0, 1, -1)))


def test_wrap_reference_agrees_with_cv2_where_cv2_has_the_border():
    """The test's own correlation, with ``reflect`` padding, is cv2's BORDER_REFLECT_101."""
    for size in SIZES:
        img = tiny(size, np.uint8, seed=5)
        ky, kx = _kernels(1, 0, 5)
        oy, ox = len(ky) // 2, len(kx) // 2
        padded = np.pad(img.astype(np.float64), ((oy, oy), (ox, ox)), mode="reflect")
        h, w = size
        want = sum(
            ky[a] * kx[b] * padded[a : a + h, b : b + w]
            for a, b in itertools.product(range(len(ky)), range(len(kx)))
        )
        assert np.array_equal(want, cv_sobel(img, 1, 0, 5, "reflect101")), size


# --------------------------------------------------------------------------- modules, tiles


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1), (2, 9)], ids=str)
def test_modules_autograd_and_tiles_on_tiny_images(size):
    """Modules, autograd (gradcheck in float64) and tiled processing accept tiny images and
    give the functions' (so cv2's) numbers."""
    img = tiny(size, np.uint8, seed=6)
    x = torch.from_numpy(img)[None, None]
    for ksize, border in itertools.product((3, 7), ("reflect101", "replicate", "circular")):
        g = imgrad.Sobel(ksize, border=border)(x)
        want = imgrad.sobel(img, ksize=ksize, border=border)
        assert np.array_equal(g.gx[0, 0].numpy(), want.gx)
        assert np.array_equal(g.gy[0, 0].numpy(), want.gy)
        lap = imgrad.Laplacian(ksize, border=border)(x)[0, 0].numpy()
        assert np.array_equal(lap, imgrad.laplacian(img, ksize, border=border))
        for stage in ("gx", "magnitude", "laplacian", "orientation"):
            tiled = process_huge(img, stage=stage, ksize=ksize, border=border, tile=4)
            whole = {
                "gx": want.gx,
                "magnitude": imgrad.gradient_magnitude(img, ksize=ksize, border=border),
                "laplacian": imgrad.laplacian(img, ksize, border=border),
                "orientation": imgrad.orientation(want),
            }[stage]
            assert np.array_equal(np.asarray(tiled), whole), (stage, ksize, border)
        if border != "circular":
            assert np.array_equal(want.gx, cv_sobel(img, 1, 0, ksize, border))
    leaf = torch.from_numpy(img).double().requires_grad_()
    for border in ("reflect101", "reflect", "replicate", "constant", "circular"):

        def fn(t, border=border):
            return imgrad.sobel(t, ksize=5, border=border).gx

        assert torch.autograd.gradcheck(fn, (leaf,))
    with pytest.raises(ValueError, match=r"size 0x7 is too small"):
        imgrad.sobel(np.zeros((0, 7), np.uint8))


# --------------------------------------------------------------------------- CLI


def _run(args: list) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="imgrad")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1)], ids=str)
def test_cli_on_tiny_images(shape, tmp_path: Path):
    """``imgrad sobel tiny.png out.png`` succeeds and writes what the API computes; the float
    results (``.npy``) of sobel, laplacian and canny equal cv2."""
    grey = np.array([0, 10, 50, 200, 30, 255, 7], np.uint8)[: math.prod(shape)].reshape(shape)
    source = tmp_path / "tiny.png"
    imgrad_io.write_image(source, grey[None])
    image = imgrad_io.read_image(source).copy()
    assert np.array_equal(image[0], grey)

    _run(["sobel", source, tmp_path / "out.png"])
    written = imgrad_io.read_image(tmp_path / "out.png")
    assert written.shape == (1, *shape)
    assert np.array_equal(written, batch.Recipe().apply(image[None])[0])

    _run(["sobel", source, tmp_path / "out.npy"])
    cx, cy = cv_sobel(grey, 1, 0, 3, "reflect101"), cv_sobel(grey, 0, 1, 3, "reflect101")
    assert np.array_equal(np.load(tmp_path / "out.npy")[0], np.sqrt(cx * cx + cy * cy))
    assert np.array_equal(np.load(tmp_path / "out.npy"), imgrad.gradient_magnitude(image))

    _run(["laplacian", source, tmp_path / "lap.npy", "--ksize", "3"])
    want = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    assert np.array_equal(np.load(tmp_path / "lap.npy")[0], want)

    _run(["canny", source, tmp_path / "edges.png", "--low", "100", "--high", "200"])
    edges = imgrad_io.read_image(tmp_path / "edges.png")[0]
    assert np.array_equal(edges, cv2.Canny(grey, 100, 200))
