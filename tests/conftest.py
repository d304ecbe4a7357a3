"""Shared fixtures and the reusable contract check run on every image operator.

The contract (after torchvision's transforms tests): the input is not modified in place, the
result's dtype and device follow the documented rules (integers -> float32, 32/64-bit integers ->
float64, floats kept), a batch gives the same bits as its images one by one, an empty batch works,
the output rank follows the input rank ((H, W), (C, H, W), (N, C, H, W)), and non-contiguous or
channels_last input gives the same numbers as contiguous input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def _parts(out: Any) -> list[torch.Tensor]:
    parts = list(out) if isinstance(out, tuple) else [out]
    assert all(isinstance(p, torch.Tensor) for p in parts), [type(p) for p in parts]
    return parts


def _same(a: Any, b: Any) -> None:
    pa, pb = _parts(a), _parts(b)
    assert len(pa) == len(pb)
    for u, v in zip(pa, pb, strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype, (u.shape, v.shape, u.dtype, v.dtype)
        assert torch.equal(u, v), (u - v).abs().max()


def check_contract(
    fn: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    channels_out: int | None = None,
) -> Any:
    """Run ``fn`` on the ``(N, C, H, W)`` image ``x`` and check the contract; returns ``fn(x)``.

    ``channels_out`` is the number of output channels (default: the input's).
    """
    assert x.dim() == 4 and x.shape[0] >= 2, "give a batch of at least two images"
    n, c, h, w = x.shape
    c_out = c if channels_out is None else channels_out
    before = x.clone()
    out = fn(x)
    # not modified in place
    assert torch.equal(x, before)
    parts = _parts(out)
    for p in parts:
        assert p.dtype == expected_dtype(x.dtype), (p.dtype, x.dtype)
        assert p.device == x.device
        assert p.shape[:2] == (n, c_out)
        assert p.shape[-2:] == (h, w)
        # a fresh result, never a view of the input's memory
        assert p.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    # batch == one by one
    one_by_one = [fn(x[i : i + 1]) for i in range(n)]
    for k, p in enumerate(parts):
        _same(p, torch.cat([_parts(o)[k] for o in one_by_one]))
    # empty batch
    for p in _parts(fn(x[:0])):
        assert p.shape == (0, c_out, h, w)
    # rank follows the input: (C, H, W) and (H, W)
    _same(tuple(p[0] for p in parts), tuple(_parts(fn(x[0]))))
    if c == 1 or channels_out is None:
        _same(tuple(p[0, 0] for p in parts), tuple(_parts(fn(x[0, 0]))))
    # layouts: channels_last and a non-contiguous (transposed twice) view
    _same(out, fn(x.to(memory_format=torch.channels_last)))
    strided = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not strided.is_contiguous()
    _same(out, fn(strided))
    wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    _same(out, fn(wide[..., ::2]))
    return out
