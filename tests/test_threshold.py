"""Threshold stage: strict thresholds, Otsu, hysteresis (4/8-connected), NMS sectors and ties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import spiral
from PIL import Image

import imgrad
from imgrad.thresholds import (
    hysteresis_threshold,
    non_maximum_suppression,
    nonzero_flat,
    otsu_threshold,
    threshold,
    threshold_otsu,
    threshold_relative,
)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
PHOTOS = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
assert len(PHOTOS) >= 9, f"the sample photographs are missing from {SAMPLES}"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gray(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


# --------------------------------------------------------------------------- simple thresholds


def test_threshold_is_strict():
    """A pixel equal to the threshold is not above it."""
    x = torch.tensor([[1.0, 2.0, 3.0]])
    assert threshold(x, 2.0).tolist() == [[False, False, True]]


def test_threshold_integer_with_fractional_value():
    """uint8 data against fractions: x > t, so 3 is above 2.4 ... 2.999 and 2 is not, 2 is
    above 1.6 (no rounding of the threshold, which would take 2.6 to 3 and 1.6 to 2)."""
    x = np.array([[2, 3]], dtype=np.uint8)
    out = threshold(x, 2.5)
    assert isinstance(out, np.ndarray) and out.tolist() == [[False, True]]
    for value in (2.4, 2.6, 2.999):
        assert threshold(x, value).tolist() == [[False, True]], value
    assert threshold(x, 1.6).tolist() == [[True, True]]
    assert threshold(x, -0.5).tolist() == [[True, True]]


def test_threshold_per_image_values():
    """One threshold per sample of the batch."""
    x = torch.arange(4.0).reshape(2, 1, 1, 2)
    assert threshold(x, torch.tensor([0.0, 2.0])).reshape(2, 2).tolist() == [
        [False, True],
        [False, True],
    ]


def test_threshold_relative_per_image_max():
    """ratio * max is taken per image; equality is not above."""
    x = torch.tensor([[[[1.0, 2.0, 4.0]]], [[[10.0, 20.0, 40.0]]]])
    out = threshold_relative(x, 0.5)
    assert out.reshape(2, 3).tolist() == [[False, False, True], [False, False, True]]


def test_threshold_bad_inputs():
    with pytest.raises(TypeError, match="value must be a real number, got str"):
        threshold(torch.zeros(3, 3), "1")
    with pytest.raises(TypeError, match="must be an integer or floating image"):
        threshold(torch.zeros(3, 3, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError, match=r"shape \(H, W\), \(C, H, W\) or \(N, C, H, W\)"):
        threshold(torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="ratio must not be NaN"):
        threshold_relative(torch.zeros(3, 3), float("nan"))
    with pytest.raises(ValueError, match=r"x is empty: shape \(2, 1, 0, 4\)"):
        threshold_relative(torch.zeros(2, 1, 0, 4), 0.5)
    with pytest.raises(ValueError, match=r"x is empty: shape \(0, 1, 4, 4\)"):
        otsu_threshold(torch.zeros(0, 1, 4, 4))


# --------------------------------------------------------------------------- Otsu


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.split("/")[-1])
def test_otsu_uint8_equals_cv2_and_skimage(path):
    cv2 = pytest.importorskip("cv2")
    filters = pytest.importorskip("skimage.filters")
    img = gray(path)
    expected, _ = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert int(otsu_threshold(img)[0]) == int(expected) == int(filters.threshold_otsu(img))
    mask = threshold_otsu(img)
    assert np.array_equal(mask, img > expected)


def test_otsu_uint16_equals_cv2_and_skimage():
    cv2 = pytest.importorskip("cv2")
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(10000, 2000, 5000), rng.normal(40000, 3000, 5000)])
    x = data.clip(0, 65535).astype(np.uint16).reshape(100, 100)
    expected, _ = cv2.threshold(x, 0, 65535, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert int(otsu_threshold(x)[0]) == int(expected) == int(filters.threshold_otsu(x))
    photo = gray(PHOTOS[0]).astype(np.uint16) * 257
    expected, _ = cv2.threshold(photo, 0, 65535, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert int(otsu_threshold(photo)[0]) == int(expected)


def _exact_otsu(x: np.ndarray) -> int:
    """Otsu's threshold in exact integer arithmetic: the first k maximising the between-class
    variance, ``(S·c - N·s)² / (c·(N - c))`` with c, s the count and sum of values <= k."""
    counts = np.bincount(x.ravel()).tolist()
    total, total_sum = sum(counts), sum(i * n for i, n in enumerate(counts))
    best, best_k, c, s = (0, 1), None, 0, 0
    for k, n in enumerate(counts):
        c, s = c + n, s + k * n
        if 0 < c < total:
            num, den = (total_sum * c - total * s) ** 2, c * (total - c)
            if best_k is None or num * best[1] > best[0] * den:
                best, best_k = (num, den), k
    return best_k


@pytest.mark.parametrize("path", PHOTOS[:3], ids=lambda p: p.split("/")[-1])
def test_otsu_uint16_photographs_are_exact(path):
    """On 16-bit photographs (every level used) the threshold is the exact one, as OpenCV's;
    scikit-image's float arithmetic lands a few levels away on some of these."""
    cv2 = pytest.importorskip("cv2")
    noise = np.random.default_rng(0).integers(0, 257, gray(path).shape)
    x = (gray(path).astype(np.int64) * 257 + noise).astype(np.uint16)
    expected, _ = cv2.threshold(x, 0, 65535, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert int(otsu_threshold(x)[0]) == _exact_otsu(x) == int(expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_otsu_float_equals_skimage(dtype):
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.2, 0.05, 4000), rng.normal(0.7, 0.1, 6000)])
    x = x.astype(dtype).reshape(100, 100)
    assert float(otsu_threshold(x)[0]) == filters.threshold_otsu(x)
    photo = (gray(PHOTOS[1]) / 255).astype(dtype)
    assert float(otsu_threshold(photo, bins=64)[0]) == filters.threshold_otsu(photo, nbins=64)


def test_otsu_batch_is_per_image_and_constant_image():
    """Each sample gets its own threshold; a constant image returns its value."""
    a, b = gray(PHOTOS[1]), gray(PHOTOS[2])
    batch = torch.from_numpy(np.stack([a, b]))[:, None]
    expected = [int(otsu_threshold(a)[0]), int(otsu_threshold(b)[0])]
    assert otsu_threshold(batch).tolist() == expected
    assert otsu_threshold(torch.full((4, 4), 7, dtype=torch.uint8)).tolist() == [7]
    assert not threshold_otsu(torch.full((4, 4), 0.5)).any()


def test_otsu_bad_inputs():
    with pytest.raises(ValueError, match="bins applies to floating data only"):
        otsu_threshold(torch.zeros(4, 4, dtype=torch.uint8), bins=16)
    with pytest.raises(ValueError, match="bins must be an integer >= 2, got 1"):
        otsu_threshold(torch.zeros(4, 4), bins=1)
    with pytest.raises(ValueError, match="x contains NaN"):
        otsu_threshold(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="x contains infinite values"):
        otsu_threshold(torch.tensor([[0.0, float("inf")]]))


def test_otsu_bins_from_numpy():
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(otsu_threshold(x, bins=np.int64(32)), otsu_threshold(x, bins=32))


def luma(path: str) -> np.ndarray:
    """A photograph as float64 luma in [0, 1], as ``skimage.color.rgb2gray`` gives it."""
    color = pytest.importorskip("skimage.color")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return color.rgb2gray(rgb)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.split("/")[-1])
def test_otsu_float_photographs_are_skimage_bit_for_bit(path, dtype):
    """scikit-image's value exactly, for every bin count: the float64 result holds its float16,
    float32 or float64 bin centre. (It was the centre in float64 arithmetic, 1 ulp off on
    chelsea and coffee in float64, and one bin off in float16 on camera and coffee.)"""
    filters = pytest.importorskip("skimage.filters")
    x = luma(path).astype(dtype)
    for bins in (256, 2, 33, 1000):
        try:
            expected = filters.threshold_otsu(x, nbins=bins)
        except ValueError:  # float16 has too few values in [min, max] for 1000 bins
            assert (dtype, bins) == (np.float16, 1000)
            with pytest.raises(ValueError, match="too many bins"):
                otsu_threshold(x, bins=bins)
            continue
        assert type(expected) is np.dtype(dtype).type  # skimage answers in the image's dtype
        got = otsu_threshold(x, bins=bins)
        assert got.dtype == torch.float64 and got.shape == (1,)
        assert float(got[0]) == float(expected), bins
        assert np.array_equal(threshold_otsu(x, bins=bins), x > expected)


def test_otsu_float_examples_from_the_defect():
    """The numbers: chelsea's float64 luma is 0.4446629488357843 (not ...433), coffee's float32
    luma 0.3927498459815979 (a float32, not 0.39274987056478494), camera in float16 0.400390625
    (the bin below 0.404296875)."""
    chelsea, coffee, camera = (
        luma(str(SAMPLES / f"{n}.png")) for n in ("chelsea", "coffee", "camera")
    )
    assert float(otsu_threshold(chelsea)[0]) == 0.4446629488357843
    assert float(otsu_threshold(coffee.astype(np.float32))[0]) == 0.3927498459815979
    assert float(otsu_threshold(camera.astype(np.float16))[0]) == 0.400390625


def test_otsu_values_on_bin_edges_go_to_the_bin_above():
    """numpy.histogram puts a value that lies on an edge in the bin above it; ``floor`` of the
    scaled value put -0.4 (edge 1 of 5 over [-1, 2]) in bin 0 and answered -0.7."""
    filters = pytest.importorskip("skimage.filters")
    x = np.array([[-1.0, -1.0, -0.4, 2.0]])
    assert float(otsu_threshold(x, bins=5)[0]) == -0.10000000000000003
    assert filters.threshold_otsu(x, nbins=5) == -0.10000000000000003
    y = np.array([[0.1, 0.1, 0.22, 0.7]])  # bin 0's centre is (0.1 + 0.22) / 2, not 0.1 + 0.06
    assert float(otsu_threshold(y, bins=5)[0]) == 0.27999999999999997
    for dtype in (np.float16, np.float32, np.float64):
        for lo, hi, bins in ((0.0, 1.0, 7), (0.1, 0.7, 5), (-1.0, 2.0, 10), (1.0, 1.7, 256)):
            edges = np.linspace(dtype(lo), dtype(hi), bins + 1, dtype=dtype)
            z = np.concatenate([edges, edges[: bins // 2]]).reshape(1, -1)
            assert float(otsu_threshold(z, bins=bins)[0]) == filters.threshold_otsu(z, nbins=bins)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_histogram_index_equals_numpy_histogram(dtype):
    """The shared binning (Otsu here and in process_huge) counts as numpy.histogram does."""
    from imgrad.thresholds import _batched_histogram, histogram_edges, histogram_index

    rng = np.random.default_rng(5)
    np_dtype = {torch.float16: np.float16, torch.float32: np.float32}.get(dtype, np.float64)
    for bins in (2, 7, 100, 256):
        lo, hi = np_dtype(rng.uniform(-3, 0)), np_dtype(rng.uniform(0.5, 3))
        grid = np.linspace(lo, hi, bins + 1, dtype=np_dtype)  # every edge, and values between
        data = np.concatenate([grid, rng.uniform(lo, hi, 3000).astype(np_dtype)])
        data = np.clip(data, lo, hi)
        t = torch.from_numpy(data)[None]
        edges = histogram_edges(t.amin(1), t.amax(1), bins)
        assert np.array_equal(edges[0].numpy(), grid)
        counts = _batched_histogram(histogram_index(t, edges), bins)[0].numpy()
        expected, _ = np.histogram(data, bins)
        assert np.array_equal(counts, expected), bins


def test_otsu_random_float_images_equal_skimage():
    """Random images of every kind (uniform, bimodal, few levels, offset), dtypes and bins."""
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(2)
    for i in range(40):
        n = int(rng.integers(2, 2000))
        v = [
            rng.random(n),
            np.concatenate([rng.normal(0.2, 0.05, n), rng.normal(0.7, 0.1, n)]),
            rng.integers(0, 7, n) / 6.0 * rng.random(),
            rng.normal(size=n) * 10 ** rng.uniform(-3, 3) + rng.uniform(-100, 100),
        ][i % 4].reshape(1, -1)
        for dtype in (np.float16, np.float32, np.float64):
            x = v.astype(dtype)
            for bins in (256, 7, 1000):
                try:
                    # scikit-image 0.22 divides 0 by 0 for empty classes (newer ones silence it)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        expected = filters.threshold_otsu(x, nbins=bins)
                except ValueError:  # numpy.histogram: too many bins for float16's spacing
                    with pytest.raises(ValueError, match="too many bins"):
                        otsu_threshold(x, bins=bins)
                    continue
                if NUMPY_1 and dtype == np.float16 and not increasing_edges(x, bins):
                    # numpy 1.x bins float16 over edges that do not increase, without a word;
                    # imgrad refuses them as numpy 2 does
                    with pytest.raises(ValueError, match="too many bins"):
                        otsu_threshold(x, bins=bins)
                    continue
                assert float(otsu_threshold(x, bins=bins)[0]) == float(expected), (i, dtype, bins)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.uint8, np.int64])
def test_otsu_constant_and_two_value_images(dtype):
    """A constant image: its value, as skimage (which returns that pixel). Two values: the low
    one's bin centre for floats, the low value itself for integers."""
    filters = pytest.importorskip("skimage.filters")
    for value in (0, 3, 100):
        x = np.full((3, 4), value, dtype)
        assert filters.threshold_otsu(x) == value
        assert otsu_threshold(x).tolist() == [value]
        assert not threshold_otsu(x).any()
    x = np.array([[2, 2, 2, 9]], dtype)
    expected = 2 if np.dtype(dtype).kind in "iu" else 2 + 7 / 512
    assert filters.threshold_otsu(x) == expected
    assert otsu_threshold(x).tolist() == [expected]
    assert threshold_otsu(x).tolist() == [[False, False, False, True]]


NUMPY_1 = np.lib.NumpyVersion(np.__version__) < "2.0.0"


def increasing_edges(x: np.ndarray, bins: int) -> bool:
    """Whether numpy's ``bins`` edges over ``x``'s range, in its dtype, increase strictly."""
    edges = np.linspace(x.min(), x.max(), bins + 1, dtype=x.dtype)
    return bool(np.all(np.diff(edges) > 0))


def skimage_otsu(filters, x: np.ndarray) -> float:
    """``filters.threshold_otsu(x)``; uint64 values below 2**63 through int64 for scikit-image
    releases whose bincount refuses uint64 (0.22: "Cannot cast ... uint64 to int64")."""
    try:
        return filters.threshold_otsu(x)
    except TypeError:
        if x.dtype != np.uint64 or int(x.max()) >= 2**63:
            raise
        return filters.threshold_otsu(x.astype(np.int64))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32, np.uint64, np.int16, np.int8])
def test_otsu_wide_integers_equal_skimage(dtype):
    """int64 and the other integer types are accepted (scikit-image takes them): one bin per
    level, as skimage's bincount; the threshold is an int64 level."""
    filters = pytest.importorskip("skimage.filters")
    image = np.array(
        [[0, 0, 1, 3, 5], [0, 1, 4, 3, 4], [1, 2, 5, 4, 1], [2, 4, 5, 2, 1], [4, 5, 1, 0, 0]]
    )
    assert otsu_threshold(image.astype(dtype)).tolist() == [2]
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    low, high = max(int(info.min), -(10**5)), min(int(info.max), 3 * 10**5)
    for i in range(12):
        a, b = sorted(int(v) for v in rng.integers(low, high, 2))
        x = rng.integers(a, b + 1, (20, 30)) if i % 2 else rng.choice([a, b, (a + b) // 3], (9, 9))
        x = x.astype(dtype)
        got = otsu_threshold(x)
        assert got.dtype == torch.int64
        assert got.tolist() == [int(skimage_otsu(filters, x))], (a, b)
        assert np.array_equal(threshold_otsu(x), x > got.item())
    photo = gray(PHOTOS[2]).astype(dtype)
    assert otsu_threshold(photo).tolist() == [int(skimage_otsu(filters, photo))]


def test_otsu_int64_beyond_a_histogram(monkeypatch):
    """A range too wide for one bin per level counts the distinct values instead: the same
    threshold (empty bins never win), exact for int64 levels beyond 2**53."""
    import imgrad.thresholds as th

    rng = np.random.default_rng(4)
    x = rng.integers(-500, 1500, (2, 1, 40, 40)) * 7 + 10**6
    by_levels = otsu_threshold(x)
    monkeypatch.setattr(th, "_MAX_LEVELS", 0)
    assert torch.equal(otsu_threshold(x), by_levels)
    assert [v % 7 for v in by_levels.tolist()] == [10**6 % 7] * 2  # a level that occurs
    big = np.array([[2**60, 2**60 + 1, 2**60 + 3, 2**60 + 40, 2**60 + 41]], np.int64)
    assert otsu_threshold(big).tolist() == [2**60 + 3]  # exact, 2**60 + 3 is no float64
    assert threshold_otsu(big).tolist() == [[False, False, False, True, True]]
    monkeypatch.undo()
    assert otsu_threshold(big).tolist() == [2**60 + 3]
    wide = np.array([[-(2**62), -(2**62) + 5, 2**62, 2**62 - 9]], np.int64)
    assert otsu_threshold(wide).tolist() == [-(2**62) + 5]
    with pytest.raises(ValueError, match="uint64 values of 2\\*\\*63 and above"):
        otsu_threshold(np.array([[0, 2**63]], np.uint64))


def test_otsu_float_batch_is_per_image_skimage():
    """(N, C, H, W): each sample's threshold over its channels is skimage's of that sample."""
    filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(6)
    batch = np.stack([rng.normal(m, 0.2, (2, 30, 20)) for m in (0.0, 5.0, -3.0)]).astype(np.float32)
    expected = [float(filters.threshold_otsu(batch[i])) for i in range(3)]
    assert otsu_threshold(batch, bins=50).tolist() == [
        float(filters.threshold_otsu(batch[i], nbins=50)) for i in range(3)
    ]
    assert otsu_threshold(torch.from_numpy(batch)).tolist() == expected
    constant = batch.copy()
    constant[1] = 0.25
    assert otsu_threshold(constant).tolist() == [expected[0], 0.25, expected[2]]


def test_otsu_float_bins_that_numpy_cannot_form():
    """float16 edges that are not increasing (a narrow range far from 0) and a range that
    overflows float16: ValueError, as numpy.histogram (scikit-image) raises or cannot bin."""
    narrow = np.array([[1000.0, 1000.5, 1001.0]], np.float16)
    if not NUMPY_1:  # numpy 1.x bins it without a word
        with pytest.raises(ValueError, match="Too many bins"):
            np.histogram(narrow, 256)
    with pytest.raises(ValueError, match=r"too many bins \(256\) for the range of x"):
        otsu_threshold(narrow)
    # with bins numpy can form, scikit-image's centres: (1000 + 1000.5) / 2 rounds to 1000 in
    # float16, and float32 has room for 256 bins
    assert otsu_threshold(narrow, bins=2).tolist() == [1000.0]
    assert otsu_threshold(narrow.astype(np.float32)).tolist() == [1000.001953125]
    with pytest.raises(ValueError, match="overflows float16"):
        otsu_threshold(np.array([[-60000.0, 60000.0]], np.float16))


def test_otsu_float_threshold_moves_with_the_extremes():
    """The value is scikit-image's; its gradient that of the bin centre lo + (k + 1/2) * width:
    bin 1 of 4 over [0, 4] is 1.5, which gives 5/8 to the minimum and 3/8 to the maximum."""
    x = torch.tensor([[0.0, 1.0, 3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    t = otsu_threshold(x, bins=4)
    assert t.tolist() == [1.5]
    t.sum().backward()
    assert x.grad.tolist() == [[0.625, 0.0, 0.0, 0.375]]
    flat = torch.full((1, 3), 2.0, dtype=torch.float64, requires_grad=True)
    otsu_threshold(flat).sum().backward()  # a constant image: its value, no NaN from 0 / 0
    assert flat.grad.tolist() == [[1 / 3, 1 / 3, 1 / 3]]  # amin shares it between the ties


def test_otsu_mask_of_16_and_32_bit_tensors():
    """The mask compares integers as int64: uint16/uint32 tensors (which torch does not promote
    against int64) work, and the mask is x > threshold."""
    x = torch.tensor([[10, 10, 12, 900, 1000, 1000]], dtype=torch.uint16)
    assert otsu_threshold(x).tolist() == [12]
    assert threshold_otsu(x).tolist() == [[False, False, False, True, True, True]]
    assert threshold_otsu(x.to(torch.uint32)).tolist() == threshold_otsu(x).tolist()


def test_otsu_bfloat16_is_binned_in_float32():
    x = torch.rand(1, 1, 30, 30, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16)
    assert torch.equal(otsu_threshold(x), otsu_threshold(x.float()))


# --------------------------------------------------------------------------- hysteresis


def test_hysteresis_boundaries():
    """== high is not strong, == low is not weak."""
    x = torch.tensor([[3.0, 2.0, 1.0, 2.0, 2.0]])
    assert hysteresis_threshold(x, 1.0, 2.0).tolist() == [[True, True, False, False, False]]
    assert not hysteresis_threshold(torch.tensor([[2.0, 1.5]]), 1.0, 2.0).any()


def test_hysteresis_diagonal_needs_8_connectivity():
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    assert hysteresis_threshold(x, 0.5, 1.5, connectivity=8).tolist() == [
        [True, False],
        [False, True],
    ]
    assert hysteresis_threshold(x, 0.5, 1.5, connectivity=4).tolist() == [
        [True, False],
        [False, False],
    ]


@pytest.mark.parametrize("path", PHOTOS[:4], ids=lambda p: p.split("/")[-1])
def test_hysteresis_4_equals_skimage(path):
    filters = pytest.importorskip("skimage.filters")
    img = gray(path).astype(np.float32)
    expected = filters.apply_hysteresis_threshold(img, 100, 180)
    assert np.array_equal(hysteresis_threshold(img, 100, 180, connectivity=4), expected)


def test_hysteresis_8_equals_labelling():
    """8-connected result = components (skimage.measure.label) holding a strong pixel."""
    measure = pytest.importorskip("skimage.measure")
    img = gray(PHOTOS[2]).astype(np.float32)
    labels = measure.label(img > 90, connectivity=2)
    keep = np.unique(labels[img > 170])
    expected = np.isin(labels, keep[keep > 0])
    assert np.array_equal(hysteresis_threshold(img, 90, 170), expected)


def test_hysteresis_8_equals_labelling_on_noise():
    """Many small components, seeds side by side and weak bridges between seeded ones."""
    measure = pytest.importorskip("skimage.measure")
    img = np.random.default_rng(0).random((3, 97, 131)).astype(np.float32)
    expected = np.zeros(img.shape, bool)
    for i, plane in enumerate(img):
        labels = measure.label(plane > 0.45, connectivity=2)
        keep = np.unique(labels[plane > 0.9])
        expected[i] = np.isin(labels, keep[keep > 0])
    assert np.array_equal(hysteresis_threshold(img, 0.45, 0.9), expected)


@pytest.mark.parametrize("n", [256, 1024])
def test_hysteresis_spiral_is_kept_whole(n):
    """A single strong pixel at one end of a 1-pixel spiral keeps the whole spiral."""
    path = spiral(n)
    x = torch.from_numpy(path.astype(np.float32))
    x[0, 0] = 2.0
    out = hysteresis_threshold(x, 0.5, 1.5)
    assert torch.equal(out, torch.from_numpy(path))
    x[0, 0] = 1.0
    assert not hysteresis_threshold(x, 0.5, 1.5).any()


def test_hysteresis_batch_and_channels_independent():
    """Planes do not connect across channels or images; batch == one by one."""
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((2, 3, 40, 50)).astype(np.float32))
    out = hysteresis_threshold(x, 0.5, 0.95)
    for n in range(2):
        for c in range(3):
            assert torch.equal(out[n, c], hysteresis_threshold(x[n, c], 0.5, 0.95))


def test_hysteresis_bad_inputs():
    with pytest.raises(ValueError, match="connectivity must be 4 or 8, got 6"):
        hysteresis_threshold(torch.zeros(3, 3), 0.1, 0.2, connectivity=6)
    with pytest.raises(ValueError, match="low must not exceed high; got low=0.5, high=0.2"):
        hysteresis_threshold(torch.zeros(3, 3), 0.5, 0.2)


# --------------------------------------------------------------------------- NMS


def nms(m, gy, gx):
    t = torch.tensor
    return non_maximum_suppression(t(m), t(gy), t(gx))


def test_nms_horizontal_ties():
    """Horizontal sector: m > left and m >= right (a plateau keeps its leftmost pixel)."""
    m = [[0.0, 5.0, 5.0, 0.0]]
    out = nms(m, [[0.0] * 4], [[1.0] * 4])
    assert out.tolist() == [[0.0, 5.0, 0.0, 0.0]]


def test_nms_vertical_ties():
    """Vertical sector: m > up and m >= down (+y is down: the upper pixel of a plateau wins)."""
    m = [[0.0], [5.0], [5.0], [0.0]]
    out = nms(m, [[1.0]] * 4, [[0.0]] * 4)
    assert out.tolist() == [[0.0], [5.0], [0.0], [0.0]]


def test_nms_diagonal_strict():
    """Diagonal sectors are strict on both sides: a diagonal plateau keeps nothing."""
    m = [[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.0]]
    same_sign = nms(m, [[1.0] * 3] * 3, [[1.0] * 3] * 3)  # compares up-left / down-right
    assert not same_sign.any()
    m2 = [[0.0, 0.0, 1.0], [0.0, 5.0, 0.0], [3.0, 0.0, 0.0]]
    opposite = nms(m2, [[1.0] * 3] * 3, [[-1.0] * 3] * 3)  # compares up-right / down-left
    assert opposite[1, 1] == 5
    assert nms(m2, [[1.0] * 3] * 3, [[1.0] * 3] * 3)[1, 1] == 5  # same sign: neighbours are 0


def test_nms_sector_boundaries_exact():
    """tan(22.5°) in Q15: gy/gx = 13573/32768 is diagonal, one step below is horizontal."""
    # centre pixel compared horizontally (left 4, right 0) or diagonally (up-left 6)
    m = [[6.0, 0.0, 0.0], [4.0, 5.0, 0.0], [0.0, 0.0, 0.0]]
    diagonal = nms(m, [[13573.0] * 3] * 3, [[32768.0] * 3] * 3)
    horizontal = nms(m, [[13572.0] * 3] * 3, [[32768.0] * 3] * 3)
    assert diagonal[1, 1] == 0 and horizontal[1, 1] == 5
    # vertical iff |gy| * 2**15 > |gx| * (13573 + 2**16): gy = 79110, gx = 32768 is vertical
    m = [[6.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 4.0, 0.0]]
    assert nms(m, [[79110.0] * 3] * 3, [[32768.0] * 3] * 3)[1, 1] == 5
    assert nms(m, [[79109.0] * 3] * 3, [[32768.0] * 3] * 3)[1, 1] == 0


def test_nms_integer_gradients_past_int32_products():
    """int32 gradients large enough for |g| * 79109 to overflow int32 are suppressed exactly as
    the same values in float64 (products in int64, not wrapped int32)."""
    rng = np.random.default_rng(3)
    m = torch.from_numpy(rng.random((40, 40)))
    gy, gx = (torch.from_numpy(rng.integers(-(10**6), 10**6, (40, 40))).int() for _ in "yx")
    exact = non_maximum_suppression(m, gy.double(), gx.double())
    assert torch.equal(non_maximum_suppression(m, gy, gx), exact)
    assert torch.equal(non_maximum_suppression(m, gy.long(), gx.long()), exact)


@pytest.mark.parametrize("length", [0, 1, 2, 999, 1000, 4096])
@pytest.mark.parametrize("density", [0.0, 0.005, 0.5, 1.0])
def test_nonzero_flat_equals_nonzero(length, density):
    """Pairs read as int64 (sparse), plain nonzero (dense), odd lengths, misaligned views."""
    rng = np.random.default_rng(length)
    values = torch.from_numpy(
        np.where(rng.random(length + 1) < density, rng.integers(1, 3, length + 1), 0)
    ).to(torch.int32)
    for v in (values[:length], values[1:], values[:length].long()):
        assert torch.equal(nonzero_flat(v), v.nonzero().squeeze(1))


def test_nms_border_counts_as_zero_and_shapes():
    out = nms([[3.0, 2.0]], [[0.0, 0.0]], [[1.0, 1.0]])
    assert out.tolist() == [[3.0, 0.0]]
    with pytest.raises(ValueError, match="shapes differ"):
        non_maximum_suppression(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3, 4))


@CUDA
def test_cuda_equals_cpu():
    img = gray(PHOTOS[2]).astype(np.float32)
    x = torch.from_numpy(img)
    cpu = hysteresis_threshold(x, 90, 170)
    assert torch.equal(hysteresis_threshold(x.cuda(), 90, 170).cpu(), cpu)
    assert torch.equal(otsu_threshold(x.cuda()).cpu(), otsu_threshold(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_otsu_over_tiles_is_skimage_threshold(dtype):
    """process_huge bins its tiles with the same edges and index in the magnitude's dtype, so the
    whole-image mask is the magnitude above scikit-image's threshold of it."""
    filters = pytest.importorskip("skimage.filters")
    x = torch.from_numpy(luma(str(SAMPLES / "text.png"))[:60, :70]).to(dtype)
    m = imgrad.gradient_magnitude(x)  # what the tiles compute, rounded once to x's dtype
    assert m.dtype == dtype
    for bins in (256, 19):
        expected = filters.threshold_otsu(m.numpy(), nbins=bins)
        tiled = imgrad.process_huge(x, stage="threshold", otsu=True, bins=bins, tile=(16, 23))
        assert torch.equal(tiled, threshold_otsu(m, bins))
        assert torch.equal(tiled, m > float(expected)), bins
