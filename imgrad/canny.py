"""Canny edge detection, equal to OpenCV's ``cv2.Canny`` pixel for pixel on 8-bit images.

Pipeline (one core shared by :func:`canny` and :class:`Canny`):

1. optional Gaussian blur (``sigma``; none by default, as OpenCV), border ``reflect101``;
2. Sobel ``ksize`` 3, 5 or 7 with border ``replicate`` (OpenCV's Canny);
3. per-channel magnitude ``|gx| + |gy|`` (L1, default) or ``gx² + gy²`` (``l2gradient``: the
   thresholds are squared instead of taking a square root, as OpenCV does); colour images keep,
   per pixel, the channel with the largest magnitude (the first one on ties), or work on the
   BT.601 luminance;
4. non-maximum suppression in four sectors split at 22.5°, decided in exact arithmetic with
   OpenCV's fixed-point ``tan(22.5°)`` (:func:`imgrad.thresholds.nms_keep`);
5. double threshold, strict: weak ``m > low``, strong ``m > high`` (swapped if ``low > high``);
6. 8-connected hysteresis by exact connected-component labelling
   (:func:`imgrad.thresholds.hysteresis`).

OpenCV parity (uint8 input, no ``sigma``): OpenCV computes Sobel 7 as ``round(g / 16)`` in int16
and divides the thresholds by 16; in L2 mode it clamps the thresholds to 32767 before squaring;
all of that is reproduced, so the edge maps agree on every pixel (checked on gray and colour
photographs for ksize 3, 5, 7 and both norms in ``tests/test_canny.py``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._compile import CompilePolicy, inductor_options, own_code, standalone
from ._input import check_choice, compute_dtype, is_real, prepare, to_tensor
from ._memory import scratch
from .engine import correlate, pad, sqrt_rn
from .gradients import first_derivatives_extended, luminance, orientation
from .operators import Operator, Stencil, get_operator
from .thresholds import hysteresis_grid, index_dtype, nms_keep, otsu_threshold

__all__ = ["Canny", "CannyResult", "canny", "gaussian_stencil"]

COLORS = ("max", "luminance")
THRESHOLD_MODES = ("absolute", "relative", "quantile")
#: Largest integer every float32 holds exactly.
_FLOAT32_EXACT = 2.0**24
#: Largest absolute value of integer dtypes whose Sobel responses are kept exact.
_INT_RANGE = {
    torch.uint8: 255,
    torch.int8: 128,
    torch.uint16: 65535,
    torch.int16: 32768,
}


class CannyResult(NamedTuple):
    """``edges`` (bool, C = 1), the suppressed ``magnitude`` and the gradient ``orientation``.

    ``magnitude`` is the L1 or L2 gradient norm (raw Sobel units of the input) at the pixels that
    survive non-maximum suppression and exceed ``low``, 0 elsewhere; ``orientation`` is
    ``atan2(gy, gx)`` in radians in ``[0, 2π)`` (clockwise on screen, +y down) of the channel used.
    """

    edges: Any
    magnitude: Any
    orientation: Any


def gaussian_stencil(sigma: float) -> Stencil:
    """Normalised Gaussian taps ``exp(-k² / 2σ²)`` for ``|k| <= ceil(3σ)``."""
    radius = max(1, math.ceil(3 * sigma))
    taps = [math.exp(-(k * k) / (2 * sigma * sigma)) for k in range(-radius, radius + 1)]
    total = math.fsum(taps)
    return Stencil(tuple(t / total for t in taps), radius)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    radius = math.ceil(3 * sigma)
    if radius > max(h, w):  # a flat blur, and a padded copy (and taps) larger than the image
        raise ValueError(
            f"sigma={sigma:g} needs a Gaussian of radius {radius} pixels, more than the image "
            f"({h}x{w}); use sigma <= {max(h, w) / 3:g}"
        )
    stencil = gaussian_stencil(sigma)
    r = stencil.origin
    x = correlate(pad(x, -2, r, r, "reflect101"), stencil, -2)
    return correlate(pad(x, -1, r, r, "reflect101"), stencil, -1)


@dataclass(frozen=True)
class CannySpec:
    """Validated options of :func:`canny`, shared with :class:`Canny`."""

    low: float | None
    high: float | None
    ksize: int
    l2gradient: bool
    sigma: float | None
    color: str
    thresholds: str

    @classmethod
    def build(
        cls,
        low: float | None = None,
        high: float | None = None,
        ksize: int = 3,
        l2gradient: bool = False,
        sigma: float | None = None,
        color: str = "max",
        thresholds: str = "absolute",
    ) -> CannySpec:
        if isinstance(ksize, bool) or ksize not in (3, 5, 7):
            raise ValueError(f"ksize must be 3, 5 or 7, got {ksize!r}")
        if not isinstance(l2gradient, bool):
            raise TypeError(f"l2gradient must be True or False, got {l2gradient!r}")
        if sigma is not None:
            if not is_real(sigma):
                raise TypeError(f"sigma must be a number or None, got {type(sigma).__name__}")
            if not (sigma > 0 and math.isfinite(sigma)):
                raise ValueError(f"sigma must be positive and finite, got {sigma!r}")
            sigma = float(sigma)
        if (low is None) != (high is None):
            raise ValueError(
                f"give both low and high, or neither for automatic thresholds; "
                f"got low={low!r}, high={high!r}"
            )
        pair = []
        for name, value in (("low", low), ("high", high)):
            if value is None:
                continue
            if not is_real(value):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if math.isnan(value):
                raise ValueError(f"{name} must not be NaN")
            pair.append(float(value))
        if pair and pair[0] > pair[1]:
            pair.reverse()  # OpenCV swaps them
        check_choice(color, "color", COLORS)
        check_choice(thresholds, "thresholds", THRESHOLD_MODES)
        if thresholds != "absolute" and pair and not (0 <= pair[0] and pair[1] <= 1):
            raise ValueError(
                f"thresholds={thresholds!r} takes fractions in [0, 1]; got low={low!r}, "
                f"high={high!r}"
            )
        lo, hi = pair if pair else (None, None)
        return cls(lo, hi, int(ksize), l2gradient, sigma, color, thresholds)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile with linear interpolation (numpy's default) by two selections."""
    count = values.shape[1]
    position = q * (count - 1)
    below = math.floor(position)
    lower = values.kthvalue(below + 1, dim=1).values.to(torch.float64)
    if position == below:
        return lower
    upper = values.kthvalue(below + 2, dim=1).values.to(torch.float64)
    return lower + (upper - lower) * (position - below)


def _resolve_thresholds(spec: CannySpec, norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` per image, ``(N,)`` float64 in magnitude units (L1 or L2 norm)."""
    n = norm.shape[0]
    device = norm.device
    if n == 0:  # an empty batch: no image, no statistic
        none = torch.zeros(0, dtype=torch.float64, device=device)
        return none, none
    if spec.low is None:
        high = otsu_threshold(norm)
        return high / 2, high
    if spec.thresholds == "absolute":
        full = torch.full((n,), 1.0, dtype=torch.float64, device=device)
        return full * spec.low, full * spec.high
    flat = norm.reshape(n, -1)
    if spec.thresholds == "relative":
        peak = flat.amax(1).to(torch.float64)
        return peak * spec.low, peak * spec.high
    return _quantile(flat, spec.low), _quantile(flat, spec.high)


def _score_threshold(t: torch.Tensor, spec: CannySpec, compat: bool) -> torch.Tensor:
    """A threshold on the gradient norm as a threshold on the score (squared for L2)."""
    if compat and spec.ksize == 7:
        t = t / 16  # OpenCV's Sobel 7 works in units of 1/16
    if spec.l2gradient:
        if compat:
            t = t.clamp(max=32767.0)
        t = torch.where(t > 0, t * t, t)
    return t


@dataclass(frozen=True)
class _Plan:
    """What the dense kernel bakes in: one compiled function per distinct plan."""

    op: Operator
    l2: bool
    #: dtype of gy, gx: int32 for 8/16-bit integer data (exact), else the floating compute dtype.
    compute: torch.dtype
    #: dtype of the score (L1 norm or squared L2 norm): ``compute``, or int64/float64 for L2.
    score: torch.dtype
    #: OpenCV's Sobel 7 on uint8: ``round(g / 16)``.
    round16: bool
    #: dtype of the sector products of non-maximum suppression (:func:`nms_keep`).
    sector: torch.dtype


#: Integer gradients below this make exact int32 sector products (``27146 * 79109 < 2**31``).
_INT32_SECTOR = 27146


def _plan(spec: CannySpec, dtype: torch.dtype, compat: bool) -> _Plan:
    op = get_operator("sobel", spec.ksize)
    gain = sum(abs(t) for t in op.derivative.taps) * sum(op.smoothing.taps)
    integer = dtype in _INT_RANGE and spec.sigma is None and spec.color == "max"
    bound = _INT_RANGE.get(dtype, 0) * gain
    round16 = compat and spec.ksize == 7
    if round16:
        bound /= 16
    if integer:
        # Sobel taps are integers, so the engine stays in int32: exact for every 16-bit input
        # (the largest response, Sobel 7 of uint16, is 65535 * 1280 < 2**31)
        compute = torch.int32
        score = torch.int64 if spec.l2gradient and 2 * bound * bound >= 2**31 else compute
        sector = torch.int32 if bound < _INT32_SECTOR else torch.int64
    else:
        compute = compute_dtype(dtype)
        if bound > _FLOAT32_EXACT:
            compute = torch.float64  # e.g. blurred 16-bit Sobel 7 responses need over 24 bits
        wide = spec.l2gradient and 2 * bound * bound > _FLOAT32_EXACT
        score = torch.float64 if wide else compute
        sector = torch.float64
    return _Plan(op, spec.l2gradient, compute, score, round16, sector)


def _gradients(
    window: torch.Tensor, plan: _Plan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(score, gy, gx)`` ``(N, 1, h, w)`` of a window extended by the radius on every side.

    Colour: per pixel the channel of largest score, the first one on ties (as OpenCV).
    """
    r = plan.op.radius
    gy, gx = first_derivatives_extended(window.to(plan.compute), plan.op, r)
    if plan.round16:  # cv2: Sobel(scale=1/16) to int16, rounding half to even
        gy = (gy.to(torch.float32) / 16).round().to(plan.compute)
        gx = (gx.to(torch.float32) / 16).round().to(plan.compute)
    if plan.l2:
        wy, wx = gy.to(plan.score), gx.to(plan.score)
        score = wy * wy + wx * wx
    else:
        score = gy.abs() + gx.abs()
    best, by, bx = score[:, :1], gy[:, :1], gx[:, :1]
    for c in range(1, score.shape[1]):
        better = score[:, c : c + 1] > best
        best = torch.where(better, score[:, c : c + 1], best)
        by = torch.where(better, gy[:, c : c + 1], by)
        bx = torch.where(better, gx[:, c : c + 1], bx)
    return best, by, bx


def _strip_state(
    window: torch.Tensor,
    rows_inside: torch.Tensor,
    cols_inside: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    out: torch.Tensor,
    plan: _Plan,
) -> None:
    """The dense part of Canny on a strip of rows of the zero-bordered grid ``(N, 1, H+2, W+2)``,
    written to ``out`` ``(N, 1, h, W + 2)`` (the strip's rows of the grid, written in place
    rather than returned: compiled, the kernel stores straight into the grid): 0 / 1 weak /
    2 strong; 0 on the border ring.

    ``window`` is ``(N, C, h + 2r + 2, W + 2r + 4)``: the strip's rows of the image extended by
    ``r + 2`` on every side (replicate), with ``r + 1`` more rows above and below. The score is
    computed on the strip and a ring of one pixel around it, set to 0 outside the image
    (``rows_inside`` ``(h + 2, 1)`` and ``cols_inside`` ``(1, W + 4)`` bool), then suppressed
    and thresholded; outside the image the score is 0, so nothing there survives suppression.
    """
    score, gy, gx = _gradients(window, plan)
    score = torch.where(rows_inside & cols_inside, score, torch.zeros_like(score))
    keep = nms_keep(score, gy[..., 1:-1, 1:-1], gx[..., 1:-1, 1:-1], plan.sector)
    m = score[..., 1:-1, 1:-1]
    weak = keep & (m > low)
    # int32, the dtype of the index map: inductor vectorises this kernel twice as well as uint8
    out.copy_(weak.to(out.dtype) + (weak & (m > high)).to(out.dtype))


#: Pixels (rows x width x batch) of one strip: its temporaries stay cache-sized.
STRIP_ELEMENTS = 1 << 19
_COMPILED: dict[_Plan, Any] = {}
#: Compile or not: :mod:`imgrad._compile`'s amortised rule, for all Canny strip kernels.
POLICY = CompilePolicy("Canny")


def _kernel(plan: _Plan, pixels: int) -> Any:
    """The strip kernel: compiled (inductor; every strip of a batch has the same shape, and a
    size that differs from the first call's becomes dynamic, so a plan needs one or two graphs)
    once :data:`POLICY` says so, eager until then, inside ``torch.compile`` tracing, and for
    good once a compilation failed."""

    def eager(window, rows_inside, cols_inside, low, high, out):
        _strip_state(window, rows_inside, cols_inside, low, high, out, plan)

    if not POLICY.wants(pixels):
        return eager
    if plan not in _COMPILED:
        # its own code object per plan (own recompile limit); sizes that change become dynamic
        # A buffer read twice is kept (default: four times): the score is then computed once
        # and read by its 9 neighbours' suppression, not recomputed 9 times (1.7x faster here)
        options = inductor_options(realize_reads_threshold=2)
        _COMPILED[plan] = torch.compile(
            own_code(eager, plan), dynamic=None, fullgraph=True, options=options
        )
    compiled = _COMPILED[plan]

    def run(window, rows_inside, cols_inside, low, high, out):
        if not POLICY.failed:
            try:
                with warnings.catch_warnings():  # inductor's deprecations are not the caller's
                    warnings.simplefilter("ignore", DeprecationWarning)
                    views = (standalone(window), standalone(rows_inside))
                    return compiled(*views, cols_inside, low, high, standalone(out))
            except Exception as error:  # noqa: BLE001 - any compiler failure: run eagerly
                POLICY.failure(error)
        return eager(window, rows_inside, cols_inside, low, high, out)

    return run


def _replicate(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` extended by ``rows`` above and below and ``cols`` left and right,
    replicating its edge pixels; by slice copies (``engine.pad`` gathers, 10x slower here)."""
    n, c, h, w = x.shape
    out = x.new_empty(n, c, h + 2 * rows, w + 2 * cols)
    body = out[:, :, rows : rows + h]
    body[..., cols : cols + w] = x
    body[..., :cols] = x[..., :1]
    body[..., cols + w :] = x[..., -1:]
    out[:, :, :rows] = body[:, :, :1]
    out[:, :, rows + h :] = body[:, :, -1:]
    return out


def _state_grid(
    src: torch.Tensor, plan: _Plan, low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """The zero-bordered state grid ``(N, 1, H+2, W+2)``: 0 / 1 weak / 2 strong, in the integer
    dtype of an index map (:func:`imgrad.thresholds.hysteresis_grid`), strip by strip."""
    n, _, h, w = src.shape
    r = plan.op.radius
    ext = _replicate(src, r + 2, r + 2)
    rows_inside = F.pad(src.new_ones(h, 1, dtype=torch.bool), (0, 0, 2, 2))
    cols_inside = F.pad(src.new_ones(1, w, dtype=torch.bool), (2, 2))
    grid = scratch(
        "canny grid", (n, 1, h + 2, w + 2), index_dtype(n * (h + 2) * (w + 2)), src.device
    )
    rows = max(1, min(h + 2, STRIP_ELEMENTS // max(1, n * (w + 2))))  # n = 0: an empty batch
    kernel = _kernel(plan, n * h * w)
    bounds = (low.reshape(n, 1, 1, 1), high.reshape(n, 1, 1, 1))
    for done in range(0, h + 2, rows):
        # the last strip overlaps the previous one (same shape, one graph) and rewrites the
        # shared rows with the same values
        top = min(done, h + 2 - rows)
        window = ext[:, :, top : top + rows + 2 * r + 2]
        inside = rows_inside[top : top + rows + 2]
        kernel(window, inside, cols_inside, *bounds, grid[:, :, top : top + rows])
    return grid


def canny_core(image: Any, spec: CannySpec, details: bool = False) -> Any:
    """The body of :func:`canny` and :class:`Canny`."""
    raw, kind = to_tensor(image, "image")
    if raw.dtype == torch.bool:
        raise TypeError("bool images are not supported; convert the mask to uint8 or float first")
    # OpenCV parity: uint8 data without blur are processed with OpenCV's integer arithmetic.
    compat = raw.dtype == torch.uint8 and spec.sigma is None
    plan = _plan(spec, raw.dtype, compat)
    if plan.compute == torch.int32:  # integer Sobel straight from the raw data, no float copy
        prepared = prepare(raw[..., :1, :1], min_size=1)  # validates rank and dtype, cheaply
        if raw.shape[-2] < 1 or raw.shape[-1] < 1:
            prepare(raw, min_size=1)  # raises the usual "too small" error
        src = raw.reshape((1,) * (4 - raw.dim()) + tuple(raw.shape))
    else:
        luma = spec.color == "luminance"  # converts while it computes: no converted RGB copy
        prepared = prepare(raw, min_size=1, cast=not luma)
        src = prepared.image
        if luma:
            src = luminance(src, compute_dtype(src.dtype))
        if spec.sigma is not None:
            src = _blur(src, spec.sigma)
        src = src.to(plan.compute)
    prepared.kind = kind
    n, _, h, w = src.shape
    scale = 16.0 if plan.round16 else 1.0
    need_norm = spec.low is None or spec.thresholds != "absolute" or details
    if need_norm:  # whole-image gradients: for statistics and details only
        r = plan.op.radius
        score, gy, gx = _gradients(_replicate(src, r, r), plan)
        norm = score.to(torch.float64 if plan.score == torch.int64 else prepared.out_dtype)
        norm = (sqrt_rn(norm) if plan.l2 else norm) * scale
    else:
        norm = torch.zeros(n, 1, 1, 1, device=src.device)
    low, high = _resolve_thresholds(spec, norm)
    low_s, high_s = _score_threshold(low, spec, compat), _score_threshold(high, spec, compat)
    if not plan.score.is_floating_point:  # integer scores: s > t <=> s > floor(t)
        limit = float(torch.iinfo(plan.score).max)
        low_s, high_s = low_s.floor().clamp(-1, limit), high_s.floor().clamp(-1, limit)
    low_s, high_s = low_s.to(plan.score), high_s.to(plan.score)

    grid = _state_grid(src, plan, low_s, high_s)
    if details:  # the candidates, before hysteresis overwrites the grid
        candidate = grid[:, :, 1:-1, 1:-1] != 0
        suppressed = torch.where(candidate, norm, torch.zeros_like(norm))
    edges = hysteresis_grid(grid.reshape(-1), n, h, w, 8)
    edges = prepared.restore(edges.reshape(n, 1, h, w), torch.bool)
    if not details:
        return edges
    angle = orientation((gy.to(prepared.out_dtype), gx.to(prepared.out_dtype)))
    return CannyResult(
        edges,
        prepared.restore(suppressed, prepared.out_dtype),
        prepared.restore(angle, prepared.out_dtype),
    )


def canny(
    image: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    ksize: int = 3,
    l2gradient: bool = False,
    sigma: float | None = None,
    color: str = "max",
    thresholds: str = "absolute",
    return_details: bool = False,
) -> Any:
    """Canny edges of an image or a batch; equal to ``cv2.Canny`` on uint8 images.

    Parameters
    ----------
    image
        Tensor, array or PIL image ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``, any real
        dtype, CPU or CUDA.
    low, high
        Hysteresis thresholds; swapped if ``low > high`` (as OpenCV). Units depend on
        ``thresholds``. With ``thresholds="absolute"`` they are gradient norms in raw Sobel units
        of the input's values: for uint8 the same numbers as ``cv2.Canny``; for uint16 data
        scaled by 257 (``x * 257``) multiply them by 257; for floats in [0, 1] divide uint8
        thresholds by 255. Both ``None`` (default): automatic, per image: ``high`` is Otsu's
        threshold (256 bins) of the gradient norm and ``low = high / 2``.
    ksize
        Sobel aperture 3, 5 or 7.
    l2gradient
        ``False``: ``|gx| + |gy|``. ``True``: ``sqrt(gx² + gy²)``, evaluated as OpenCV does by
        comparing ``gx² + gy²`` with the squared thresholds.
    sigma
        Standard deviation of an optional Gaussian blur applied first (taps to ``ceil(3σ)``,
        border reflect101; that radius may not exceed the image's larger side, so
        ``sigma <= max(H, W) / 3``). ``None`` (default): no blur, as OpenCV.
    color
        ``"max"`` (default): per pixel the channel with the largest magnitude (first on ties),
        as OpenCV. ``"luminance"``: BT.601 luma of an RGB image.
    thresholds
        ``"absolute"`` (default), ``"relative"`` (fractions of each image's largest gradient
        norm) or ``"quantile"`` (fractions turned into quantiles of each image's gradient norm,
        linear interpolation).
    return_details
        Also return the suppressed magnitude and the orientation (:class:`CannyResult`).

    Returns
    -------
    Bool edge map shaped like the input with C = 1 (tensor or array like the input), or a
    :class:`CannyResult` with ``return_details=True``.

    Notes
    -----
    On uint8 input without ``sigma`` the arithmetic is OpenCV's (Sobel 7 as ``round(g / 16)``
    with thresholds divided by 16; L2 thresholds clamped to 32767 before squaring) and the edges
    equal ``cv2.Canny`` on every pixel; colour images use all channels (RGBA included), as
    OpenCV. Integer inputs are computed exactly (in int32; with ``sigma`` or luminance in float32
    where every value fits in 24 bits, float64 otherwise). Floating inputs are computed in
    float32 (float64 for float64 input), the thresholds rounded to that precision; a floating
    image holding integer values gives the same edges as the integer image except for Sobel 7
    (uint8 rounds to 1/16 only in the OpenCV path).

    Limitations: the hysteresis reads values on the host (``nonzero()`` of the candidates, a
    labelling loop until the labels settle), so there is no ``torch.compile(fullgraph=True)``
    graph, no ``torch.export`` (nor ONNX), no ``torch.func.vmap`` and no ``meta`` tensors. The
    ``return_details`` magnitude and orientation are differentiable with autograd, but not
    under ``torch.func`` transforms, which cannot run the hysteresis (raw data pointers, a
    reused state grid labelled in place).
    """
    spec = CannySpec.build(low, high, ksize, l2gradient, sigma, color, thresholds)
    if not isinstance(return_details, bool):
        raise TypeError(f"return_details must be True or False, got {return_details!r}")
    return canny_core(image, spec, return_details)


class Canny(nn.Module):
    """Module form of :func:`canny`; ``forward(image)`` returns the same as the function (and
    has its limitations: no fullgraph compile, export, ONNX, vmap or meta tensors)."""

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        ksize: int = 3,
        l2gradient: bool = False,
        sigma: float | None = None,
        color: str = "max",
        thresholds: str = "absolute",
        return_details: bool = False,
    ) -> None:
        super().__init__()
        self.spec = CannySpec.build(low, high, ksize, l2gradient, sigma, color, thresholds)
        if not isinstance(return_details, bool):
            raise TypeError(f"return_details must be True or False, got {return_details!r}")
        self.return_details = return_details

    def forward(self, image: torch.Tensor) -> Any:
        return canny_core(image, self.spec, self.return_details)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"low={s.low}, high={s.high}, ksize={s.ksize}, l2gradient={s.l2gradient}, "
            f"sigma={s.sigma}, color={s.color!r}, thresholds={s.thresholds!r}"
        )
