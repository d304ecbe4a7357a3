"""The native hysteresis kernel (``imgrad/_hysteresis.c``): built, and bit-identical to the torch
path (``IMGRAD_NATIVE=0``) on random masks, spirals, long chains, batches, tiny and empty
images, every dtype ``hysteresis_threshold`` accepts, and in ``canny``, where both equal
``cv2.Canny``."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import spiral
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from imgrad import _native, canny, hysteresis_threshold
from imgrad.thresholds import (
    hysteresis,
    hysteresis_grid,
    hysteresis_grid_torch,
    hysteresis_torch,
)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
PHOTOS = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
NATIVE = pytest.mark.skipif(
    not _native.available(),
    reason="the C extension imgrad._hysteresis is not built (see test_extension_is_built)",
)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch):
    """``run(fn)``: ``fn()`` on the torch path (``IMGRAD_NATIVE=0``) and on the native one,
    checking that the native kernel ran (only) in the second call; returns both results."""
    if not _native.available():
        pytest.skip("the C extension imgrad._hysteresis is not built (see test_extension_is_built)")
    calls = []
    for name in ("hysteresis_grid", "hysteresis_masks"):
        original = getattr(_native, name)

        def spy(*args, _original=original):
            calls.append(1)
            return _original(*args)

        monkeypatch.setattr(_native, name, spy)

    def run(fn):
        monkeypatch.setenv("IMGRAD_NATIVE", "0")
        expected = fn()
        assert not calls, "IMGRAD_NATIVE=0 ran the native kernel"
        monkeypatch.setenv("IMGRAD_NATIVE", "1")
        got = fn()
        assert calls, "the native kernel did not run"
        calls.clear()
        return expected, got

    return run


def same(a, b) -> None:
    """Same type, shape, dtype and bits (tensors or arrays)."""
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b), int((a != b).sum())
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b), int((a != b).sum())


def random_masks(shape, density: float, seeds: float, seed: int):
    """Candidates with probability ``density``; a fraction ``seeds`` of them strong."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(shape, generator=g)
    return u < density, u < density * seeds


def state_grid(candidates: torch.Tensor, strong: torch.Tensor, dtype: torch.dtype):
    """The flat zero-bordered state grid (0 / 1 / 2) of ``hysteresis_grid``."""
    state = candidates.to(dtype) + (strong & candidates).to(dtype)
    return torch.nn.functional.pad(state, (1, 1, 1, 1)).reshape(-1)


def serpentine(h: int, w: int) -> np.ndarray:
    """A 1-pixel path snaking through every other row: about h * w / 2 pixels, one component."""
    img = np.zeros((h, w), bool)
    img[::2] = True
    img[1::4, -1] = True
    img[3::4, 0] = True
    return img


# ----------------------------------------------------------------------------- the build


def test_extension_is_built():
    """``pip install -e .`` (the README's command, CI's) builds the extension: it must import
    here, unless ``IMGRAD_NATIVE=0`` says this run tests the torch path only."""
    if os.environ.get("IMGRAD_NATIVE") == "0":
        pytest.skip("IMGRAD_NATIVE=0: this run tests the torch path")
    assert _native.available(), (
        "imgrad._hysteresis is not built: reinstall with a C compiler and Python headers "
        "(python3 -m pip install -e .) and read the build log"
    )
    assert _native.enabled()


@NATIVE
def test_environment_switch(monkeypatch):
    monkeypatch.setenv("IMGRAD_NATIVE", "0")
    assert not _native.enabled() and not _native.applies(torch.zeros(2, dtype=torch.bool))
    for on in ("1", ""):
        monkeypatch.setenv("IMGRAD_NATIVE", on)
        assert _native.enabled()
    monkeypatch.setenv("IMGRAD_NATIVE", "yes")
    with pytest.raises(ValueError, match="IMGRAD_NATIVE must be one of 0, 1; got 'yes'"):
        _native.enabled()


# ----------------------------------------------------------------------------- equal bits


@pytest.mark.parametrize("connectivity", [4, 8])
def test_random_masks(paths, connectivity):
    """Densities below, at and above the percolation thresholds (8: 0.41, 4: 0.59), few or
    many seeds or none, shapes from 1 x 1 to batches of odd sizes."""
    shapes = [(1, 1, 1), (1, 1, 9), (1, 9, 1), (2, 2, 2), (3, 17, 23), (2, 64, 64), (1, 97, 131)]
    for k, shape in enumerate(shapes):
        for density in (0.1, 0.4, 0.6, 0.9, 1.0):
            for seeds in (0.0, 0.005, 0.3):
                c, s = random_masks(shape, density, seeds, seed=k)
                expected, got = paths(lambda c=c, s=s: hysteresis(c, s, connectivity))
                same(expected, got)


@NATIVE
@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 3),
    h=st.integers(0, 12),
    w=st.integers(0, 12),
    density=st.floats(0, 1),
    seeds=st.floats(0, 1),
    seed=st.integers(0, 2**31),
    connectivity=st.sampled_from([4, 8]),
)
def test_random_masks_fuzz(n, h, w, density, seeds, seed, connectivity):
    """Both kernels (masks and state grid) against the torch labelling, straight."""
    c, s = random_masks((n, h, w), density, seeds, seed)
    expected = hysteresis_torch(c, s, connectivity)
    same(expected, _native.hysteresis_masks(c, s, connectivity))
    grid = state_grid(c, s, torch.int32)
    got = _native.hysteresis_grid(grid, n, h, w, connectivity)
    same(expected.reshape(-1), got)
    # the grid is overwritten: the pixels reached become 3, nothing else changes
    before = state_grid(c, s, torch.int32)
    reached = grid == 3
    assert torch.equal(grid[~reached], before[~reached])
    assert torch.equal(reached.reshape(n, h + 2, w + 2)[:, 1:-1, 1:-1], expected)


@NATIVE
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_state_grid_dtypes(dtype, connectivity):
    """The grid kernel reads 1-, 2-, 4- and 8-byte grids (Canny's is int32, int64 beyond 2**31
    cells) alike."""
    c, s = random_masks((3, 41, 37), 0.5, 0.05, seed=3)
    expected = hysteresis_grid_torch(state_grid(c, s, torch.int32), 3, 41, 37, connectivity)
    got = _native.hysteresis_grid(state_grid(c, s, dtype), 3, 41, 37, connectivity)
    same(expected, got)


@pytest.mark.parametrize("n", [64, 257, 1024])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_spirals(paths, n, connectivity):
    """A seed at either end of a 1-pixel spiral keeps all of it (a path of n²/2 pixels)."""
    path = spiral(n)
    x = torch.from_numpy(path.astype(np.float32))
    inner = tuple(int(i) for i in np.argwhere(path)[-1])  # one end is [0, 0]; the other inside
    for end in ((0, 0), inner):
        y = x.clone()
        y[end] = 2.0
        expected, got = paths(lambda y=y: hysteresis_threshold(y, 0.5, 1.5, connectivity))
        same(expected, got)
        assert torch.equal(got, torch.from_numpy(path))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_long_chains(paths, connectivity):
    """A serpentine through a 301 x 299 image, an image all weak, and a diagonal staircase
    (one component for 8-connectivity, single pixels for 4): stacks far beyond their first
    allocation."""
    snake = serpentine(301, 299)
    x = torch.from_numpy(snake.astype(np.float32))
    x[-1, -1] = 2.0  # the far end
    expected, got = paths(lambda: hysteresis_threshold(x, 0.5, 1.5, connectivity))
    same(expected, got)
    assert torch.equal(got, torch.from_numpy(snake))

    full = torch.ones(700, 650)
    full[350, 325] = 2.0
    expected, got = paths(lambda: hysteresis_threshold(full, 0.5, 1.5, connectivity))
    same(expected, got)
    assert bool(got.all())

    stairs = torch.eye(300)
    stairs[0, 0] = 2.0
    expected, got = paths(lambda: hysteresis_threshold(stairs, 0.5, 1.5, connectivity))
    same(expected, got)
    assert int(got.sum()) == (300 if connectivity == 8 else 1)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_no_leak_across_rows_images_or_channels(paths, connectivity):
    """A seed at the end of a row does not reach the start of the next row (adjacent in
    memory), nor the next channel or image."""
    x = torch.zeros(2, 3, 4, 5)
    x[0, 0, 1, 4] = 2.0  # last column of row 1
    x[0, 0, 2, 0] = 1.0  # first column of row 2: the next byte in memory
    x[0, 0, 3, 4] = 2.0  # last pixel of the plane ...
    x[0, 1, 0, 0] = 1.0  # ... and the first one of the next channel
    x[0, 2, 3, :] = 2.0  # last row of the last channel of image 0 ...
    x[1, 0, 0, :] = 1.0  # ... and the first row of image 1
    expected, got = paths(lambda: hysteresis_threshold(x, 0.5, 1.5, connectivity))
    same(expected, got)
    assert torch.equal(got, x > 1.5)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_batches(paths, connectivity):
    """A batch of images and channels is each plane on its own, on both paths."""
    x = torch.from_numpy(np.random.default_rng(2).random((3, 2, 40, 50)).astype(np.float32))
    expected, got = paths(lambda: hysteresis_threshold(x, 0.5, 0.95, connectivity))
    same(expected, got)
    for n in range(3):
        for c in range(2):
            assert torch.equal(got[n, c], hysteresis_threshold(x[n, c], 0.5, 0.95, connectivity))


def test_one_pixel_and_empty(paths, monkeypatch):
    for value in (0.0, 1.0, 2.0):
        for connectivity in (4, 8):
            x = torch.full((1, 1), value)
            expected, got = paths(lambda x=x, k=connectivity: hysteresis_threshold(x, 0.5, 1.5, k))
            same(expected, got)
            assert got.tolist() == [[value > 1.5]]
    for shape in ((0, 4, 4), (2, 0, 3), (2, 3, 0), (0, 0, 0)):
        c = torch.ones(shape, dtype=torch.bool)
        expected, got = paths(lambda c=c: hysteresis(c, c))
        same(expected, got)
    for flag in ("0", "1"):  # the public function refuses empty images on both paths
        monkeypatch.setenv("IMGRAD_NATIVE", flag)
        with pytest.raises(ValueError, match="x is empty"):
            hysteresis_threshold(torch.zeros(2, 0, 3), 0.5, 1.5)


ALL_DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.int64,
    torch.uint32,
    torch.uint64,
]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_every_dtype(paths, dtype):
    """Every dtype ``hysteresis_threshold`` accepts, tensor and (where numpy has it) array."""
    g = torch.Generator().manual_seed(5)
    if dtype.is_floating_point:
        x, low, high = torch.rand(2, 3, 31, 29, generator=g).to(dtype), 0.45, 0.9
    else:
        x, low, high = torch.randint(0, 101, (2, 3, 31, 29), generator=g).to(dtype), 45, 90
    expected, got = paths(lambda: hysteresis_threshold(x, low, high))
    same(expected, got)
    assert bool(got.any()) and not bool(got.all())
    if dtype != torch.bfloat16:
        a = x.numpy()
        expected, got = paths(lambda: hysteresis_threshold(a, low, high, connectivity=4))
        same(expected, got)


def test_layouts(paths):
    """channels_last and transposed input: the masks are made contiguous for the kernel."""
    x = torch.rand(2, 3, 30, 40, generator=torch.Generator().manual_seed(1))
    _, reference = paths(lambda: hysteresis_threshold(x, 0.45, 0.9))
    for y in (x.to(memory_format=torch.channels_last), x.transpose(-1, -2).contiguous().mT):
        expected, got = paths(lambda y=y: hysteresis_threshold(y, 0.45, 0.9))
        same(expected, got)
        assert torch.equal(got, reference)


@NATIVE
def test_inputs_are_not_modified():
    c, s = random_masks((2, 30, 30), 0.6, 0.1, seed=4)
    c0, s0 = c.clone(), s.clone()
    _native.hysteresis_masks(c, s, 8)
    assert torch.equal(c, c0) and torch.equal(s, s0)


# ----------------------------------------------------------------------------- canny


def photo(path: str) -> np.ndarray:
    a = np.array(Image.open(path))
    return a if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, -1, 0))


@pytest.mark.parametrize("path", PHOTOS[:4], ids=lambda p: p.split("/")[-1])
def test_canny_equals_cv2_on_both_paths(paths, path):
    cv2 = pytest.importorskip("cv2")
    a = photo(path)
    hwc = a if a.ndim == 2 else np.ascontiguousarray(np.moveaxis(a, 0, -1))
    for ksize, l2 in ((3, False), (5, True)):
        wanted = cv2.Canny(hwc, 100, 200, apertureSize=ksize, L2gradient=l2) > 0
        expected, got = paths(lambda k=ksize, l2=l2: canny(a, 100, 200, ksize=k, l2gradient=l2))
        same(expected, got)
        assert np.array_equal(got.reshape(wanted.shape), wanted)


def test_canny_batch_details_tiny_and_empty(paths):
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (3, 1, 45, 61), generator=g, dtype=torch.uint8)
    expected, got = paths(lambda: canny(x, 100, 300))
    same(expected, got)
    expected, got = paths(lambda: canny(x.float() / 255, 0.3, 0.9, return_details=True))
    for e, o in zip(expected, got, strict=True):
        same(e, o)
    for shape in ((1, 1, 1, 1), (1, 1, 1, 7), (1, 1, 7, 1), (0, 1, 5, 5)):
        y = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        expected, got = paths(lambda y=y: canny(y, 10, 20))
        same(expected, got)


def test_canny_grid_dispatch(paths):
    """``hysteresis_grid`` (Canny's entry) on both paths, 4- and 8-connected."""
    c, s = random_masks((2, 50, 70), 0.45, 0.05, seed=9)
    for connectivity in (4, 8):
        expected, got = paths(
            lambda k=connectivity: hysteresis_grid(state_grid(c, s, torch.int32), 2, 50, 70, k)
        )
        same(expected, got)


# ----------------------------------------------------------------------------- dispatch


@NATIVE
def test_what_stays_on_the_torch_path():
    """Meta tensors, tensors that record autograd, subclasses and torch.func transforms keep
    the torch path; plain CPU tensors (inference mode too) take the native one."""
    plain = torch.zeros(3, dtype=torch.bool)
    assert _native.applies(plain, plain)
    with torch.inference_mode():
        assert _native.applies(torch.zeros(3, dtype=torch.bool))
    assert not _native.applies(torch.zeros(3, dtype=torch.bool, device="meta"))
    assert not _native.applies(plain, torch.zeros(3, requires_grad=True))
    assert not _native.applies(torch.nn.Parameter(torch.zeros(3), requires_grad=False))

    seen = []

    def probe(t):
        seen.append(_native.applies(t))
        return t

    torch.func.vmap(probe)(torch.zeros(2, 3))
    assert seen == [False]


@CUDA
def test_cuda_keeps_the_torch_path(paths):
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert not _native.applies(x.cuda())
    on_gpu = hysteresis_threshold(x.cuda(), 0.45, 0.9)
    assert torch.equal(on_gpu.cpu(), hysteresis_threshold(x, 0.45, 0.9))


@NATIVE
def test_threads():
    """The kernel runs without the GIL: threads give the results they give one by one."""
    masks = [random_masks((1, 300, 300), 0.5, 0.01, seed=k) for k in range(8)]
    alone = [_native.hysteresis_masks(c, s, 8) for c, s in masks]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda m: _native.hysteresis_masks(*m, 8), masks))
    for a, b in zip(alone, together, strict=True):
        assert torch.equal(a, b)


@NATIVE
def test_argument_checks():
    module = _native._load()
    weak = np.zeros((2, 3, 4), bool)
    out = np.zeros((2, 3, 4), bool)
    grid = np.zeros((2, 5, 6), np.int32)
    module.masks(weak, weak, out, 2, 3, 4, 8)
    module.grid(grid, out, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8, got 6"):
        module.masks(weak, weak, out, 2, 3, 4, 6)
    with pytest.raises(ValueError, match="out must have 24 items, got 12"):
        module.masks(weak, weak, out[:1], 2, 3, 4, 8)
    with pytest.raises(ValueError, match="grid must have 60 items, got 24"):
        module.grid(weak.view(np.uint8), out, 2, 3, 4, 8)
    with pytest.raises(ValueError, match="must not be negative"):
        module.grid(grid, out, -2, 3, 4, 8)
    with pytest.raises(OverflowError, match="too large"):
        module.grid(grid, out, 2**40, 2**20, 2**20, 8)
    with pytest.raises(TypeError, match="grid must hold 1, 2, 4 or 8-byte integers"):
        module.grid(grid.astype(np.float32), out, 2, 3, 4, 8)
    with pytest.raises(TypeError, match="weak must hold 1-byte integers"):
        module.masks(weak.astype(np.int16), weak, out, 2, 3, 4, 8)
    with pytest.raises((ValueError, BufferError)):  # not C-contiguous
        module.masks(np.zeros((2, 4, 3), bool).transpose(0, 2, 1), weak, out, 2, 3, 4, 8)
    frozen = np.zeros((2, 3, 4), bool)
    frozen.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):  # out must be writable
        module.masks(weak, weak, frozen, 2, 3, 4, 8)
