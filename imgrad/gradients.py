"""First and second image derivatives, magnitude and orientation.

Conventions (one place, pinned by ``tests/test_conventions.py``):

- +x points right (increasing column), +y points down (increasing row).
- Stencils are applied as cross-correlation, so a dark-to-bright step from left to right gives
  ``gx > 0`` and a dark-to-bright step from top to bottom gives ``gy > 0``.
- Results come in dimension order, like ``torch.gradient``: ``Gradients(gy, gx)``; use the field
  names to avoid any doubt.
- Angles are ``atan2(gy, gx)``; because +y points down they grow **clockwise** on screen.
- Default border: ``reflect101`` (OpenCV's default; no artificial edge at the border of a ramp is
  *invented*, and a flat image stays exactly 0). Other borders by name, see
  :data:`imgrad.engine.BORDERS`.
- ``normalized=False`` gives raw responses in OpenCV's units (Sobel 3 on a unit ramp gives 8);
  ``normalized=True`` divides by the stencil's gain so that the result is the derivative per pixel
  (or per unit of ``spacing``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from . import _memory, fast
from ._input import Prepared, check_choice, compute_dtype, is_real, native_order, prepare
from ._memory import empty
from .engine import check_border, correlate, extend, sqrt_rn
from .operators import Operator, Stencil, get_operator

__all__ = [
    "Gradients",
    "SecondDerivatives",
    "central_difference",
    "forward_difference",
    "gradient_magnitude",
    "laplacian",
    "magnitude",
    "max_channel",
    "orientation",
    "prewitt",
    "scharr",
    "second_derivatives",
    "sobel",
    "spatial_gradient",
]

COLOR_MODES = ("channels", "luminance", "max")
NORMS = ("l2", "l1", "squared")
#: ITU-R BT.601 luma weights, as used by OpenCV's cvtColor and Pillow's convert("L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class Gradients(NamedTuple):
    """First derivatives in dimension order: ``gy`` (d/d row, +y down), ``gx`` (d/d column)."""

    gy: Any
    gx: Any


class SecondDerivatives(NamedTuple):
    """Second derivatives in dimension order: ``gyy``, ``gxy``, ``gxx``."""

    gyy: Any
    gxy: Any
    gxx: Any


# --------------------------------------------------------------------------- option checks


def _spacing(spacing: float | tuple[float, float], normalized: bool) -> tuple[float, float]:
    """``(sy, sx)`` from a scalar or a pair; spacing is a property of normalised output only."""
    if is_real(spacing):
        pair = (float(spacing), float(spacing))
    elif isinstance(spacing, (tuple, list)) and len(spacing) == 2:
        pair = (float(spacing[0]), float(spacing[1]))
    else:
        raise ValueError(f"spacing must be a positive number or a (sy, sx) pair; got {spacing!r}")
    if not all(s > 0 and math.isfinite(s) for s in pair):
        raise ValueError(f"spacing must be positive and finite; got {spacing!r}")
    if pair != (1.0, 1.0) and not normalized:
        raise ValueError("spacing applies to normalized output; pass normalized=True as well")
    return pair


def luminance(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """BT.601 luma ``(N, 1, H, W)`` of an RGB ``(N, 3, H, W)`` batch, computed in ``dtype``
    (default: ``x``'s): ``(r * 0.299 + g * 0.587) + b * 0.114`` after converting each channel.

    Without autograd recording (and outside ``torch.compile``, tracing and ``torch.func``)
    the same operations run in place in the output (from :func:`imgrad._memory.empty`), on the
    CPU a band of rows of :data:`imgrad._memory.CHUNK_ELEMENTS` at a time with the converted
    channel in a reused :func:`~imgrad._memory.scratch` buffer, instead of a converted copy of
    all three channels and five full-size temporaries: the same bits, a third of the memory,
    and data still in cache. ``gradient_magnitude`` of a uint8 RGB 4096² image took 173-186
    ms with the temporaries; the luma alone now takes 8-9 ms there in a warm process (29-30
    with a whole second plane), on 2 threads of this project's reference machine.
    """
    if x.shape[1] != 3:
        raise ValueError(f"color='luminance' needs 3 channels (RGB); got {x.shape[1]}")
    dtype = x.dtype if dtype is None else dtype
    w_r, w_g, w_b = LUMA_WEIGHTS
    traced = torch.compiler.is_compiling() or torch.jit.is_tracing()
    # under vmap, grad, ...; not asked while dynamo traces, which cannot call it (graph break)
    wrapped = not traced and torch._C._functorch.is_functorch_wrapped_tensor(x)
    if (x.requires_grad and torch.is_grad_enabled()) or traced or wrapped:
        r, g, b = x.to(dtype).unbind(1)
        return (r * w_r + g * w_g + b * w_b).unsqueeze(1)
    n, _, h, w = x.shape
    out = empty((n, 1, h, w), dtype, x.device)
    on_cpu = x.device.type == "cpu"  # a GPU takes one band: chunks would only add launches
    rows = max(1, min(h, _memory.CHUNK_ELEMENTS // max(1, n * w))) if on_cpu else h
    for top in range(0, h, rows):
        k = min(rows, h - top)
        shape = (n, k, w)
        term = (
            _memory.scratch("luminance term", shape, dtype, x.device)
            if on_cpu
            else empty(shape, dtype, x.device)
        )
        luma, rgb = out[:, 0, top : top + k], x[:, :, top : top + k]
        luma.copy_(rgb[:, 0]).mul_(w_r)
        luma.add_(term.copy_(rgb[:, 1]).mul_(w_g))
        luma.add_(term.copy_(rgb[:, 2]).mul_(w_b))
    return out


# --------------------------------------------------------------------------- the engine calls


def _along(
    xp: torch.Tensor, stencil: Stencil, dim: int, halo: int, taps: torch.Tensor | None
) -> torch.Tensor:
    """Apply ``stencil`` along ``dim`` of an array extended by ``halo`` on each side."""
    n = xp.shape[dim] - 2 * halo
    window = xp.narrow(dim, halo - stencil.before, n + stencil.before + stencil.after)
    return correlate(window, stencil, dim, taps)


Taps = Mapping[str, torch.Tensor]
"""Tensor copies of an operator's taps by field name (``derivative``, ``smoothing``, ``second``):
the buffers of the modules. ``None`` uses the operator's Python numbers; both give the same bits."""


def _extended_apply(
    x: torch.Tensor,
    halo: int,
    border: str,
    value: float,
    derive: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, ...]:
    """``derive(extend(x, halo, ...))``: ``derive`` maps an input extended by ``halo`` to outputs
    ``halo`` smaller on each side.

    While ``torch.compile`` traces (a model of yours that holds these operators), the interior is
    derived from ``x`` itself and only the four bands of ``halo`` rows and columns from the
    extended image, joined by ``cat``: the compiler then spends the border rule's index arithmetic
    on the bands alone, not on every tap of every pixel. Every pixel gets the same arithmetic, so
    the same bits; a compiled ``imgrad.Sobel()`` on 4 x 1024² takes 4.2-4.7 ms instead of 6.5 on
    the reference machine. Eagerly the one extended copy is cheaper than the extra calls.
    """
    h, w = x.shape[-2:]
    if not torch.compiler.is_compiling() or min(h, w) <= 2 * halo:
        return derive(extend(x, halo, border, value))
    xp = extend(x, halo, border, value)
    top, bottom = derive(xp[..., : 3 * halo, :]), derive(xp[..., h - halo :, :])
    left = derive(xp[..., halo : h + halo, : 3 * halo])
    right = derive(xp[..., halo : h + halo, w - halo :])
    parts = zip(top, left, derive(x), right, bottom, strict=True)
    return tuple(torch.cat([a, torch.cat([le, i, ri], -1), b], -2) for a, le, i, ri, b in parts)


def first_derivatives(
    x: torch.Tensor, op: Operator, border: str, value: float = 0.0, taps: Taps | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``(gy, gx)`` of an ``(N, C, H, W)`` float tensor."""
    halo = op.radius
    gy, gx = _extended_apply(
        x, halo, border, value, lambda xp: first_derivatives_extended(xp, op, halo, taps)
    )
    return gy, gx


def first_derivatives_extended(
    xp: torch.Tensor, op: Operator, halo: int, taps: Taps | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``(gy, gx)`` of an input already extended by ``halo`` on every side.

    The output is ``halo`` smaller on each side. Tiled processing uses this on windows cut from
    a larger image, so that each tile does exactly the arithmetic of the whole-image call.
    """
    t = taps or {}
    d, s = t.get("derivative"), t.get("smoothing")
    # gy = smooth_x(derivative_y(f)),  gx = smooth_y(derivative_x(f))
    gy = _along(_along(xp, op.derivative, -2, halo, d), op.smoothing, -1, halo, s)
    gx = _along(_along(xp, op.derivative, -1, halo, d), op.smoothing, -2, halo, s)
    return gy, gx


def second_derivatives_raw(
    x: torch.Tensor, op: Operator, border: str, value: float = 0.0, taps: Taps | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw ``(gyy, gxy, gxx)`` of an ``(N, C, H, W)`` float tensor."""
    halo = op.radius
    gyy, gxy, gxx = _extended_apply(
        x, halo, border, value, lambda xp: second_derivatives_extended(xp, op, halo, taps)
    )
    return gyy, gxy, gxx


def second_derivatives_extended(
    xp: torch.Tensor, op: Operator, halo: int, taps: Taps | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw ``(gyy, gxy, gxx)`` of an input already extended by ``halo`` on every side."""
    if op.second is None:
        raise ValueError(f"{op.name} has no second-derivative stencil; use 'sobel' or 'central'")
    t = taps or {}
    d, s, s2 = t.get("derivative"), t.get("smoothing"), t.get("second")
    gyy = _along(_along(xp, op.second, -2, halo, s2), op.smoothing, -1, halo, s)
    gxx = _along(_along(xp, op.second, -1, halo, s2), op.smoothing, -2, halo, s)
    gxy = _along(_along(xp, op.derivative, -1, halo, d), op.derivative, -2, halo, d)
    return gyy, gxy, gxx


def max_channel(
    gy: torch.Tensor, gx: torch.Tensor, norm: str = "l2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, keep the channel whose gradient has the largest ``norm`` (first one on ties).

    This is how OpenCV's Canny treats colour images. Inputs ``(N, C, H, W)``, outputs
    ``(N, 1, H, W)``.
    """
    score = vector_norm(gy, gx, check_choice(norm, "norm", NORMS))
    index = score.argmax(dim=1, keepdim=True)
    return gy.gather(1, index), gx.gather(1, index)


@dataclass(frozen=True)
class GradientSpec:
    """Validated options of a derivative call, shared by the functions and the modules."""

    op: Operator
    border: str
    border_value: float
    normalized: bool
    spacing: tuple[float, float]
    color: str

    @classmethod
    def build(
        cls,
        operator: str = "sobel",
        ksize: int = 3,
        border: str = "reflect101",
        border_value: float = 0.0,
        normalized: bool = False,
        spacing: float | tuple[float, float] = 1.0,
        color: str = "channels",
    ) -> GradientSpec:
        if not isinstance(normalized, bool):
            raise TypeError(f"normalized must be True or False, got {normalized!r}")
        return cls(
            get_operator(operator, ksize),
            check_border(border),
            float(border_value),
            normalized,
            _spacing(spacing, normalized),
            check_choice(color, "color", COLOR_MODES),
        )

    def prepare(self, image: Any, nan_policy: str) -> Prepared:
        luma = self.color == "luminance"  # converts while it computes: no converted RGB copy
        # Any size from 1x1 up: a side shorter than the stencil's radius is extended by the
        # border rule repeated (a one-pixel side reflects onto itself), as OpenCV does.
        prepared = prepare(image, nan_policy=nan_policy, cast=not luma)
        if luma:
            prepared.image = luminance(prepared.image, compute_dtype(prepared.image.dtype))
        return prepared


def first_order(
    image: Any,
    spec: GradientSpec,
    nan_policy: str = "propagate",
    taps: Taps | None = None,
    norm: str | None = None,
) -> Any:
    """The body of :func:`spatial_gradient` and :class:`imgrad.SpatialGradient`, and with a
    ``norm`` that of the reference path of :func:`gradient_magnitude` and of
    :class:`imgrad.GradientMagnitude`: the norm of the unrounded ``gy``, ``gx`` in the compute
    dtype, rounded once to the output dtype (half precision)."""
    prepared = spec.prepare(image, nan_policy)
    raw = first_derivatives(prepared.image, spec.op, spec.border, spec.border_value, taps)
    gy, gx = finish_first(*raw, spec)
    if norm is not None:
        return prepared.restore(vector_norm(gy, gx, norm))
    return Gradients(prepared.restore(gy), prepared.restore(gx))


def finish_first(
    gy: torch.Tensor, gx: torch.Tensor, spec: GradientSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw first derivatives → the spec's colour reduction and units (shared with tiling)."""
    if spec.color == "max":
        gy, gx = max_channel(gy, gx)
    if spec.normalized:
        gain = spec.op.derivative.moment(1) * spec.op.smoothing.moment(0)
        gy, gx = gy / (gain * spec.spacing[0]), gx / (gain * spec.spacing[1])
    return gy, gx


def second_order(
    image: Any, spec: GradientSpec, nan_policy: str = "propagate", taps: Taps | None = None
) -> SecondDerivatives:
    """The body of :func:`second_derivatives` and :class:`imgrad.SecondDerivatives`."""
    if spec.color == "max":
        raise ValueError("color='max' is defined for first derivatives only")
    if spec.op.second is None:
        raise ValueError(f"{spec.op.name} has no second-derivative stencil; use sobel or central")
    prepared = spec.prepare(image, nan_policy)
    x = prepared.image
    raw = second_derivatives_raw(x, spec.op, spec.border, spec.border_value, taps)
    return SecondDerivatives(*(prepared.restore(g) for g in finish_second(*raw, spec)))


def finish_second(
    gyy: torch.Tensor, gxy: torch.Tensor, gxx: torch.Tensor, spec: GradientSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw second derivatives → the spec's units (shared with tiling)."""
    if not spec.normalized:
        return gyy, gxy, gxx
    assert spec.op.second is not None, "checked before the derivatives were taken"
    sy, sx = spec.spacing
    pure = spec.op.second.moment(2) * spec.op.smoothing.moment(0)
    mixed = spec.op.derivative.moment(1) ** 2
    return gyy / (pure * sy * sy), gxy / (mixed * sy * sx), gxx / (pure * sx * sx)


# --------------------------------------------------------------------------- public functions


def spatial_gradient(
    image: Any,
    operator: str = "sobel",
    *,
    ksize: int = 3,
    border: str = "reflect101",
    border_value: float = 0.0,
    normalized: bool = False,
    spacing: float | tuple[float, float] = 1.0,
    color: str = "channels",
    nan_policy: str = "propagate",
) -> Gradients:
    """First derivatives ``Gradients(gy, gx)`` of an image with a named operator.

    Parameters
    ----------
    image
        Tensor, array or PIL image shaped ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``.
    operator
        ``"sobel"`` (``ksize`` 1, 3, 5 or 7), ``"scharr"``, ``"prewitt"``, ``"central"``
        (``(f[i+1] - f[i-1]) / 2``) or ``"forward"`` (``f[i+1] - f[i]``).
    border
        ``"reflect101"`` (default, OpenCV's), ``"reflect"``, ``"replicate"``, ``"constant"``
        (filled with ``border_value``) or ``"circular"``. Images of any size from 1x1 work: a
        side shorter than the stencil's radius repeats the rule (a one-pixel side reflects onto
        itself), with OpenCV's results.
    normalized
        ``False``: raw responses in OpenCV's units. ``True``: true derivative per pixel, divided
        further by ``spacing`` (a scalar or ``(sy, sx)``).
    color
        ``"channels"`` (each channel on its own), ``"luminance"`` (BT.601 luma of RGB first) or
        ``"max"`` (per pixel, the channel with the largest L2 magnitude, as OpenCV's Canny).
    nan_policy
        ``"propagate"`` (NaN spreads to the stencil's neighbourhood) or ``"raise"``.

    Returns
    -------
    Gradients
        ``(gy, gx)``, each with the input's rank (C becomes 1 for ``luminance``/``max``), as
        tensors or arrays like the input. Integer inputs give float32 (float64 for 32/64-bit
        integers); float16/bfloat16 are computed in float32 and rounded once.
    """
    spec = GradientSpec.build(operator, ksize, border, border_value, normalized, spacing, color)
    return first_order(image, spec, nan_policy)


def sobel(image: Any, ksize: int = 3, **options: Any) -> Gradients:
    """Sobel derivatives (``ksize`` 1, 3, 5 or 7); see :func:`spatial_gradient` for options."""
    return spatial_gradient(image, "sobel", ksize=ksize, **options)


def scharr(image: Any, **options: Any) -> Gradients:
    """Scharr derivatives (smoothing [3, 10, 3]); see :func:`spatial_gradient` for options."""
    return spatial_gradient(image, "scharr", **options)


def prewitt(image: Any, **options: Any) -> Gradients:
    """Prewitt derivatives (smoothing [1, 1, 1]); see :func:`spatial_gradient` for options."""
    return spatial_gradient(image, "prewitt", **options)


def central_difference(image: Any, **options: Any) -> Gradients:
    """``(f[i+1] - f[i-1]) / 2`` along each axis; see :func:`spatial_gradient` for options."""
    return spatial_gradient(image, "central", **options)


def forward_difference(image: Any, **options: Any) -> Gradients:
    """``f[i+1] - f[i]`` along each axis; see :func:`spatial_gradient` for options."""
    return spatial_gradient(image, "forward", **options)


def second_derivatives(
    image: Any,
    operator: str = "sobel",
    *,
    ksize: int = 3,
    border: str = "reflect101",
    border_value: float = 0.0,
    normalized: bool = False,
    spacing: float | tuple[float, float] = 1.0,
    color: str = "channels",
    nan_policy: str = "propagate",
) -> SecondDerivatives:
    """Second derivatives ``(gyy, gxy, gxx)`` through the same engine.

    ``gxx`` applies the operator's second-difference taps along x and its smoothing along y
    (OpenCV ``Sobel(dx=2, dy=0)``), ``gxy`` the first-derivative taps along both axes
    (``Sobel(dx=1, dy=1)``). Operators: ``"sobel"`` (any ``ksize``) and ``"central"``.
    ``normalized=True`` gives true second derivatives per pixel² (or per unit of ``spacing``²).
    ``color`` is ``"channels"`` or ``"luminance"``.
    """
    spec = GradientSpec.build(operator, ksize, border, border_value, normalized, spacing, color)
    return second_order(image, spec, nan_policy)


def laplacian(
    image: Any,
    ksize: int = 1,
    *,
    border: str = "reflect101",
    border_value: float = 0.0,
    normalized: bool = False,
    spacing: float | tuple[float, float] = 1.0,
    color: str = "channels",
    nan_policy: str = "propagate",
) -> Any:
    """Laplacian ``gxx + gyy`` with Sobel second derivatives, as ``cv2.Laplacian(ksize)``.

    ``ksize=1`` is the 5-point stencil ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``; ``ksize=3`` is
    ``[[2, 0, 2], [0, -8, 0], [2, 0, 2]]``. ``normalized=True`` gives the true Laplacian per
    pixel² (or per unit of ``spacing``²).
    """
    spec = GradientSpec.build("sobel", ksize, border, border_value, normalized, spacing, color)
    gyy, _, gxx = second_order(image, spec, nan_policy)
    return gxx + gyy


# --------------------------------------------------------------------------- magnitude, angle


def vector_norm(gy: torch.Tensor, gx: torch.Tensor, norm: str) -> torch.Tensor:
    """The ``norm`` of the gradient vectors, in the dtype of ``gy`` and ``gx``."""
    if norm == "l1":
        return gy.abs() + gx.abs()
    squared = gy * gy + gx * gx
    if norm == "squared":
        return squared
    # Exact forward (sqrt(0) = 0, no eps) and a finite backward: where the gradient is 0 the
    # sqrt is taken of 1 and discarded, so d/dg is 0 there instead of NaN. NaN stays NaN.
    zero = squared == 0
    root = sqrt_rn(torch.where(zero, torch.ones_like(squared), squared))
    return torch.where(zero, torch.zeros_like(squared), root)


def _as_pair(gradients: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if not isinstance(gradients, (tuple, list)) or len(gradients) != 2:
        raise TypeError("expected Gradients(gy, gx) or a (gy, gx) pair of tensors/arrays")
    gy, gx = gradients
    is_numpy = isinstance(gy, np.ndarray)
    container = np.ndarray if is_numpy else torch.Tensor
    if not (isinstance(gy, container) and isinstance(gx, container)):
        raise TypeError(
            f"gy and gx must be both tensors or both numpy arrays; got {type(gy).__name__} "
            f"and {type(gx).__name__}"
        )
    if is_numpy:
        gy, gx = torch.from_numpy(native_order(gy)), torch.from_numpy(native_order(gx))
    if gy.shape != gx.shape:
        raise ValueError(f"gy and gx shapes differ: {tuple(gy.shape)} vs {tuple(gx.shape)}")
    if not (gy.is_floating_point() and gx.is_floating_point()):
        raise TypeError(f"gy and gx must be floating point; got {gy.dtype} and {gx.dtype}")
    return gy, gx, is_numpy


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half precision is widened: 256**2 already overflows float16."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def magnitude(gradients: Any, norm: str = "l2") -> Any:
    """Gradient magnitude: ``"l2"`` sqrt(gy² + gx²), ``"l1"`` \\|gy\\| + \\|gx\\|, or ``"squared"``.

    The L2 magnitude is exact (0 on a flat image, no eps; the correctly rounded square root) and
    its gradient is finite everywhere: 0 where the gradient vector is 0. It is computed without
    scaling, as OpenCV's ``magnitude``: float32 squares overflow above about 1.8e19 and vanish
    below about 1e-23. Half-precision inputs are computed in float32 and rounded once to their
    dtype.
    """
    check_choice(norm, "norm", NORMS)
    gy, gx, is_numpy = _as_pair(gradients)
    out = vector_norm(_wide(gy), _wide(gx), norm).to(gy.dtype)
    return out.numpy(force=True) if is_numpy else out


def orientation(gradients: Any, *, degrees: bool = False, signed: bool = False) -> Any:
    """Gradient direction ``atan2(gy, gx)``, exact and strictly inside its stated range.

    ``signed=False`` (default) gives ``[0, 2π)`` (``[0, 360)`` with ``degrees=True``) like
    OpenCV's ``phase``; ``signed=True`` gives ``(−π, π]`` like ``atan2`` but with ``−π`` folded to
    ``π``. A zero vector (of either sign) gives 0. Because +y points down, angles grow
    clockwise on screen: a gradient pointing down the image is +90°.

    The angle is computed in float64 and rounded once to the input's dtype, so float32 and half
    results do not depend on where a pixel sits in memory (torch's vectorised and scalar float32
    ``atan2`` differ by an ulp), which keeps tiled results equal to whole-image ones. A float64
    result (float64 or 32/64-bit integer gradients) is torch's float64 ``atan2``, whose vector
    and scalar code also differ by up to an ulp: a tiled float64 angle is within 1 ulp of the
    whole-image one (and so are float64 angles of a batch and of its images one by one, or of
    a channels_last and a contiguous input).

    Limitations: exported to ONNX, the float64 angle does not run in onnxruntime (1.32), which
    has no float64 ``Atan`` kernel.
    """
    gy, gx, is_numpy = _as_pair(gradients)
    wide = torch.float32 if gy.device.type == "mps" else torch.float64  # MPS has no float64
    y, x = gy.to(wide), gx.to(wide)
    angle = torch.atan2(y, x)
    zero = (y == 0) & (x == 0)
    full = torch.pi if signed else 2 * torch.pi
    scale = 180 / math.pi if degrees else 1.0
    if signed:
        angle = torch.where(angle <= -torch.pi, torch.full_like(angle, torch.pi), angle)
    else:
        angle = torch.where(angle < 0, angle + 2 * torch.pi, angle)
    angle = angle * scale
    if signed:
        top = torch.tensor(full * scale, dtype=angle.dtype, device=angle.device)
        angle = angle.clamp(max=top)
    angle = torch.where(zero, torch.zeros_like(angle), angle) + 0.0  # + 0.0 turns -0.0 into 0
    out = angle.to(gy.dtype)
    if not signed:
        # rounding (-1e-30 rad + 2π == 2π, or 359.99 rounded to float16 == 360) may land on the
        # open end: step inside, in the output dtype so that half precision stays inside too.
        top = torch.tensor(full * scale, dtype=out.dtype, device=out.device)
        out = torch.where(out >= top, torch.nextafter(top, torch.zeros_like(top)), out)
    return out.numpy(force=True) if is_numpy else out


def gradient_magnitude(
    image: Any,
    operator: str = "sobel",
    *,
    norm: str = "l2",
    nan_policy: str = "propagate",
    **options: Any,
) -> Any:
    """``magnitude(spatial_gradient(image, operator, **options), norm)`` in one call.

    Half-precision input (float16, bfloat16) is computed in float32 and rounded once at the end,
    where the two-call form rounds ``gy`` and ``gx`` to half before the magnitude; for every
    other dtype the two forms give the same bits.

    Without autograd (no input that requires grad, or grad mode off) this runs the fused path of
    :mod:`imgrad.fast`: one pass over the image, no full-size temporaries, the same bits (small
    images run eagerly take the reference path, which is faster for them).
    ``color="luminance"`` takes it too (after one pass to make the luma image, which the
    reference path then reuses if it is taken instead); ``color="max"`` and
    ``nan_policy="raise"`` take the reference path.
    """
    check_choice(norm, "norm", NORMS)
    spec = GradientSpec.build(operator, **options)
    if spec.color == "max" or nan_policy != "propagate":
        return first_order(image, spec, nan_policy, norm=norm)
    divisors = None
    if spec.normalized:
        gain = spec.op.derivative.moment(1) * spec.op.smoothing.moment(0)
        divisors = (gain * spec.spacing[0], gain * spec.spacing[1])
    source, finish = image, None
    if spec.color == "luminance":
        prepared = spec.prepare(image, nan_policy)
        source, finish = prepared.image, prepared.restore
    plan = fast.plan_for(source, spec.op, norm, divisors)
    if plan is not None and fast.worthwhile(source):
        result = fast.gradient_magnitude(source, plan, spec.border, spec.border_value)
        return finish(result) if finish is not None else result
    if finish is None:
        return first_order(image, spec, nan_policy, norm=norm)
    # the luma image (N, 1, H, W) in the compute dtype, rounded once to the output dtype at the end
    return finish(first_order(source, replace(spec, color="channels"), nan_policy, norm=norm))
