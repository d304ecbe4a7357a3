"""imgrad.gradient == torch.gradient bit for bit; image_gradients == torchmetrics minus the wrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import check_contract, make_image

import imgrad

SHAPES = [(7,), (5, 6), (3, 4, 5), (3, 3, 4, 5)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64]


def _data(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 20
    return x.to(dtype)


def _coords(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.rand(n, generator=g, dtype=torch.float64) + 0.1, 0).to(dtype)


def assert_same(got, want):
    assert isinstance(got, tuple) and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert torch.equal(g, w), (g - w).abs().max()


def _cases(shape):
    r = len(shape)
    yield {}
    yield {"spacing": 0.5}
    yield {"spacing": 3}
    yield {"dim": 0}
    yield {"dim": -1}
    if r > 1:
        yield {"dim": [0, -1], "spacing": [2.0, 0.25]}
        yield {"dim": (-1, 0), "spacing": [0.25, 2]}
        yield {"spacing": [float(k + 1) for k in range(r)]}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("edge_order", [1, 2])
def test_gradient_equals_torch_uniform(shape, dtype, edge_order):
    """Ranks 1..4, dim subsets, scalar and per-dim spacing: torch.equal with torch.gradient."""
    x = _data(shape, dtype)
    for kw in _cases(shape):
        if edge_order == 2 and any(shape[d] < 3 for d in _dims_of(kw, len(shape))):
            continue
        assert_same(
            imgrad.gradient(x, edge_order=edge_order, **kw),
            torch.gradient(x, **kw, edge_order=edge_order),
        )


def _dims_of(kw, r):
    d = kw.get("dim")
    if d is None:
        return range(r)
    return [d] if isinstance(d, int) else list(d)


@pytest.mark.parametrize("coord_dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("edge_order", [1, 2])
def test_gradient_equals_torch_coordinates(shape, dtype, edge_order, coord_dtype):
    """Non-uniform coordinate tensors, one per dim (and for a subset of dims)."""
    if dtype in (torch.float16, torch.bfloat16):
        coord_dtype = dtype
    x = _data(shape, dtype, seed=1)
    dims = [d for d in range(len(shape)) if shape[d] >= edge_order + 1]
    coords = [_coords(shape[d], seed=d, dtype=coord_dtype) for d in dims]
    kw = {"spacing": coords, "dim": dims, "edge_order": edge_order}
    assert_same(imgrad.gradient(x, **kw), torch.gradient(x, **kw))


@pytest.mark.parametrize("spacing", [np.float32(2), [np.float64(0.5)], [np.int64(3)]], ids=str)
def test_gradient_takes_numpy_numbers_as_torch_does(spacing):
    t = torch.tensor([1.0, 2, 4, 7, 11, 16])
    (got,), (want,) = imgrad.gradient(t, spacing=spacing), torch.gradient(t, spacing=spacing)
    assert torch.equal(got, want)


def test_gradient_two_samples_with_coordinates():
    """A dim of 2 samples with coordinates and edge_order=1 (both ends one-sided)."""
    x = torch.tensor([1.0, 2.0])
    c = torch.tensor([0.0, 2.0])
    assert_same(imgrad.gradient(x, spacing=[c]), torch.gradient(x, spacing=[c]))
    assert imgrad.gradient(x, spacing=[c])[0].tolist() == [0.5, 0.5]


def test_gradient_complex_mirrors_torch():
    """torch.gradient accepts complex input; so does imgrad.gradient, with the same bits."""
    x = _data((4, 5), torch.complex64, seed=2)
    for eo in (1, 2):
        assert_same(imgrad.gradient(x, edge_order=eo), torch.gradient(x, edge_order=eo))
        c = [_coords(4, 0), _coords(5, 1)]
        assert_same(
            imgrad.gradient(x, spacing=c, edge_order=eo),
            torch.gradient(x, spacing=c, edge_order=eo),
        )


def test_numpy_docstring_example():
    """numpy's [1, 2, 4, 7, 11, 16]: edge_order=2 gives 0.5 .. 5.5, edge_order=1 gives 1 .. 5."""
    f = torch.tensor([1.0, 2.0, 4.0, 7.0, 11.0, 16.0])
    assert imgrad.gradient(f, edge_order=2)[0].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert imgrad.gradient(f)[0].tolist() == [1.0, 1.5, 2.5, 3.5, 4.5, 5.0]
    assert torch.gradient(f, edge_order=2)[0].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    # the non-uniform interior formula is exact for quadratics: f = x² at uneven x gives 2x
    x = torch.tensor([0.0, 0.5, 2.0, 2.5, 4.0], dtype=torch.float64)
    (g,) = imgrad.gradient(x**2, spacing=[x], edge_order=2)
    torch.testing.assert_close(g, 2 * x, rtol=0, atol=1e-12)


def test_gradient_dtype_rules():
    """Integers give float32 (as torch), half precision is kept, int8/int16 too."""
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        x = torch.arange(6, dtype=dtype)
        (g,) = imgrad.gradient(x)
        assert g.dtype == torch.float32 == torch.gradient(x)[0].dtype
        assert g.tolist() == [1.0] * 6
    for dtype in (torch.float16, torch.bfloat16):
        assert imgrad.gradient(torch.arange(4, dtype=dtype))[0].dtype == dtype


def test_gradient_integers_do_not_wrap_where_torch_does():
    """torch subtracts int16 values in int16 (30000 - -30000 wraps); imgrad does not."""
    x = torch.tensor([-30000, 0, 30000], dtype=torch.int16)
    (g,) = imgrad.gradient(x)
    assert g.tolist() == [30000.0, 30000.0, 30000.0]
    assert torch.gradient(x)[0][1].item() == (60000 - 65536) / 2  # wrapped in torch


def test_gradient_coordinate_length_is_checked():
    """A coordinate tensor of the wrong length raises; torch silently returns a short result."""
    f = torch.tensor([1.0, 2.0, 4.0])
    short = torch.tensor([0.0, 1.0])
    (silent,) = torch.gradient(f, spacing=[short])
    assert silent.shape == (2,)  # torch: wrong length, no error
    with pytest.raises(
        ValueError, match=r"coordinates for dim 0 have 2 entries but the input has 3"
    ):
        imgrad.gradient(f, spacing=[short])


@pytest.mark.parametrize(
    ("x", "kwargs", "exc", "match"),
    [
        (torch.ones(2), {"edge_order": 2}, ValueError, r"at least edge_order \+ 1 = 3 samples"),
        (torch.ones(1), {}, ValueError, r"at least edge_order \+ 1 = 2 samples along dim 0; got 1"),
        (torch.ones(5, 2), {"edge_order": 2}, ValueError, r"along dim 1; got 2"),
        (torch.ones(4), {"edge_order": 3}, ValueError, r"edge_order must be 1 or 2, got 3"),
        (torch.ones(4, dtype=torch.uint8), {}, TypeError, r"does not support torch.uint8"),
        (torch.ones(4, dtype=torch.bool), {}, TypeError, r"does not support torch.bool"),
        ([1.0, 2.0], {}, TypeError, r"input must be a torch.Tensor"),
        (torch.ones(4, 4), {"dim": 2}, ValueError, r"dim 2 is out of range for a tensor of rank 2"),
        (torch.ones(4, 4), {"dim": [0, -2]}, ValueError, r"names a dimension twice"),
        (torch.ones(4, 4), {"spacing": [1.0]}, ValueError, r"spacing has 1 entries but 2"),
        (torch.ones(4, 4), {"spacing": "x"}, TypeError, r"spacing must be a number"),
    ],
)
def test_gradient_errors(x, kwargs, exc, match):
    """Errors quote the bad value (torch raises RuntimeError for the first few)."""
    with pytest.raises(exc, match=match):
        imgrad.gradient(x, **kwargs)


@pytest.mark.parametrize("x", [torch.ones(2), torch.ones(4, dtype=torch.uint8)])
def test_torch_raises_too(x):
    """torch.gradient rejects the same inputs (RuntimeError), so the checks are compatible."""
    with pytest.raises(RuntimeError):
        torch.gradient(x, edge_order=2)


# --------------------------------------------------------------------------- image_gradients


def test_image_gradients_equals_torchmetrics_on_float():
    """Float input: bit-identical to torchmetrics.functional.image_gradients, (dy, dx) order."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    x = make_image((2, 3, 5, 6), torch.float32, seed=3)
    dy, dx = tm.image_gradients(x)
    got = imgrad.image_gradients(x)
    assert torch.equal(got.gy, dy) and torch.equal(got.gx, dx)
    assert torch.equal(got[0], dy)
    # last row of dy and last column of dx are 0; dy[i] = I[i+1] - I[i]
    assert got.gy[..., -1, :].abs().sum() == 0 and got.gx[..., -1].abs().sum() == 0
    assert torch.equal(got.gy[..., :-1, :], x[..., 1:, :] - x[..., :-1, :])


def test_image_gradients_uint8_does_not_wrap():
    """torchmetrics keeps uint8 and 0 - 255 wraps to 1; imgrad gives -255 in float32."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    x = torch.zeros(1, 1, 3, 4, dtype=torch.uint8)
    x[..., :2] = 255
    dy, dx = tm.image_gradients(x)
    assert dx.dtype == torch.uint8 and dx[0, 0, 0].tolist() == [0, 1, 0, 0]
    got = imgrad.image_gradients(x)
    assert got.gx.dtype == torch.float32
    assert got.gx[0, 0, 0].tolist() == [0.0, -255.0, 0.0, 0.0]
    # everywhere else they agree
    assert torch.equal(got.gy, dy.float())
    # and on a rising step both agree exactly
    up = 255 - x
    assert torch.equal(imgrad.image_gradients(up).gx, tm.image_gradients(up)[1].float())


def test_image_gradients_contract(device):
    """Any layout, dtype rules, batch == one by one (not only (N, C, H, W) like torchmetrics)."""
    check_contract(imgrad.image_gradients, make_image((2, 2, 4, 5), torch.uint8, device))
    g = imgrad.image_gradients(torch.tensor([[0.0, 1.0], [3.0, 7.0]]))
    assert g.gy.tolist() == [[3.0, 6.0], [0.0, 0.0]] and g.gx.tolist() == [[1.0, 0.0], [4.0, 0.0]]
