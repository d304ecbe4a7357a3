"""The fast forward path of :func:`imgrad.gradient_magnitude`: one fused pass, no temporaries.

The reference path, ``magnitude(spatial_gradient(image))``, pads the whole image and runs about
fifteen separate full-size passes (pad, one multiply-add per tap, squares, sqrt): it is the
autograd path and stays as it is. A gradient map is memory-bound, so this path instead reads the
input once and writes the output once:

- **interior**: one kernel runs over the image flattened row by row, where a neighbour is a
  fixed offset (``±1`` along a row, ``±W`` down a column). It reads the input in place (no padded
  copy) and writes straight into the preallocated output every pixel whose stencil lies inside
  the image; where the flat offsets wrap round a row's end it writes meaningless values into
  frame pixels, which are rewritten next;
- **frame**: the outer ``band = max(r, 2)`` rows and columns (``r`` the operator's radius), whose
  stencils cross the border, go through the same kernel in one more call, from small
  border-extended copies of the four bands. The left and right bands are transposed into bands
  of rows (the magnitude is symmetric in ``gy`` and ``gx``, so the bits are the same).

The kernel is a plain PyTorch function doing the reference arithmetic in the reference order
(:func:`imgrad.engine.correlate`: taps in order, the derivative along its axis first, then the
smoothing across; ``gy*gy + gx*gx``). It is compiled with ``torch.compile`` (inductor: one
vectorised, OpenMP-parallel C++ loop on the CPU, one Triton kernel on CUDA), once per
configuration (operator, norm, dtypes, scale) with symbolic sizes, so any image size reuses it;
inductor's on-disk cache makes later processes load it instead of compiling. When to compile is
:mod:`imgrad._compile`'s amortised rule (``IMGRAD_COMPILE``); until then, or if compiling fails
(no C++ compiler, ...: one warning), the same function runs eagerly, in chunks whose temporaries
stay cache-sized.

Numbers: bit-identical to the reference for every operator, border, norm and dtype. The L2
norm's square root is :func:`imgrad.engine.sqrt_rn` in both (correctly rounded float32,
computed in the kernel); for float64 the kernel stores the squared magnitude and eager
``torch.sqrt`` is applied in place afterwards, like the reference (a compiled float64 square root
is the correctly rounded one, eager ``torch.sqrt`` is not always).

The path is taken only for a forward computation: not when autograd records (the input
requires grad and grad mode is on), not while being traced by ``torch.compile``, and only for
options it implements (tensor or array input, ``color="channels"``, ``nan_policy="propagate"``),
and, while kernels run eagerly, only for images of :data:`EAGER_MIN_PIXELS` pixels or more;
everything else goes to the reference path.

On a GPU the split into interior and frame does not pay: compiled, the reference computation
runs as one graph instead (:func:`_whole`: 0.91-1.15 ms for 8 x 4096² float32 on an H100,
34-41% of a device copy's bandwidth, against 3.9 ms split); eagerly, and for half precision,
a GPU takes the reference path (12 ms there; the eager split path launched thousands of small
kernels: 500 ms).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._compile import CompilePolicy, own_code, standalone
from ._input import compute_dtype, result_dtype
from ._memory import empty, scratch
from .engine import border_index, correlate, extend, sqrt_rn
from .operators import Operator, Stencil

__all__ = ["POLICY", "Plan", "gradient_magnitude", "plan_for", "worthwhile"]

#: Element budget of one eager strip's window (1 MiB of float32; the strip's few temporaries stay
#: in L2/L3). Each strip costs a dozen operator calls of fixed overhead, so smaller strips lose
#: more to calls than they gain in cache: on the reference machine 2**16 took 41 ms for a float32
#: 4096² magnitude (2 threads), 2**18 26 ms, and 2**19 24-32 ms (worse on one thread).
STRIP_ELEMENTS = 1 << 18
#: Below this many pixels (the whole batch) an eager call takes the reference path instead: its
#: few whole-image passes cost less than this path's fixed cost (the frame's small copies, the
#: chunks) there: 0.19 ms against 0.42 ms for one 256² image on the reference machine; at 512²
#: they are even (0.74 - 1.08 ms against 0.71). Compiled, the fused kernel wins at every size.
EAGER_MIN_PIXELS = 1 << 18

Kernel = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class Plan:
    """Everything the kernel bakes in as constants; one compiled function per distinct plan."""

    op: Operator
    norm: str
    compute: torch.dtype
    out: torch.dtype
    #: ``(gain * sy, gain * sx)`` for normalised output, else ``None``.
    divisors: tuple[float, float] | None

    @property
    def root_after(self) -> bool:
        """L2 in float64: the kernel stores the squared magnitude and the square root is a pass of
        eager ``torch.sqrt``, like the reference (float32 is rooted in the kernel)."""
        return self.norm == "l2" and self.compute == torch.float64

    @property
    def store(self) -> torch.dtype:
        """The dtype the kernel writes."""
        return self.compute if self.root_after else self.out

    def transposed(self) -> Plan:
        """The plan for a transposed image: the same, with the two axis divisors swapped."""
        if self.divisors is None or self.divisors[0] == self.divisors[1]:
            return self
        return Plan(self.op, self.norm, self.compute, self.out, self.divisors[::-1])


# --------------------------------------------------------------------------- the kernel


def _correlate(x: torch.Tensor, stencil: Stencil, start: int, step: int, n: int) -> torch.Tensor:
    """The engine's correlation on a flat ``x``: ``step`` 1 shifts along a row, ``step`` W down
    a column; the same operations in the same order, hence the same bits."""
    return correlate(x, stencil, 0, start=start, step=step, length=n)


def _flat_magnitude(src: torch.Tensor, out: torch.Tensor, width: int, plan: Plan) -> None:
    """The magnitude at every flat position ``p`` of ``src`` whose stencil offsets stay inside it.

    ``src`` is an image, or a stack of them, flattened row by row (rows of ``width``), in any real
    dtype; ``out[j]`` is the result at ``p = j + r * width + r``. At positions within
    ``r`` of a row's end the row "wraps" and the value is meaningless: callers overwrite those.
    The arithmetic is the reference's, op for op (:func:`imgrad.gradients.first_order` then
    :func:`imgrad.gradients.magnitude`).
    """
    d, s, r = plan.op.derivative, plan.op.smoothing, plan.op.radius
    n = out.shape[0]
    x = src.to(plan.compute)
    centre = r * width + r
    # gy = smooth along the row of (derivative down the column), gx the other way round
    across = _correlate(x, d, centre - s.before - d.before * width, width, n + s.before + s.after)
    gy = _correlate(across, s, 0, 1, n)
    span = n + (s.before + s.after) * width
    along = _correlate(x, d, centre - s.before * width - d.before, 1, span)
    gx = _correlate(along, s, 0, width, n)
    result = _finish(gy, gx, plan, out)
    if result is not out:
        out.copy_(result)


def _finish(
    gy: torch.Tensor, gx: torch.Tensor, plan: Plan, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Raw ``gy``, ``gx`` to the stored magnitude, op for op as the reference: divisors, the
    output dtype's rounding, the norm (and the square root, unless ``plan.root_after``).

    Eagerly ``gy`` and ``gx`` must be this path's own temporaries: they are overwritten. The
    square root goes straight into ``out`` where :func:`imgrad.engine.sqrt_rn` can put it there
    (the result is then ``out``).
    """
    if plan.divisors is not None:
        gy, gx = gy / plan.divisors[0], gx / plan.divisors[1]
    if torch.compiler.is_compiling():  # out of place: inductor fuses it all into one loop
        if plan.norm == "l1":
            return gy.abs() + gx.abs()
        mag = gy * gy + gx * gx
    elif plan.norm == "l1":
        return gy.abs_().add_(gx.abs_())
    else:
        mag = gy.mul_(gy).add_(gx.mul_(gx))  # the same operations, without new tensors
    # sqrt(0) is 0 and NaN stays NaN, as the reference's
    return sqrt_rn(mag, out) if plan.norm == "l2" and not plan.root_after else mag


def _kernel(plan: Plan) -> Kernel:
    def kernel(src: torch.Tensor, out: torch.Tensor) -> None:
        _flat_magnitude(src.reshape(-1), out, src.shape[1], plan)  # the width stays symbolic

    return kernel


_COMPILED: dict[tuple[Plan, torch.dtype, str], Kernel] = {}


@contextlib.contextmanager
def _dynamic_sizes_only() -> Iterator[None]:
    """Trace with only tensor sizes symbolic: the plan's numbers (taps, radius, divisors) stay
    constants, and without duck sizing two sizes that are equal in the first call (a square
    image) are not assumed equal in the next ones. One graph per plan serves every image size."""
    with (
        torch._dynamo.config.patch(specialize_int=True, specialize_float=True),
        torch.fx.experimental._config.patch(use_duck_shape=False),
    ):
        yield


#: Compile or not: :mod:`imgrad._compile`'s amortised rule, for all magnitude kernels. Eager
#: strips cost ~1.1 ns/pixel more than the compiled kernel on the reference machine (float32
#: 4096²: 21-28 ms against 8 ms; 16 x 256²: 1.9 against 0.9 ms), and a compile with inductor's
#: cache warm takes 2.7-3.0 s: 2**31 pixels of eager work is about one compile.
POLICY = CompilePolicy("the gradient magnitude", after_pixels=1 << 31)


def _compiled(plan: Plan, src: torch.Tensor) -> Kernel:
    """The compiled kernel of ``plan`` for inputs like ``src``, compiled on first use.

    The first compile happens on a 256 x 256 dummy: inductor decides from the first call's sizes
    whether a loop is worth spreading over threads, and it is for the images that matter.
    """
    key = (plan, src.dtype, src.device.type)
    if key not in _COMPILED:
        kernel = torch.compile(
            own_code(_kernel(plan), key),
            dynamic=True,
            fullgraph=True,
            # round exactly where the eager code does (as in _whole): the reference's bits
            options={"emulate_precision_casts": True},
        )
        dummy = torch.zeros(256, 256, dtype=src.dtype, device=src.device)
        r = plan.op.radius
        out = torch.empty(256 * 256 - 2 * (256 * r + r), dtype=plan.store, device=src.device)
        # torch's compiler stack warns about its own internals (deprecations): not the caller's
        with _dynamic_sizes_only(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kernel(dummy, out)
        _COMPILED[key] = kernel
    return _COMPILED[key]


def _run(plan: Plan, src: torch.Tensor, out: torch.Tensor) -> None:
    """Fill the flat ``out`` from the ``(rows, width)`` ``src``: compiled if possible, else
    eagerly in chunks.

    A failed compile warns once and switches this process to the eager kernel for good.
    """
    if POLICY.wants(out.numel()):
        try:
            kernel = _compiled(plan, src)
            with _dynamic_sizes_only():
                kernel(standalone(src), standalone(out))
            return
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
            POLICY.failure(error)
    # Eagerly every tap is a pass over the data: chunks keep those passes cache-resident.
    width, flat = src.shape[1], src.reshape(-1)
    halo = flat.shape[0] - out.shape[0]
    for start in range(0, out.shape[0], STRIP_ELEMENTS):
        n = min(STRIP_ELEMENTS, out.shape[0] - start)
        _flat_magnitude(flat.narrow(0, start, n + halo), out.narrow(0, start, n), width, plan)


# --------------------------------------------------------------------------- interior and frame


def _sources(n: int, positions: torch.Tensor, border: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index along an axis of length ``n`` of each of ``positions`` (which may lie outside
    it) by the border rule, and which positions are outside (they take the constant value, for
    ``border="constant"``; their index is then clamped, only to stay valid)."""
    outside = (positions < 0) | (positions >= n)
    if border == "constant":
        return positions.clamp(0, n - 1), outside
    halo = max(-int(positions.min()), int(positions.max()) - n + 1, 0)
    return border_index(n, halo, halo, border, positions.device)[positions + halo], outside


def _halo_last(t: torch.Tensor, n: int, r: int, border: str, value: float) -> None:
    """Fill ``t[..., :r]`` and ``t[..., r + n : 2r + n]`` from the body ``t[..., r : r + n]``
    by the border rule, in place (gathers of the ``2r`` halo columns only)."""
    if border == "constant":
        t[..., :r], t[..., r + n : 2 * r + n] = value, value
        return
    halo = torch.cat([torch.arange(-r, 0), torch.arange(n, n + r)])
    index = (_sources(n, halo, border)[0] + r).to(t.device)  # worked out on the CPU: no syncs
    t[..., :r], t[..., r + n : 2 * r + n] = t[..., index[:r]], t[..., index[r:]]


def _valid(plan: Plan, src: torch.Tensor) -> torch.Tensor:
    """``out[:, i, j]`` from the window ``src[:, i : i + 2r + 1, j : j + 2r + 1]`` for all i, j.

    ``src`` is ``(B, h + 2r, w + 2r)`` and contiguous, the result ``(B, h, w)``. The kernel runs
    on ``src`` flattened; where its rows wrap it writes into the halo of a scratch buffer only.
    The result is a view of that buffer (:func:`imgrad._memory.scratch`): the next call in this
    thread overwrites it.
    """
    r = plan.op.radius
    width = src.shape[-1]
    centre = r * width + r
    result = scratch("frame result", (src.numel(),), plan.store, src.device)
    _run(plan, src.reshape(-1, width), result.narrow(0, centre, src.numel() - 2 * centre))
    return result.view(src.shape)[:, r : src.shape[1] - r, r : width - r]


def _interior(plan: Plan, x: torch.Tensor, out: torch.Tensor) -> None:
    """Rows ``[r, H - r)`` x columns ``[r, W - r)`` of ``out``, reading ``x`` in place.

    ``x`` and ``out`` are contiguous ``(P, H, W)``. Flattened, the interior is one range; the
    positions of that range where rows (or planes) wrap are frame pixels, written afterwards.
    """
    r = plan.op.radius
    width = x.shape[-1]
    centre = r * width + r
    _run(plan, x.reshape(-1, width), out.view(-1).narrow(0, centre, x.numel() - 2 * centre))


def _frame(plan: Plan, x: torch.Tensor, out: torch.Tensor, border: str, value: float) -> None:
    """The outer ``band`` rows and columns of ``out``, from border-extended copies of ``x``.

    The four bands, each extended all round, are copied into one scratch buffer, row by row:
    the top and bottom ones as they are, the left and right ones transposed into bands of rows
    (the magnitude is symmetric in ``gy``, ``gx``), all right-padded with zeros to a common
    width. Then all four go through the kernel in one call (or one per side when the plan is
    not symmetric). The buffers are :func:`imgrad._memory.scratch`: fresh memory would cost a
    page fault per 4 KiB, about as much as the rest of the frame for a batch of small images.
    """
    r = plan.op.radius
    planes, height, width = x.shape
    band = max(r, 2)
    rows = band + 2 * r  # rows of one extended band
    common = max(height, width) + 2 * r
    bands = scratch("frame bands", (2, planes, 2 * rows, common), plan.compute, x.device)
    # The columns the left and right bands read (all within k of the edge, since r < k) are
    # transposed into rows first, in two block copies: picking them one by one down a plane
    # would read a cache line per pixel. Slab row j is column j, or width - 2k + j for j >= k.
    k = band + r
    slab = scratch("frame slab", (planes, 2 * k, height), plan.compute, x.device)
    slab[:, :k], slab[:, k:] = x[..., :k].mT, x[..., width - k :].mT

    def column(i: int) -> torch.Tensor:
        return slab[:, i if i < k else i - (width - 2 * k)]

    for side, (n, length, pick) in enumerate(
        ((height, width, lambda i: x[:, i]), (width, height, column))
    ):
        positions = torch.cat([torch.arange(-r, band + r), torch.arange(n - band - r, n + r)])
        sources, outside = _sources(n, positions, border)
        target = bands[side]
        for j, (i, off) in enumerate(zip(sources.tolist(), outside.tolist(), strict=True)):
            if border == "constant" and off:
                target[:, j, r : r + length] = value
            else:
                target[:, j, r : r + length] = pick(i)  # converts to the compute dtype
        _halo_last(target, length, r, border, value)
        target[..., length + 2 * r :] = 0  # padding to the common width; its results are dropped

    def write(result: torch.Tensor, side: int) -> None:  # result (P, 2, band, common - 2r)
        if side == 0:
            out[:, :band], out[:, height - band :] = (
                result[:, 0, :, :width],
                result[:, 1, :, :width],
            )
        else:
            left, right = result[:, 0, :, :height].mT, result[:, 1, :, :height].mT
            out[:, :, :band], out[:, :, width - band :] = left, right

    shape = (planes, 2, band, common - 2 * r)
    if plan.transposed() == plan:
        result = _valid(plan, bands.view(-1, rows, common))
        write(result[: 2 * planes].reshape(shape), 0)
        write(result[2 * planes :].reshape(shape), 1)
    else:  # one call per side (each overwrites the scratch result: written out in between)
        write(_valid(plan, bands[0].view(-1, rows, common)).reshape(shape), 0)
        write(_valid(plan.transposed(), bands[1].view(-1, rows, common)).reshape(shape), 1)


# --------------------------------------------------------------------------- entry points


def plan_for(
    image: Any, op: Operator, norm: str, divisors: tuple[float, float] | None
) -> Plan | None:
    """The plan for ``image`` if the fast path handles it, else ``None`` (use the reference).

    Handled: a CPU or CUDA tensor, or a writable C-contiguous numpy array, of rank 2 to 4, of a
    real dtype (not half precision on a GPU), at least ``2 * radius + 2`` pixels high and wide,
    whose gradient is not being recorded, outside ``torch.compile`` and ``torch.jit.trace``
    tracing (the legacy ONNX exporter: it would record numpy results as constants).
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return None
    if isinstance(image, np.ndarray):
        usable = image.flags.writeable and image.flags.c_contiguous and image.dtype.isnative
        if image.dtype.kind not in "uif" or not usable:
            return None
        dtype = torch.from_numpy(image[:0]).dtype
    elif isinstance(image, torch.Tensor):
        if image.requires_grad and torch.is_grad_enabled():
            return None
        if image.device.type not in ("cpu", "cuda"):
            return None
        dtype = image.dtype
    else:
        return None
    if dtype == torch.bool or dtype.is_complex or image.ndim not in (2, 3, 4):
        return None
    shape = tuple(image.shape)
    if 0 in shape or min(shape[-2:]) < 2 * op.radius + 2:  # smaller: no interior worth a graph
        return None
    on_gpu = isinstance(image, torch.Tensor) and image.device.type != "cpu"
    if on_gpu and dtype in (torch.float16, torch.bfloat16):
        return None  # its compiled graph has not been checked against the reference on a GPU
    return Plan(op, norm, compute_dtype(dtype), result_dtype(dtype), divisors)


def worthwhile(image: Any) -> bool:
    """Whether to take this path for ``image`` (which has a plan): always when it runs compiled,
    eagerly only from :data:`EAGER_MIN_PIXELS` pixels. A smaller image left to the reference
    path is counted by :data:`POLICY` as eager work all the same."""
    if isinstance(image, torch.Tensor) and image.device.type != "cpu":
        # on a GPU the eager kernels' chunks are thousands of small launches (500 ms for
        # 8 x 4096² on an H100): the reference path's few whole-image kernels are far faster
        return POLICY.wants(image.numel())
    pixels = math.prod(image.shape)
    return pixels >= EAGER_MIN_PIXELS or POLICY.wants(pixels)


# --------------------------------------------------------------------------- GPU: one graph

_WHOLE: dict[tuple[Any, ...], Callable[[torch.Tensor], torch.Tensor]] = {}


def _whole(plan: Plan, border: str, value: float, x: torch.Tensor) -> torch.Tensor:
    """The stored magnitude of ``(P, H, W)`` ``x`` by the reference computation itself (border
    extension, the taps, :func:`_finish`) compiled as one graph.

    On a GPU the interior/frame split costs more in launches and host work than it saves (the
    frame's few hundred small copies took 2.7 ms of 3.9 at 8 x 4096² on an H100); one graph
    needs none of it: about 1 ms there. ``emulate_precision_casts`` also turns off Triton's fused
    multiply-adds, so the bits stay the reference's. Sizes are static: each new batch shape
    compiles once (seconds), because the same graph with symbolic sizes ran 7x slower.
    """
    key = (plan, border, value, x.dtype, x.device.type)
    if key not in _WHOLE:
        from .gradients import first_derivatives_extended  # imports this module

        r = plan.op.radius

        def whole(x: torch.Tensor) -> torch.Tensor:
            xp = extend(x.to(plan.compute), r, border, value)
            return _finish(*first_derivatives_extended(xp, plan.op, r), plan).to(plan.store)

        _WHOLE[key] = torch.compile(
            own_code(whole, key),
            dynamic=False,
            fullgraph=True,
            options={"emulate_precision_casts": True},
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _WHOLE[key](standalone(x))


def gradient_magnitude(image: Any, plan: Plan, border: str, value: float) -> Any:
    """The magnitude of ``image`` per ``plan``: the reference's result, computed in one pass
    (on a GPU, once compiled, by :func:`_whole`)."""
    is_numpy = isinstance(image, np.ndarray)
    t = torch.from_numpy(image) if is_numpy else image
    shape = t.shape
    x = t.reshape(-1, *shape[-2:]).contiguous()
    out = None
    if x.device.type != "cpu" and POLICY.compiles():  # half precision never gets here (plan_for)
        try:
            out = _whole(plan, border, value, x)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eagerly
            POLICY.failure(error)
    if out is None:
        out = empty(tuple(x.shape), plan.store, x.device)
        _interior(plan, x, out)
        _frame(plan, x, out, border, value)
    if plan.root_after:  # the reference's float64 sqrt, in place: one more pass, the same bits
        out = out.sqrt_()
    out = out.reshape(shape)
    return out.numpy() if is_numpy else out
