"""Threshold stage: fixed, relative, Otsu and hysteresis thresholds, and non-maximum suppression.

Conventions (shared by every function here):

- Inputs are tensors or numpy arrays shaped ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` (see
  :mod:`imgrad._input`); results keep the input's rank and container. Masks are ``bool``.
- Every comparison is **strict**, as OpenCV's ``THRESH_BINARY`` and scikit-image's
  ``apply_hysteresis_threshold``: a pixel equal to a threshold is *not* above it.
- Per-image statistics (the maximum of :func:`threshold_relative`, Otsu's threshold) are taken
  over each sample ``n`` of a batch, all channels together.
- Hysteresis is exact connected-component labelling (no iteration cap), 8-connected by default
  like OpenCV's Canny; ``connectivity=4`` is scikit-image's rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._input import Prepared, is_integer, prepare, real_number, to_tensor

__all__ = [
    "hysteresis_threshold",
    "non_maximum_suppression",
    "otsu_threshold",
    "threshold",
    "threshold_otsu",
    "threshold_relative",
]

#: tan(22.5°) in OpenCV's Q15 fixed point: the sector test of its Canny.
TG22 = 13573
_CHECK_EVERY = 4  # label-propagation rounds between two convergence checks (host syncs)


# --------------------------------------------------------------------------- input handling


def _prepare_raw(x: Any, name: str) -> tuple[torch.Tensor, Prepared]:
    """``(N, C, H, W)`` view of ``x`` in its own dtype, and a :class:`Prepared` to restore with."""
    t, kind = to_tensor(x, name)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be an integer or floating image, got {t.dtype}")
    if t.dim() not in (2, 3, 4):
        raise ValueError(
            f"{name} must have shape (H, W), (C, H, W) or (N, C, H, W); got {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    prepared = prepare(t[..., :1, :1], name=name)  # validates the dtype, cheaply
    prepared.kind = kind
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)), prepared


def _per_image(value: Any, name: str, n: int, device: torch.device) -> torch.Tensor:
    """A scalar or one value per sample, as an ``(N, 1, 1, 1)`` float64 tensor."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(-1)
        if t.numel() not in (1, n):
            raise ValueError(f"{name} must be a scalar or have one value per image ({n})")
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} must not be NaN")
        return t.expand(n).reshape(n, 1, 1, 1)
    return torch.full((n, 1, 1, 1), real_number(value, name), dtype=torch.float64, device=device)


def _above(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x > t`` without rounding ``t`` towards ``x`` for integer images."""
    if x.is_floating_point():
        return x > t.to(x.dtype) if x.dtype != torch.float64 else x > t
    # integer x: x > t  <=>  x > floor(t)
    return _signed(x) > torch.floor(t).clamp(-(2.0**62), 2.0**62).to(torch.int64)


def _signed(t: torch.Tensor) -> torch.Tensor:
    """``t`` in a signed integer dtype that holds its values if it is uint16, uint32 or uint64,
    for which torch has no type promotion and, on the CPU, no ``amax`` or ``abs``; else ``t``."""
    if t.dtype == torch.uint16:
        return t.to(torch.int32)
    if t.dtype in (torch.uint32, torch.uint64):
        if t.dtype == torch.uint64 and bool((t.view(torch.int64) < 0).any()):
            raise ValueError("uint64 values of 2**63 and above are not supported; convert x first")
        return t.to(torch.int64)
    return t


# --------------------------------------------------------------------------- simple thresholds


def threshold(x: Any, value: float) -> Any:
    """Binary mask ``x > value`` (strict, like OpenCV's ``THRESH_BINARY``).

    Parameters
    ----------
    x
        Tensor or array shaped ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``.
    value
        A number, or one number per image of the batch (a tensor/array of length N).

    Returns
    -------
    Mask of ``x``'s shape (``bool``), as a tensor or array like ``x``; input without pixels (an
    empty batch too) raises ``ValueError``.
    """
    t, prepared = _prepare_raw(x, "x")
    thresholds = _per_image(value, "value", t.shape[0], t.device)
    return prepared.restore(_above(t, thresholds), torch.bool)


def threshold_relative(x: Any, ratio: float) -> Any:
    """Binary mask ``x > ratio * max(x)``, the maximum taken per image (all channels).

    ``ratio`` is usually in ``[0, 1]``; it may be a tensor/array of one ratio per image. Input
    without pixels (an empty batch too) raises ``ValueError``.
    """
    t, prepared = _prepare_raw(x, "x")
    ratios = _per_image(ratio, "ratio", t.shape[0], t.device)
    peak = _signed(t).reshape(t.shape[0], -1).amax(1).to(torch.float64).reshape(-1, 1, 1, 1)
    return prepared.restore(_above(t, ratios * peak), torch.bool)


# --------------------------------------------------------------------------- Otsu

_NUMPY_FLOAT = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
#: Integer images take one bin per level while ``images x levels`` stays below this; beyond it,
#: one bin per distinct value (the same threshold: an empty bin never changes the choice).
_MAX_LEVELS = 2**24


def otsu_index(hist: torch.Tensor, levels: torch.Tensor | None = None) -> torch.Tensor:
    """Index ``k`` maximising the between-class variance of ``bins[: k + 1]`` vs the rest.

    ``hist`` is ``(N, B)`` int64 counts; ``levels`` (``(N, B)`` float64) the value of each bin,
    by default its index. With ``W`` the cumulative count, ``S`` the cumulative first moment
    (level times count) and totals ``W_T``, ``S_T``, the between-class variance is proportional
    to ``(W_T * S - W * S_T)**2 / (W * (W_T - W))``; the first maximum wins, as in OpenCV and
    scikit-image. Candidates with an empty class are skipped. This is imgrad's rule for integer
    data; floating data follow scikit-image's arithmetic (:func:`otsu_centre`).
    """
    if levels is None:
        levels = torch.arange(hist.shape[1], device=hist.device, dtype=torch.float64)
    h = hist.to(torch.float64)
    w = h.cumsum(1)
    s = (h * levels).cumsum(1)
    wt, st = w[:, -1:], s[:, -1:]
    w2 = wt - w
    score = (wt * s - w * st) ** 2 / (w * w2)
    score = torch.where((w > 0) & (w2 > 0), score, torch.full_like(score, -1.0))
    return score.argmax(1)


def histogram_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype floating data are binned in: their own, as ``numpy.histogram`` does (bfloat16,
    which numpy lacks, in float32, which holds its values exactly)."""
    return dtype if dtype in _NUMPY_FLOAT else torch.float32


def histogram_edges(lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """``numpy.histogram``'s bin edges over ``[lo[n], hi[n]]``: ``(N, bins + 1)``, dtype of ``lo``.

    ``lo`` and ``hi`` are ``(N,)`` in a :func:`histogram_dtype`. Each row is
    ``numpy.linspace(lo[n], hi[n], bins + 1, dtype=lo.dtype)``, computed by numpy itself: in the
    data's dtype, so float16 and float32 edges are not float64 edges rounded. A constant row
    gets numpy's ``[v - 0.5, v + 0.5]``. ``ValueError`` where ``numpy.histogram`` cannot bin a
    non-constant row: edges that are not strictly increasing ("too many bins") or a range
    ``hi - lo`` that overflows the dtype.
    """
    dtype = _NUMPY_FLOAT[lo.dtype]
    rows = []
    for low, high in zip(lo.tolist(), hi.tolist(), strict=True):  # tolist: under torch.func too
        first, last = dtype(low), dtype(high)  # exact: they are values of the dtype
        constant = first == last
        if constant:  # numpy.histogram's rule; Otsu's threshold of such an image is its value
            first, last = first - dtype(0.5), last + dtype(0.5)
        with np.errstate(over="ignore"):
            delta = last - first
        if not np.isfinite(delta):
            raise ValueError(
                f"the range of x ({first} to {last}) overflows {dtype.__name__}: no histogram "
                f"bins cover it; convert x to a wider floating dtype"
            )
        edges = np.linspace(first, last, bins + 1, endpoint=True, dtype=dtype)
        if not constant and not bool((edges[:-1] < edges[1:]).all()):
            raise ValueError(
                f"too many bins ({bins}) for the range of x ({first} to {last}) in "
                f"{dtype.__name__}: the bin edges are not increasing, as numpy.histogram "
                f"reports; use fewer bins or a wider floating dtype"
            )
        rows.append(edges)
    return torch.from_numpy(np.stack(rows)).to(lo.device)


def histogram_index(data: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``numpy.histogram``'s bin of each value: ``(N, M)`` int64 in ``[0, B)``.

    ``data`` is ``(N, M)`` within ``[edges[:, 0], edges[:, -1]]``; ``edges`` ``(N, B + 1)`` from
    :func:`histogram_edges`. numpy's arithmetic, in the edges' dtype::

        i = int((x - first) / (last - first) * B)   # B for x == last: B - 1
        i -= x < edges[i]                           # the estimate may be 1 ulp off an edge
        i += x >= edges[i + 1] and i != B - 1       # the last bin holds its right edge
    """
    data = data.to(edges.dtype)
    bins = edges.shape[1] - 1
    first, last = edges[:, :1], edges[:, -1:]
    scale = torch.tensor(bins, dtype=data.dtype, device=data.device)
    estimate = (data - first) / (last - first) * scale
    index = estimate.nan_to_num_(0.0).long().clamp_(0, bins - 1)
    index -= (data < edges.gather(1, index)).long()
    index.clamp_(min=0)
    index += ((data >= edges.gather(1, index + 1)) & (index != bins - 1)).long()
    return index


def otsu_centre(hist: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """scikit-image's Otsu threshold of histograms: ``(N,)`` float64 on ``edges``' device.

    ``hist`` is ``(N, B)`` counts, ``edges`` ``(N, B + 1)`` (:func:`histogram_edges`). The
    threshold is the centre ``(edges[k] + edges[k + 1]) / 2`` of the bin ``k`` that
    ``skimage.filters.threshold_otsu`` picks, with its arithmetic, on the host: float32 counts,
    sums and means in the edges' dtype (float32 for float16 edges), the first maximum of
    ``weight1 * weight2 * (mean1 - mean2)**2``. Near-ties are decided by these roundings, and
    float16/float32 centres are not evenly spaced, so this is not :func:`otsu_index`'s exact
    rule. The result holds the dtype's centre exactly.
    """
    # tolist, not numpy(): it works under torch.func transforms too (exact: values of the dtype)
    e = np.asarray(edges.tolist(), dtype=_NUMPY_FLOAT[edges.dtype])
    centres = (e[:, :-1] + e[:, 1:]) / 2.0
    counts = np.asarray(hist.tolist(), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        weight1 = np.cumsum(counts, axis=1)
        weight2 = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
        moment = counts * centres
        mean1 = np.cumsum(moment, axis=1) / weight1
        mean2 = (np.cumsum(moment[:, ::-1], axis=1) / weight2[:, ::-1])[:, ::-1]
        variance12 = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    k = np.argmax(variance12, axis=1)
    chosen = centres[np.arange(len(k)), k].astype(np.float64)
    return torch.from_numpy(chosen).to(edges.device)


def _batched_histogram(index: torch.Tensor, bins: int) -> torch.Tensor:
    """Counts of ``index`` (``(N, M)`` int64 in ``[0, bins)``) per row, ``(N, bins)`` int64."""
    n = index.shape[0]
    offset = torch.arange(n, device=index.device).unsqueeze(1) * bins
    flat = (index + offset).reshape(-1)
    return torch.bincount(flat, minlength=n * bins).reshape(n, bins)


def _integer_values(t: torch.Tensor) -> torch.Tensor:
    """Integer data as int64 (uint64 only below 2**63, the values int64 holds: see _signed)."""
    return _signed(t).to(torch.int64)


def _integer_otsu(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`otsu_index`'s threshold of ``(N, M)`` int64 ``values``, one bin per level."""
    if dtype in (torch.uint8, torch.int8, torch.int16, torch.uint16):
        base = int(values.min()) if dtype in (torch.int8, torch.int16) else 0
        width = 256 if dtype in (torch.uint8, torch.int8) else 65536
        return otsu_index(_batched_histogram(values - base, width)) + base
    # 32- and 64-bit: bins from each image's minimum, over the widest image's span
    lo, hi = values.amin(1), values.amax(1)
    levels = max(h - low for low, h in zip(lo.tolist(), hi.tolist(), strict=True)) + 1
    if values.shape[0] * levels <= _MAX_LEVELS:
        return otsu_index(_batched_histogram(values - lo[:, None], levels)) + lo
    out = []
    for row in values:  # too many levels for a histogram: one bin per distinct value
        distinct, counts = torch.unique(row, return_counts=True)
        if levels <= 2**63:  # offsets from the minimum, exact in int64 before rounding
            offsets = (distinct - distinct[0]).to(torch.float64)
        else:
            offsets = distinct.to(torch.float64) - distinct[0].to(torch.float64)
        out.append(distinct[otsu_index(counts[None], offsets[None])[0]])
    return torch.stack(out)


def otsu_threshold(x: Any, bins: int | None = None) -> torch.Tensor:
    """Otsu's threshold of each image of a batch, in the data's units.

    The foreground is ``x > threshold`` (see :func:`threshold_otsu`).

    Parameters
    ----------
    x
        Tensor or array ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``; statistics per image ``n``
        over all its channels.
    bins
        Histogram bins for floating data (default 256, scikit-image's ``nbins``). Integer data
        always use one bin per integer value and refuse ``bins``: uint8 gives 256 bins and equals
        ``cv2.threshold(x, 0, 255, THRESH_OTSU)`` and ``skimage.filters.threshold_otsu``; uint16
        gives 65536 bins and equals OpenCV 5's 16-bit Otsu (exact; scikit-image's float
        arithmetic can land a few levels away on photographs); int32/int64 (and uint32, uint64
        below 2**63) take one bin per level from each image's minimum, as scikit-image does.

    Returns
    -------
    torch.Tensor
        ``(N,)`` thresholds: float64 for floating data, int64 for integer data. A constant
        image returns its value (scikit-image's rule), so its mask is empty.

    Notes
    -----
    Floating data give ``skimage.filters.threshold_otsu(x[n], nbins=bins)`` bit for bit: the
    float64 result holds scikit-image's float16, float32 or float64 value exactly. They are
    binned by ``numpy.histogram(x, bins)`` over ``[min, max]`` of each image, in the data's own
    dtype (edges from ``numpy.linspace``, a value on an edge in the bin above it, the maximum in
    the last bin), and the threshold is the centre ``(edges[k] + edges[k + 1]) / 2`` of the last
    bin of the background class, chosen with scikit-image's arithmetic (:func:`otsu_centre`).
    bfloat16 is binned in float32. NaN and infinite values are not allowed, and as with numpy,
    ``ValueError`` if the bins cannot be formed in the data's dtype (a float16 image whose range
    is narrow next to its magnitude, or overflows float16).

    Integer data use :func:`otsu_index`'s exact rule. It differs from scikit-image's floating
    point choice only on near-ties, where scikit-image's roundings decide.

    Limitations: the threshold is found on the host (``bool()`` checks for NaN and infinities,
    numpy's bin edges), so there is no ``torch.compile(fullgraph=True)`` graph, no
    ``torch.export`` (nor ONNX), no ``torch.func.vmap`` and no ``meta`` tensors. Input without
    pixels (an empty batch too) raises ``ValueError``.
    """
    t, _ = _prepare_raw(x, "x")
    n = t.shape[0]
    flat = t.reshape(n, -1)
    if t.is_floating_point():
        if bins is None:
            bins = 256
        if not is_integer(bins) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        bins = int(bins)
        if not bool(torch.isfinite(flat).all()):  # no bins span [min, max] with inf in it
            what = "NaN" if bool(torch.isnan(flat).any()) else "infinite values"
            raise ValueError(f"x contains {what}: Otsu's threshold is undefined")
        data = flat.to(histogram_dtype(t.dtype))
        lo, hi = data.amin(1), data.amax(1)
        edges = histogram_edges(lo, hi, bins)
        centre = otsu_centre(_batched_histogram(histogram_index(data, edges), bins), edges)
        # the gradient: the threshold keeps its place between the image's extremes (as the
        # centre lo + (k + 1/2) (hi - lo) / bins does); the value gains an exact + 0
        lo64, hi64, varies = lo.to(torch.float64), hi.to(torch.float64), hi > lo
        place = torch.where(varies, (centre - lo64) / (hi64 - lo64), 0.0).detach()
        moving = lo64 + place * (hi64 - lo64)
        return torch.where(varies, centre + (moving - moving.detach()), lo64)
    if bins is not None:
        raise ValueError(f"bins applies to floating data only; {t.dtype} uses one bin per value")
    values = _integer_values(flat)
    lo, hi = values.amin(1), values.amax(1)
    return torch.where(hi > lo, _integer_otsu(values, t.dtype), lo)


def threshold_otsu(x: Any, bins: int | None = None) -> Any:
    """Foreground mask ``x > otsu_threshold(x)``, per image; see :func:`otsu_threshold`, whose
    limitations it shares (no fullgraph compile, export, ONNX, vmap or meta tensors)."""
    t, prepared = _prepare_raw(x, "x")
    thresholds = otsu_threshold(t, bins).reshape(-1, 1, 1, 1)
    if t.is_floating_point():  # the threshold is a value of t's dtype (or bfloat16's float32)
        mask = _above(t, thresholds)
    else:  # compared as integers: int64 levels beyond 2**53 stay exact
        mask = _integer_values(t) > thresholds
    return prepared.restore(mask, torch.bool)


# --------------------------------------------------------------------------- hysteresis


def components_with_seed(
    grid: torch.Tensor, positions: torch.Tensor, seed: torch.Tensor, row: int, connectivity: int
) -> torch.Tensor:
    """Which candidates are connected to a seed: exact connected-component labelling.

    ``grid`` is a flat integer tensor over a zero-bordered grid of row length ``row`` (so
    ``p ± 1`` and ``p ± row`` never wrap to another row or image), 0 away from the candidates;
    ``positions`` are the candidates' flat indices in it and ``seed`` flags the strong
    ones. ``grid`` is overwritten with an index map (``1 + i`` at candidate ``i``). Apart from it,
    only the candidates are touched.

    Algorithm (Shiloach-Vishkin style hooking with pointer jumping, vectorised):

    1. Edges: each candidate is linked to its "forward" neighbours (right, and the row below:
       below-left, below, below-right for 8-connectivity) that are candidates too, read from the
       index map. Node ``1 + i`` is candidate ``i``; node 0 is a virtual root linked to every
       seed, so all seeded components are one from the start and edges between two seeds are
       dropped.
    2. Seeds start with parent 0, other nodes with themselves. Each round, for every edge (u, v)
       the parent of the larger root is hooked to the smaller label
       (``P[P[u]] = min(P[P[u]], P[v])`` and symmetrically, with ``scatter_reduce("amin")``), then
       ``P = P[P]`` halves every path (pointer jumping). Labels only decrease and always name a
       node of the same tree; trees only merge.
    3. Every few rounds the edges whose ends share a parent (hence a tree) are dropped; done when
       none is left. Pointer jumping makes a path of length L converge in O(log L) rounds (a
       1-pixel spiral filling a 2048² image takes about 35).
    """
    # 1-D lookups by index_select: on CPU it is twice as fast as advanced indexing
    k = positions.numel()
    device = positions.device
    grid.index_copy_(0, positions, torch.arange(1, k + 1, dtype=grid.dtype, device=device))
    offsets = (1, row) if connectivity == 4 else (1, row - 1, row, row + 1)
    # node of each forward neighbour, 0 if it is no candidate
    around = (positions[:, None] + torch.tensor(offsets, device=device)).reshape(-1)
    label = grid.index_select(0, around)
    linked = label.nonzero().squeeze(1)
    edges = torch.stack([linked // len(offsets) + 1, label.index_select(0, linked).long()])
    seeded = torch.cat([seed.new_zeros(1), seed])
    edges = edges[:, ~_lookup(seeded, edges).all(0)]
    parent = torch.arange(k + 1, device=device)
    parent.masked_fill_(seeded, 0)
    rounds = 0
    while edges.shape[1]:
        ends = _lookup(parent, edges)
        if rounds % _CHECK_EVERY == 0:  # drop the edges within a tree
            live = ends[0] != ends[1]
            edges, ends = edges[:, live], ends[:, live]
        parent.scatter_reduce_(0, ends[0], ends[1], "amin")  # hook the root of u under v's label
        parent.scatter_reduce_(0, ends[1], ends[0], "amin")  # and the root of v under u's label
        parent = parent.index_select(0, parent)  # pointer jumping: every path halves
        rounds += 1
    return parent[1:] == 0


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D ``table``, by ``index_select``."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)


def unbordered_positions(bordered: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat indices in the ``(N, H, W)`` grid of the flat indices ``bordered`` of interior pixels
    of the ``(N, H+2, W+2)`` zero-bordered grid."""
    row = width + 2
    image, rest = bordered // ((height + 2) * row), bordered % ((height + 2) * row)
    return (image * height + rest // row - 1) * width + rest % row - 1


def index_dtype(numel: int) -> torch.dtype:
    """Integer dtype of an index map over ``numel`` pixels (see :func:`components_with_seed`)."""
    return torch.int32 if numel < 2**31 else torch.int64


def nonzero_flat(values: torch.Tensor) -> torch.Tensor:
    """``values.nonzero()`` of a 1-D tensor as a 1-D int64 tensor (sorted).

    int32 entries are tested two at a time, read as int64 (a pair is non-zero if either is):
    CPU ``nonzero`` costs per element, not per byte, so this halves its time on a sparse grid
    such as Canny's candidates (about 1% of the pixels). Pairs are then split, which costs more
    than it saves once over 1 in 16 pairs is non-zero: then plain ``nonzero`` is used.
    """
    even = values.numel() - values.numel() % 2
    if values.dtype != torch.int32 or values.data_ptr() % 8 or even == 0:
        return values.nonzero().squeeze(1)
    pairs = values[:even].view(torch.int64).nonzero().squeeze(1)
    if pairs.numel() * 32 > even:
        return values.nonzero().squeeze(1)
    both = torch.stack([2 * pairs, 2 * pairs + 1], 1).reshape(-1)
    found = both[values.index_select(0, both) != 0]
    if even < values.numel():  # the odd last entry
        found = torch.cat([found, values[even:].nonzero().squeeze(1) + even])
    return found


def hysteresis_grid(grid: torch.Tensor, n: int, h: int, w: int, connectivity: int) -> torch.Tensor:
    """Hysteresis on a state grid: ``(N * H * W,)`` bool, the candidates connected to a seed.

    ``grid`` is the flat zero-bordered ``(N, H+2, W+2)`` grid in :func:`index_dtype`: 0 for
    background, 1 for a candidate, 2 for a seed (strong) candidate. It is overwritten. CPU
    tensors go to the native flood fill where it is built (:mod:`imgrad._native`), others to
    :func:`hysteresis_grid_torch`; the same bits.
    """
    from . import _native  # imports the extension itself on first use only

    if _native.applies(grid):
        return _native.hysteresis_grid(grid, n, h, w, connectivity)
    return hysteresis_grid_torch(grid, n, h, w, connectivity)


def hysteresis_grid_torch(
    grid: torch.Tensor, n: int, h: int, w: int, connectivity: int
) -> torch.Tensor:
    """:func:`hysteresis_grid` in torch (any device): :func:`components_with_seed`'s labelling."""
    positions = nonzero_flat(grid)
    flat = unbordered_positions(positions, h, w)
    seed = grid.index_select(0, positions) == 2
    keep = components_with_seed(grid, positions, seed, w + 2, connectivity)
    out = torch.zeros(n * h * w, dtype=torch.bool, device=grid.device)
    out[flat[keep]] = True
    return out


def hysteresis(
    candidates: torch.Tensor, strong: torch.Tensor, connectivity: int = 8
) -> torch.Tensor:
    """Candidates connected to a strong pixel, for ``(N, H, W)`` bool masks (strong ⊆ candidates).

    The tensor-level core of :func:`hysteresis_threshold`: the native flood fill on CPU
    tensors where it is built (:mod:`imgrad._native`), else :func:`hysteresis_torch`.
    """
    from . import _native  # imports the extension itself on first use only

    if _native.applies(candidates, strong):
        return _native.hysteresis_masks(candidates, strong, connectivity)
    return hysteresis_torch(candidates, strong, connectivity)


def hysteresis_torch(
    candidates: torch.Tensor, strong: torch.Tensor, connectivity: int = 8
) -> torch.Tensor:
    """:func:`hysteresis` in torch (any device): :func:`components_with_seed`'s labelling."""
    n, h, w = candidates.shape
    dtype = index_dtype(n * (h + 2) * (w + 2))
    state = candidates.to(dtype) + (strong & candidates).to(dtype)
    grid = F.pad(state, (1, 1, 1, 1)).reshape(-1)
    return hysteresis_grid_torch(grid, n, h, w, connectivity).reshape(n, h, w)


def _check_connectivity(connectivity: Any) -> int:
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return int(connectivity)


def hysteresis_threshold(x: Any, low: float, high: float, connectivity: int = 8) -> Any:
    """Pixels above ``low`` that are connected to a pixel above ``high`` (both strict).

    Parameters
    ----------
    x
        Tensor or array ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``; each channel of each image
        is an independent plane.
    low, high
        Thresholds in ``x``'s units (numbers, or one per image). ``low > high`` raises.
    connectivity
        8 (default, OpenCV's Canny) or 4 (scikit-image's ``apply_hysteresis_threshold``).

    Returns
    -------
    Boolean mask of ``x``'s shape, as a tensor or array like ``x``.

    Notes
    -----
    On the CPU, a native flood fill from every strong pixel, O(pixels), where imgrad's C
    extension is built (``IMGRAD_NATIVE=0`` turns it off; see :mod:`imgrad._native`).
    Elsewhere (CUDA, under ``torch.compile`` or ``torch.func``), exact connected-component
    labelling by hooking and pointer jumping on the candidate pixels only (see
    ``components_with_seed``): no per-pixel Python, no iteration cap, O(log L) rounds for a
    connected path of length L. Both give the same mask.

    Limitations: the labelling reads values on the host (``bool()`` of the thresholds' order,
    ``nonzero()`` of the candidates, a loop until the labels settle), so there is no
    ``torch.compile(fullgraph=True)`` graph, no ``torch.export`` (nor ONNX), no
    ``torch.func.vmap`` and no ``meta`` tensors. Input without pixels (an empty batch too)
    raises ``ValueError``.
    """
    connectivity = _check_connectivity(connectivity)
    t, prepared = _prepare_raw(x, "x")
    n, c, h, w = t.shape
    lo = _per_image(low, "low", n, t.device)
    hi = _per_image(high, "high", n, t.device)
    if bool((lo > hi).any()):
        raise ValueError(f"low must not exceed high; got low={low!r}, high={high!r}")
    weak, strong = _above(t, lo), _above(t, hi)
    out = hysteresis(weak.reshape(n * c, h, w), strong.reshape(n * c, h, w), connectivity)
    return prepared.restore(out.reshape(n, c, h, w), torch.bool)


# --------------------------------------------------------------------------- NMS


def nms_keep(
    bordered: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor, wide: torch.dtype | None = None
) -> torch.Tensor:
    """Which pixels are maxima along their gradient sector (OpenCV's Canny rules), dense.

    ``bordered`` is the magnitude ``(..., H + 2, W + 2)`` with a ring of zeros (or of the
    neighbouring rows of a strip) around the ``(..., H, W)`` pixels of ``gy``/``gx``.

    Sector (OpenCV, ``TG22 = round(tan(22.5°) * 2**15)``): with ``x = |gx| * TG22`` and
    ``y = |gy| * 2**15``, horizontal if ``y < x``, vertical if ``y > x + |gx| * 2**16``, else
    diagonal: up-left/down-right when gx and gy have the same sign (-0.0 counts as positive),
    up-right/down-left otherwise. Tie rules: horizontal ``m > left and m >= right``, vertical
    ``m > up and m >= down``, diagonals strict on both. The products are computed in ``wide``:
    by default int64 for integer gradients and float64 for floating ones (exact below 2**36);
    callers that know their integer gradients stay below 27146 pass int32
    (``27146 * 79109 < 2**31``), which vectorises twice as wide.
    """
    if wide is None:
        wide = torch.float64 if gy.is_floating_point() else torch.int64
    ax, ay = gx.abs().to(wide), gy.abs().to(wide)
    tg22x = ax * TG22
    y = ay * 32768
    horizontal = y < tg22x
    vertical = y > tg22x + ax * 65536
    same_sign = (gx < 0) == (gy < 0)
    m = bordered[..., 1:-1, 1:-1]
    left, right = bordered[..., 1:-1, :-2], bordered[..., 1:-1, 2:]
    up, down = bordered[..., :-2, 1:-1], bordered[..., 2:, 1:-1]
    diagonal = torch.where(
        same_sign,
        (m > bordered[..., :-2, :-2]) & (m > bordered[..., 2:, 2:]),
        (m > bordered[..., :-2, 2:]) & (m > bordered[..., 2:, :-2]),
    )
    vertical_keep = torch.where(vertical, (m > up) & (m >= down), diagonal)
    return torch.where(horizontal, (m > left) & (m >= right), vertical_keep)


def non_maximum_suppression(magnitude: Any, gy: Any, gx: Any) -> Any:
    """Keep the magnitude at local maxima along the gradient direction, 0 elsewhere.

    OpenCV's Canny rule: the direction is one of four sectors split at 22.5° (decided in exact
    arithmetic, see :func:`nms_keep`); a pixel survives if its magnitude exceeds its neighbour
    before it (left, up, or the diagonal one above) and is at least the one after it
    (horizontal/vertical) or exceeds it (diagonals). Outside the image counts as magnitude 0.
    ``+y`` is down: ``gx, gy > 0`` compares with the up-left and down-right neighbours.

    Parameters
    ----------
    magnitude, gy, gx
        Same shape ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``, tensors or arrays; each
        channel is suppressed on its own. Zero (or negative) magnitudes are never kept.

    Returns
    -------
    The suppressed magnitude, same shape, dtype and container as ``magnitude``.

    Notes
    -----
    Compiles (``fullgraph=True``) and exports; the ONNX models export but do not run in
    onnxruntime (1.32), which has no ``Where`` kernel for the bool tensors of the sector choice.
    Input without pixels (an empty batch too) raises ``ValueError``.
    """
    m, prepared = _prepare_raw(magnitude, "magnitude")
    y, _ = _prepare_raw(gy, "gy")
    x, _ = _prepare_raw(gx, "gx")
    if not (m.shape == y.shape == x.shape):
        raise ValueError(
            f"magnitude, gy and gx shapes differ: {tuple(m.shape)}, {tuple(y.shape)}, "
            f"{tuple(x.shape)}"
        )
    n, c, h, w = m.shape
    s = _signed(m)  # uint16/32/64: compared in a signed dtype, which torch can
    keep = nms_keep(F.pad(s, (1, 1, 1, 1)), _signed(y), _signed(x)) & (s > 0)
    return prepared.restore(torch.where(keep, m, torch.zeros_like(m)), m.dtype)
