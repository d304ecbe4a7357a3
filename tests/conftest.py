"""Shared fixtures and the reusable contract checks run on every image operator.

The contract (after torchvision's transforms tests): the input is not modified in place, the
result's dtype and device follow the documented rules (integers -> float32, 32/64-bit integers ->
float64, floats kept), a batch gives the same bits as its images one by one, an empty batch works,
the output rank follows the input rank ((H, W), (C, H, W), (N, C, H, W)), and non-contiguous or
channels_last input gives the same numbers as contiguous input. ``tests/test_contract.py`` runs
these pieces, and the autograd, vmap, compile, export, ONNX and meta-device checks, on every
public name of ``tests/registry.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs a CUDA device")),
]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
INT_DTYPES = [torch.uint8, torch.uint16, torch.int16, torch.int32]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """``cpu`` always, ``cuda`` when a GPU is present."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """The full-precision floating dtypes."""
    return request.param


@pytest.fixture(params=FLOAT_DTYPES + INT_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def any_dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """Every input dtype imgrad accepts (the ones the brief lists)."""
    return request.param


def expected_dtype(dtype: torch.dtype) -> torch.dtype:
    """The documented result dtype for an input of ``dtype``."""
    if dtype.is_floating_point:
        return dtype
    if dtype in (torch.int32, torch.int64, torch.uint32, torch.uint64):
        return torch.float64
    return torch.float32


def make_image(
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Random image whose values are exact in every dtype (integers 0..200 for int, else [0, 1))."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        x = torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        x = torch.randint(0, 201, shape, generator=g).double()
    return x.to(dtype).to(device)


def parts(out: Any) -> list[torch.Tensor]:
    """The tensors of a result: the fields of a tuple (``Gradients``, ``CannyResult``, ...) in
    order, or the tensor itself."""
    got = list(out) if isinstance(out, tuple) else [out]
    assert all(isinstance(p, torch.Tensor) for p in got), [type(p) for p in got]
    return got


def assert_same(a: Any, b: Any) -> None:
    """``a`` and ``b`` hold the same tensors field by field: shapes, dtypes and bits."""
    pa, pb = parts(a), parts(b)
    assert len(pa) == len(pb)
    for u, v in zip(pa, pb, strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype, (u.shape, v.shape, u.dtype, v.dtype)
        assert torch.equal(u, v), (u - v).abs().max() if u.is_floating_point() else (u != v).sum()


# The contract, check by check: ``fn`` takes one or more ``(N, C, H, W)`` tensors ``xs`` (an
# image; a ``(gy, gx)`` pair; magnitude, gy and gx) that are sliced, re-laid out and re-ranked
# together. ``tests/test_contract.py`` runs each piece on every public op of its registry;
# :func:`check_contract` runs them all on one image.


def check_unmodified(fn: Callable[..., Any], *xs: torch.Tensor) -> Any:
    """``fn(*xs)`` leaves its inputs alone and returns fresh tensors, never views of an input's
    memory; returns ``fn(*xs)``."""
    before = [x.clone() for x in xs]
    out = fn(*xs)
    for x, b in zip(xs, before, strict=True):
        assert torch.equal(x, b), "the input was modified in place"
    inputs = {x.untyped_storage().data_ptr() for x in xs}
    for p in parts(out):
        assert p.untyped_storage().data_ptr() not in inputs, "a result is a view of the input"
    return out


def check_dtype_device(
    out: Any,
    x: torch.Tensor,
    dtypes: tuple[torch.dtype, ...],
    shapes: tuple[tuple[int, ...], ...],
) -> None:
    """Each field of ``out`` has its documented dtype and shape and ``x``'s device."""
    got = parts(out)
    assert len(got) == len(dtypes) == len(shapes)
    for p, dtype, shape in zip(got, dtypes, shapes, strict=True):
        assert p.dtype == dtype, (p.dtype, dtype, x.dtype)
        assert p.device == x.device, (p.device, x.device)
        assert tuple(p.shape) == tuple(shape), (tuple(p.shape), shape)


def check_batch(fn: Callable[..., Any], out: Any, *xs: torch.Tensor) -> None:
    """A batch gives the same bits as its images one by one (``out`` is ``fn(*xs)``)."""
    n = xs[0].shape[0]
    assert n >= 2, "give a batch of at least two images"
    one_by_one = [parts(fn(*(x[i : i + 1] for x in xs))) for i in range(n)]
    for k, p in enumerate(parts(out)):
        assert_same(p, torch.cat([o[k] for o in one_by_one]))


def check_empty_batch(fn: Callable[..., Any], out: Any, *xs: torch.Tensor) -> None:
    """An empty batch gives empty results shaped like the full batch's, with N = 0."""
    for p, full in zip(parts(fn(*(x[:0] for x in xs))), parts(out), strict=True):
        assert p.shape == (0, *full.shape[1:]) and p.dtype == full.dtype


def check_rank(fn: Callable[..., Any], out: Any, *xs: torch.Tensor, keeps_channels: bool) -> None:
    """``(C, H, W)`` input gives the batch's first result and ``(H, W)`` input (one channel, so
    only where the op keeps the channel count or there is one channel) its first channel."""
    assert_same(tuple(p[0] for p in parts(out)), tuple(parts(fn(*(x[0] for x in xs)))))
    if keeps_channels or xs[0].shape[1] == 1:
        assert_same(tuple(p[0, 0] for p in parts(out)), tuple(parts(fn(*(x[0, 0] for x in xs)))))


def check_layouts(fn: Callable[..., Any], out: Any, *xs: torch.Tensor) -> None:
    """channels_last, transposed and strided inputs give the same bits as contiguous ones."""
    assert all(x.is_contiguous() for x in xs)
    assert_same(out, fn(*(x.to(memory_format=torch.channels_last) for x in xs)))
    strided = [x.transpose(-1, -2).contiguous().transpose(-1, -2) for x in xs]
    assert not any(x.is_contiguous() for x in strided)
    assert_same(out, fn(*strided))
    wide = []
    for x in xs:
        w = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
        w[..., ::2] = x
        wide.append(w[..., ::2])
    assert_same(out, fn(*wide))


def check_contract(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    channels_out: int | None = None,
) -> Any:
    """Run ``fn`` on the ``(N, C, H, W)`` image ``x`` and check the whole contract; returns
    ``fn(x)``.

    ``channels_out`` is the number of output channels (default: the input's).
    """
    assert x.dim() == 4 and x.shape[0] >= 2, "give a batch of at least two images"
    n, c, h, w = x.shape
    out = check_unmodified(fn, x)
    count = len(parts(out))
    shape = (n, c if channels_out is None else channels_out, h, w)
    check_dtype_device(out, x, (expected_dtype(x.dtype),) * count, (shape,) * count)
    check_batch(fn, out, x)
    check_empty_batch(fn, out, x)
    check_rank(fn, out, x, keeps_channels=channels_out is None)
    check_layouts(fn, out, x)
    return out


def spiral(n: int) -> np.ndarray:
    """A 1-pixel-thick square spiral filling an n x n image: one path of about n²/2 pixels."""
    img = np.zeros((n, n), bool)
    k = 0
    while 2 * k <= n - 1 - 2 * k:
        top, bottom, right = 2 * k, n - 1 - 2 * k, n - 1 - 2 * k
        img[top, max(2 * k - 2, 0) : right + 1] = True
        img[top : bottom + 1, right] = True
        img[bottom, 2 * k : right + 1] = True
        img[top + 2 : bottom + 1, 2 * k] = True
        k += 1
    return img
