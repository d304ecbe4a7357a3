"""Drop-in replacements for ``torch.gradient`` and ``torchmetrics``' ``image_gradients``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from ._input import is_real, prepare
from ._memory import CHUNK_ELEMENTS, empty
from .engine import correlate
from .gradients import Gradients
from .operators import get_operator

__all__ = ["gradient", "image_gradients"]


def _dims(t: torch.Tensor, dim: int | Sequence[int] | None) -> list[int]:
    if dim is None:
        return list(range(t.dim()))
    dims = [dim] if isinstance(dim, int) else list(dim)
    wrapped = []
    for d in dims:
        if not isinstance(d, int) or not -t.dim() <= d < t.dim():
            raise ValueError(f"dim {d!r} is out of range for a tensor of rank {t.dim()}")
        wrapped.append(d % t.dim())
    if len(set(wrapped)) != len(wrapped):
        raise ValueError(f"dim {dim!r} names a dimension twice")
    return wrapped


def _is_number(value: Any) -> bool:
    """A real or complex Python or numpy scalar, bools excluded (torch.gradient's ``Scalar``)."""
    return is_real(value) or isinstance(value, (complex, np.complexfloating))


def _spacings(t: torch.Tensor, spacing: Any, dims: list[int]) -> list[Any]:
    """One entry per dim: a Python number (uniform step) or a 1-D coordinate tensor."""
    if spacing is None:  # torch.gradient's default
        return [1] * len(dims)
    if _is_number(spacing):
        return [_python_number(spacing)] * len(dims)
    if isinstance(spacing, torch.Tensor) and spacing.dim() == 0:
        return [spacing.item()] * len(dims)
    if not isinstance(spacing, (list, tuple)):
        raise TypeError(
            f"spacing must be a number or a list of numbers or 1-D tensors; got {spacing!r}"
        )
    if len(spacing) != len(dims):
        raise ValueError(
            f"spacing has {len(spacing)} entries but {len(dims)} dimension(s) are differentiated"
        )
    for d, s in zip(dims, spacing, strict=True):
        if isinstance(s, torch.Tensor) and s.dim() > 0 and s.device != t.device:
            # torch.gradient's check and words; copying them here would hide the mistake
            # (and a meta tensor cannot be copied at all)
            raise ValueError(
                f"gradient expected each tensor to be on the same device: the input is on "
                f"{t.device} but the coordinates for dim {d} are on {s.device}"
            )
    out: list[Any] = []
    for d, s in zip(dims, spacing, strict=True):
        if isinstance(s, torch.Tensor) and s.dim() == 1:
            if s.numel() != t.shape[d]:
                raise ValueError(
                    f"coordinates for dim {d} have {s.numel()} entries but the input has "
                    f"{t.shape[d]} samples along it"
                )
            out.append(s)
        elif isinstance(s, torch.Tensor) and s.dim() == 0:
            out.append(s.item())
        elif isinstance(s, torch.Tensor):
            raise ValueError(
                f"spacing for dim {d} must be a number or a 1-D tensor; got a {s.dim()}-D tensor"
            )
        elif _is_number(s):
            out.append(_python_number(s))
        else:
            raise TypeError(f"spacing for dim {d} must be a number or a 1-D tensor; got {s!r}")
    return out


def _python_number(value: Any) -> Any:
    """A numpy scalar as the Python number torch.gradient would be given."""
    return value.item() if isinstance(value, np.generic) else value


def _autograd_free(t: torch.Tensor) -> bool:
    """Whether ``t`` may be read by ``out=`` operations: no autograd of any kind sees it.

    ``out=`` functions refuse inputs that require grad (reverse mode) or carry a tangent
    (forward mode), and outputs allocated here would escape torch.func's transforms.
    """
    if type(t) is not torch.Tensor:  # subclasses: their own dispatch
        return False
    if t.requires_grad and torch.is_grad_enabled():
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(t):  # vmap, grad, ...
        return False
    return fwAD.unpack_dual(t).tangent is None


def _uniform(f: torch.Tensor, d: int, h: Any, edge_order: int) -> torch.Tensor:
    """``torch.gradient`` along ``d`` with a uniform step ``h``: its operations, so its bits.

    Without autograd, written into one preallocated output instead of concatenated
    (``torch.cat`` copies it all once more), and the interior chunk by chunk, so that its
    three passes (subtract, ``/ h``, ``/ 2``) run on data still in cache. With autograd (or a
    complex step for real input), the same operations out of place, as torch.gradient does
    them, so that the result is differentiable.
    """
    n = f.shape[d]

    def s(start: int, stop: int | None = None) -> torch.Tensor:
        stop = n if stop is None else (stop if stop >= 0 else n + stop)
        start = start if start >= 0 else n + start
        return f.narrow(d, start, stop - start)

    if edge_order == 1:
        first = (s(1, 2) - s(0, 1)) / h  # out[0] = (f[1] - f[0]) / h
        last = (s(-1) - s(-2, -1)) / h  # out[-1] = (f[-1] - f[-2]) / h
    else:
        # out[0] = (-3 f[0] + 4 f[1] - f[2]) / 2h ;  out[-1] = (f[-3] - 4 f[-2] + 3 f[-1]) / 2h
        first = (s(0, 1) * -1.5 + s(1, 2) * 2 - s(2, 3) / 2) / h
        last = (s(-3, -2) / 2 + s(-2, -1) * -2 + s(-1) * 1.5) / h
    if first.dtype != f.dtype or not _autograd_free(f):
        # out[1:-1] = (f[2:] - f[:-2]) / h / 2, as torch.gradient computes it
        centre = (s(2) - s(0, -2)) / h / 2
        return torch.cat([first, centre, last], dim=d)

    out = empty(tuple(f.shape), f.dtype, f.device)
    # out[1:-1] = (f[2:] - f[:-2]) / h / 2, in chunks along dim 0 (overlapping by 2 if d is 0)
    size = f.shape[0] - (2 if d == 0 else 0)
    step = max(1, CHUNK_ELEMENTS // max(1, f.numel() // max(1, f.shape[0])))
    for start in range(0, size, step):
        k = min(step, size - start)
        if d == 0:  # out[start + 1 : start + 1 + k] from f[start : start + k + 2]
            src, dst, lo = f.narrow(0, start, k + 2), out.narrow(0, start + 1, k), 0
        else:
            src, dst, lo = f.narrow(0, start, k), out.narrow(0, start, k), 1
        m = src.shape[d] - 2
        centre = dst.narrow(d, lo, m)
        torch.sub(src.narrow(d, 2, m), src.narrow(d, 0, m), out=centre)
        centre.div_(h).div_(2)
    out.narrow(d, 0, 1).copy_(first)
    out.narrow(d, n - 1, 1).copy_(last)
    return out


def _coordinates(f: torch.Tensor, d: int, x: torch.Tensor, edge_order: int) -> torch.Tensor:
    n = f.shape[d]
    shape = [1] * f.dim()
    shape[d] = n - 2
    if not (x.is_floating_point() or x.is_complex()):
        # integer steps in int64: torch.gradient takes them in the coordinates' dtype, where
        # uint8 3 -> 2 is a step of +255 and int8 -1 -> 127 one of -128; the values are the
        # same wherever that does not wrap
        x = x.long()
    dx = x.diff()
    hl, hr = dx[:-1], dx[1:]
    # out[i] = a f[i-1] + b f[i] + c f[i+1] with hl = x[i] - x[i-1], hr = x[i+1] - x[i]
    a = (-hr / (hl * (hl + hr))).reshape(shape)
    b = ((hr - hl) / (hl * hr)).reshape(shape)
    c = (hl / (hr * (hl + hr))).reshape(shape)
    center = a * f.narrow(d, 0, n - 2) + b * f.narrow(d, 1, n - 2) + c * f.narrow(d, 2, n - 2)
    f0, f1 = f.narrow(d, 0, 1), f.narrow(d, 1, 1)
    g2, g1 = f.narrow(d, n - 2, 1), f.narrow(d, n - 1, 1)
    if edge_order == 1:  # n may be 2 here: no f[2] / f[n-3]
        first = (f1 - f0) / dx[0]
        last = (g1 - g2) / dx[-1]
    else:
        f2, g3 = f.narrow(d, 2, 1), f.narrow(d, n - 3, 1)
        h0, h1 = dx[0], dx[1]
        first = (
            -(2.0 * h0 + h1) / (h0 * (h0 + h1)) * f0
            + (h0 + h1) / (h0 * h1) * f1
            + (-h0) / (h1 * (h0 + h1)) * f2
        )
        h1, h0 = dx[-1], dx[-2]
        last = (
            h1 / (h0 * (h1 + h0)) * g3
            + -(h1 + h0) / (h1 * h0) * g2
            + (2 * h1 + h0) / (h1 * (h1 + h0)) * g1
        )
    return torch.cat([first, center, last], dim=d)


def gradient(
    input: torch.Tensor,
    *,
    spacing: Any = 1,
    dim: int | Sequence[int] | None = None,
    edge_order: int = 1,
) -> tuple[torch.Tensor, ...]:
    """``torch.gradient`` with the same arguments, results and dtype rules, plus checks.

    Second-order accurate central differences inside, first- or second-order one-sided
    differences at the ends (``edge_order``), for tensors of any rank. ``spacing`` is a number
    (real or complex; ``None`` means 1), one number per differentiated dim, or one 1-D
    coordinate tensor per dim (non-uniform steps); numbers and tensors may be mixed in one
    list. Returns one tensor per dim, in dimension order. Differentiable (reverse and forward
    mode, to any order) with respect to ``input`` and to coordinate tensors.

    Where ``torch.gradient`` silently returns wrong numbers for coordinate tensors whose length
    differs from the input's size along that dim, this raises ``ValueError``; coordinates on
    another device than the input raise ``ValueError`` (torch: RuntimeError). uint8 and bool
    inputs raise ``TypeError`` (torch: RuntimeError); other integer inputs give float32, or
    the coordinate tensors' dtype where that is wider (float64 coordinates give float64), as in
    ``torch.gradient``. Differences from ``torch.gradient`` and ``numpy.gradient`` are listed
    in ``docs/gradient.md``.

    Notes
    -----
    With steps ``hl = x[i] - x[i-1]`` and ``hr = x[i+1] - x[i]`` the interior formula is exact
    for quadratics: ``f'(x_i) ≈ -hr/(hl(hl+hr)) f[i-1] + (hr-hl)/(hl hr) f[i] + hl/(hr(hl+hr))
    f[i+1]``; for ``hl = hr = h`` it is ``(f[i+1] - f[i-1]) / 2h``.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dtype in (torch.uint8, torch.bool):
        raise TypeError(f"gradient does not support {input.dtype} input (as torch.gradient)")
    if edge_order not in (1, 2):
        raise ValueError(f"edge_order must be 1 or 2, got {edge_order!r}")
    dims = _dims(input, dim)
    spacings = _spacings(input, spacing, dims)
    f = input if input.is_floating_point() or input.is_complex() else input.float()
    out = []
    for d, h in zip(dims, spacings, strict=True):
        if input.shape[d] < edge_order + 1:
            raise ValueError(
                f"gradient needs at least edge_order + 1 = {edge_order + 1} samples along dim "
                f"{d}; got {input.shape[d]}"
            )
        if isinstance(h, torch.Tensor):
            # torch multiplies integer input by the coefficients directly, so it is computed in
            # the coordinates' floating dtype (float64 coordinates: float64), not in float32.
            wide = h.is_floating_point() or h.is_complex()
            g = input.to(h.dtype) if f is not input and wide else f
            out.append(_coordinates(g, d, h, edge_order))
        else:
            if torch.result_type(f, h) == torch.complex32:
                raise TypeError(
                    f"gradient does not support a complex spacing for {f.dtype} input: "
                    "torch has no complex32 arithmetic (torch.gradient: NotImplementedError)"
                )
            out.append(_uniform(f, d, h, edge_order))
    return tuple(out)


def image_gradients(img: Any) -> Gradients:
    """``torchmetrics.functional.image_gradients`` without the integer wrap-around.

    Returns ``(dy, dx)`` with ``dy[..., i, :] = img[..., i + 1, :] - img[..., i, :]`` and the last
    row of ``dy`` (last column of ``dx``) equal to 0. torchmetrics keeps the input dtype, so on
    uint8 ``0 - 255`` wraps to 1; here integer inputs are computed and returned in floating
    point (8- and 16-bit integers in float32, 32- and 64-bit ones in float64, as everywhere in
    imgrad; floats keep their dtype), so the difference is -255. Accepts any layout
    :func:`imgrad.spatial_gradient` accepts, not only ``(N, C, H, W)``.
    """
    prepared = prepare(img, min_size=1)
    x = prepared.image
    forward = get_operator("forward").derivative
    # replicate: the appended last row equals the last row, so its forward difference is 0
    dy = correlate(torch.cat([x, x[..., -1:, :]], dim=-2), forward, -2)
    dx = correlate(torch.cat([x, x[..., -1:]], dim=-1), forward, -1)
    return Gradients(prepared.restore(dy), prepared.restore(dx))
