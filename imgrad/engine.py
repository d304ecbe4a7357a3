"""The one engine: border extension and separable 1-D correlation by shifted slices.

A stencil is applied as ``out = sum_k taps[k] * f[k : k + n]`` over the border-extended input,
one multiply-add per non-zero tap, in tap order. That is exact for the integer taps of Sobel,
Scharr and Prewitt on integer-valued data, deterministic (no reduction order that depends on the
backend), differentiable, and 20x faster on the CPU than ``conv2d`` with a single-channel 1x3
kernel. The taps may be Python floats or a 1-D tensor (the non-persistent buffers of the
``nn.Module`` wrappers); both give bit-identical results. Eagerly, without autograd, a unit
first tap is folded into the next operation (``x1 - x0`` for [-1, 0, 1]): the same bits, one
pass fewer. :func:`sqrt_rn` is the one square root of every L2 magnitude (reference, fast
path, Canny, tiles).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .operators import Stencil

__all__ = ["BORDERS", "border_index", "check_border", "correlate", "extend", "pad", "sqrt_rn"]

#: Border names and their meaning (``|abcdefgh|`` is the row being extended).
BORDERS: dict[str, str] = {
    "reflect101": "gfedcb|abcdefgh|gfedcba  (OpenCV BORDER_REFLECT_101, numpy 'reflect')",
    "reflect": "fedcba|abcdefgh|hgfedcb  (OpenCV BORDER_REFLECT, numpy 'symmetric')",
    "replicate": "aaaaaa|abcdefgh|hhhhhhh  (OpenCV BORDER_REPLICATE, numpy 'edge')",
    "constant": "vvvvvv|abcdefgh|vvvvvvv  (OpenCV BORDER_CONSTANT with value v)",
    "circular": "cdefgh|abcdefgh|abcdefg  (numpy 'wrap'; OpenCV has none)",
}


def check_border(border: str) -> str:
    """Return the canonical border name or raise ``ValueError`` quoting the bad one."""
    if not isinstance(border, str):
        raise TypeError(f"border must be a str, got {type(border).__name__}")
    key = border.lower()
    if key not in BORDERS:
        raise ValueError(f"unknown border {border!r}; expected one of {', '.join(BORDERS)}")
    return key


def border_index(n: int, before: int, after: int, border: str, device: torch.device):
    """Source index of every position of the extended axis ``[-before, n + after)``."""
    i = torch.arange(-before, n + after, device=device)
    if border == "replicate":
        return i.clamp(0, n - 1)
    if border == "circular":
        return i.remainder(n)
    if border == "reflect101":
        if n == 1:
            return torch.zeros_like(i)
        period = 2 * n - 2
        j = i.remainder(period)
        return torch.where(j < n, j, period - j)
    # reflect (symmetric): the edge sample is repeated.
    period = 2 * n
    j = i.remainder(period)
    return torch.where(j < n, j, period - 1 - j)


#: The border rules ``F.pad`` implements (``reflect101`` is its ``"reflect"``).
_F_PAD_MODES = {"reflect101": "reflect", "replicate": "replicate", "circular": "circular"}


def _f_pad_mode(x: torch.Tensor, sizes: tuple[int, ...], halo: int, border: str) -> str | None:
    """``F.pad``'s mode for extending axes of ``sizes`` by up to ``halo``, or ``None`` where the
    gather of :func:`border_index` must do it.

    ``F.pad`` computes each source index by arithmetic, with no index tensor: eagerly 3-4x faster
    than the gather (both axes of a 4096² image: 20 ms against 85), and compiled the arithmetic
    is inlined into the consumer instead of an indirect load per tap. It takes halos shorter than
    the axis and floating-point data. Its backward on CUDA had no deterministic implementation in
    older torch versions, so differentiable CUDA tensors in deterministic mode keep the gather.
    """
    mode = _F_PAD_MODES.get(border)
    if mode is None or not x.is_floating_point() or halo >= min(sizes):
        return None
    if x.requires_grad and x.device.type != "cpu" and torch.are_deterministic_algorithms_enabled():
        return None
    return mode


def pad(
    x: torch.Tensor,
    dim: int,
    before: int,
    after: int,
    border: str,
    value: float = 0.0,
) -> torch.Tensor:
    """Extend ``x`` along ``dim`` by ``before``/``after`` samples with the named border rule.

    Works for halos larger than the axis (the pattern repeats, as in numpy and OpenCV).
    """
    if before == 0 and after == 0:
        return x
    axis = dim % x.dim()
    if border == "constant":
        widths = [0, 0] * (x.dim() - 1 - axis) + [before, after]
        return F.pad(x, widths, mode="constant", value=value)
    mode = _f_pad_mode(x, (x.shape[axis],), max(before, after), border)
    if mode is not None and axis == x.dim() - 1:
        out = F.pad(x.reshape(-1, 1, x.shape[-1]), [before, after], mode=mode)
        return out.reshape(*x.shape[:-1], out.shape[-1])
    if mode is not None and axis == x.dim() - 2:
        out = F.pad(x.reshape(-1, 1, *x.shape[-2:]), [0, 0, before, after], mode=mode)
        return out.reshape(*x.shape[:-2], *out.shape[-2:])
    n = x.shape[axis]
    if border == "reflect" and max(before, after) <= n:  # mirrored edge slices: 3x the gather
        head = x.narrow(axis, 0, before).flip(axis)
        return torch.cat([head, x, x.narrow(axis, n - after, after).flip(axis)], axis)
    return x.index_select(axis, border_index(n, before, after, border, x.device))


def extend(x: torch.Tensor, halo: int, border: str, value: float = 0.0) -> torch.Tensor:
    """Extend the last two axes of ``x`` by ``halo`` on every side: :func:`pad` on both, in one
    ``F.pad`` where it applies."""
    if border == "constant":
        return F.pad(x, [halo] * 4, mode="constant", value=value)
    mode = _f_pad_mode(x, tuple(x.shape[-2:]), halo, border)
    if mode is None or halo == 0:
        return pad(pad(x, -2, halo, halo, border, value), -1, halo, halo, border, value)
    out = F.pad(x.reshape(-1, 1, *x.shape[-2:]), [halo] * 4, mode=mode)
    return out.reshape(*x.shape[:-2], *out.shape[-2:])


def correlate(
    x: torch.Tensor,
    stencil: Stencil,
    dim: int,
    taps: torch.Tensor | None = None,
    *,
    start: int = 0,
    step: int = 1,
    length: int | None = None,
) -> torch.Tensor:
    """Valid 1-D cross-correlation of an already-extended ``x`` along ``dim``.

    ``out[i] = sum_k taps[k] * x[start + k * step + i]`` for ``i < length`` (by default the valid
    length for ``step`` 1). ``step`` > 1 lets a flattened image be filtered down its columns
    (``step`` = row width), as the fused path does. ``taps`` overrides ``stencil.taps`` with a
    tensor of the same values (module buffers); zero taps are skipped either way, so both paths
    do the same arithmetic.
    """
    n = x.shape[dim] - len(stencil.taps) + 1 if length is None else length
    # Eagerly, accumulating in place saves an allocation per tap; under torch.compile the
    # out-of-place form lets inductor fuse the taps into one loop (in place: 7x slower). Same bits.
    inplace = not torch.compiler.is_compiling()
    # Integer data times integral taps stays integer (exact, and vectorised as integers); a
    # Python float tap would promote the products to float32.
    integral = not x.is_floating_point() and taps is None
    nonzero = [(k, t) for k, t in enumerate(stencil.taps) if t != 0.0]

    def term(k: int) -> torch.Tensor:
        return x.narrow(dim, start + k * step, n)  # f[i + k - origin] for every output i

    def times(k: int, t: float) -> torch.Tensor:
        weight = taps[k] if taps is not None else t
        if integral and float(t).is_integer():
            weight = int(t)
        return term(k) * weight  # a fresh tensor, never a view of the input

    assert nonzero, "a stencil has at least one non-zero tap"
    (k0, t0), rest = nonzero[0], nonzero[1:]
    recording = x.requires_grad and torch.is_grad_enabled()
    if inplace and not recording and taps is None and t0 in (1.0, -1.0) and rest:
        # A unit first tap needs no product of its own: start from the second term and add or
        # subtract the first, the same bits (x + y == y + x, -x + y == y - x, -x - y == -(x + y)
        # in IEEE arithmetic). [-1, 0, 1] is one subtraction, [1, 2, 1] a product and two sums.
        # Not while autograd records: its graph, and so the order in which it sums the input's
        # gradient, would then differ from the modules' (tensor taps), and so would the bits.
        (k1, t1), rest = rest[0], rest[1:]
        second = term(k1) if t1 in (1.0, -1.0) else times(k1, t1)
        if t1 == -1.0:
            out = term(k0) - second if t0 == 1.0 else (term(k0) + second).neg_()
        elif t1 == 1.0:  # second is a view of x
            out = second + term(k0) if t0 == 1.0 else second - term(k0)
        else:
            out = second.add_(term(k0)) if t0 == 1.0 else second.sub_(term(k0))
    else:
        out = times(k0, t0)
    for k, t in rest:
        if taps is None and t == -1.0:  # same bits as + term * -1.0, one op fewer
            out = out.sub_(term(k)) if inplace else out - term(k)
        else:
            addend = term(k) if taps is None and t == 1.0 else times(k, t)
            out = out.add_(addend) if inplace else out + addend
    return out


def sqrt_rn(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Square root, correctly rounded for float32 (IEEE ``sqrtf``, as numpy and CUDA give).

    Eager ``torch.sqrt`` of float32 on the CPU is not: it is 1 ulp off for about a fifth of all
    inputs (measured with this project's torch build). So float32 goes through numpy's square
    root on the CPU when autograd is not recording (as fast as ``torch.sqrt``), and otherwise,
    on any device and under ``torch.compile`` or ``torch.jit.trace`` (the legacy ONNX exporter,
    which would record the numpy result as a constant), through the float64 square root rounded
    to float32, which is always the correctly rounded one (53 >= 2 * 24 + 2 bits). float64 is
    ``torch.sqrt``.

    ``out``, a CPU float32 tensor of ``x``'s shape, receives the numpy root in place of a new
    array when that path is taken (then it is what is returned); otherwise it is left alone.
    """
    if x.dtype != torch.float32:
        return torch.sqrt(x)
    recording = x.requires_grad and torch.is_grad_enabled()
    traced = torch.compiler.is_compiling() or torch.jit.is_tracing()  # numpy: a constant
    if x.device.type == "cpu" and not recording and not traced:
        if out is not None and out.dtype == torch.float32 and out.device.type == "cpu":
            np.sqrt(x.detach().numpy(), out=out.numpy())
            return out
        return torch.from_numpy(np.sqrt(x.detach().numpy()))
    return torch.sqrt(x.double()).to(torch.float32)
