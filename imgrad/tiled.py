"""Huge images: tiled processing with halos, identical bit for bit to the whole-image call.

An image larger than memory is cut into output tiles. Each tile reads a window of the source that
is larger by the operator's halo (``radius`` pixels) on every side, where the pixels outside the
image follow the **global** border rule (a window at the left edge of a ``reflect101`` image reads
the reflected columns of the whole image, a ``circular`` one reads the right edge, ``constant``
pads with ``border_value``). The window then goes through
:func:`imgrad.gradients.first_derivatives_extended` (or the second-derivative twin), which does
exactly the arithmetic of the whole-image call for every output pixel, so the stitched result is
``torch.equal`` to the whole-image result for every operator, border, colour mode and stage
(except a float64 ``orientation``: within 1 ulp, see :func:`imgrad.orientation`).

Stages
------
Local (one pass; the result at a pixel depends on its neighbourhood only):

=============  ==============================================================================
stage          equals, on the whole image
=============  ==============================================================================
gy, gx         ``spatial_gradient(image, operator, ...).gy`` / ``.gx``
magnitude      ``gradient_magnitude(image, ..., norm=norm)``
orientation    ``orientation(spatial_gradient(image, ...), degrees=..., signed=...)``
gyy, gxy, gxx  ``second_derivatives(image, operator, ...).gyy`` / ``.gxy`` / ``.gxx``
laplacian      ``gxx + gyy`` of the same call (``imgrad.laplacian(image, ksize)`` for Sobel)
threshold      ``threshold(magnitude, value)`` (strict ``>``, a bool mask)
=============  ==============================================================================

Global statistics, then local (two or three passes over the tiles, each one streamed):

- ``stage="threshold", ratio=r``: pass 1 takes the maximum magnitude of the whole image, pass 2
  thresholds at ``r * max``; equals ``threshold_relative(magnitude, r)``.
- ``stage="threshold", otsu=True``: pass 1 takes the minimum and maximum, pass 2 adds up the
  tiles' histograms (exact integer counts), pass 3 thresholds at Otsu's value of the global
  histogram; equals ``threshold_otsu(magnitude, bins)``.

Not local, refused: ``hysteresis`` and ``canny``. Whether a weak pixel survives hysteresis
depends on a path of weak pixels to a strong one, which can cross any number of tiles, so no
halo is ever enough. :func:`process_huge` raises :class:`NonLocalStageError` for them with what
to use instead (``threshold``, or the whole-image :func:`imgrad.canny` when the image fits in
memory).

Sources and destinations
------------------------
``src`` is a numpy array or tensor (``(H, W)`` or ``(C, H, W)``), a ``zarr.Array``, a path to a
TIFF (``.tif``/``.tiff``, read tile by tile, or strip by strip, through ``tifffile``'s Zarr
store, alpha treated in each window as :func:`imgrad.io.read_image` treats it) or to a Zarr array
(``.zarr``). Any other image file is read whole with :func:`imgrad.io.read_image` and its pixel
limit. ``dst`` is ``None`` (the result is returned in memory), a ``.tif``/``.tiff`` path (a
tiled TIFF, written tile by tile from a generator), a ``.zarr`` path (written chunk by chunk, by
the workers themselves on a cluster), or another image path for results small enough for
:func:`imgrad.io.write_image`. Files are written atomically: to a temporary name beside
``dst``, renamed when complete. Only a few tiles are ever in memory.
Before any tile is computed, :func:`check_destination` refuses a ``dst`` that is the input,
holds it or lies inside it, a ``.zarr`` path holding something other than a Zarr array (which
the output would replace), and a missing output folder.

Output values: floats by default (float32 for integer and float32 input), a bool mask for
``threshold`` (0/255 ``uint8`` in files); ``output="uint8"``/``"uint16"`` maps values with
:func:`imgrad.io.to_image_values` at a fixed ``scale`` (0 at mid-grey for the signed stages
``gy, gx, gyy, gxy, gxx, laplacian``), which is pointwise and so tiles exactly too.

``tifffile`` and ``zarr`` (the ``imgrad[dask]`` extra) are imported only when a TIFF or Zarr
file is used.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._input import compute_dtype, is_integer, native_order, real_number, result_dtype
from .engine import border_index
from .gradients import (
    NORMS,
    Gradients,
    GradientSpec,
    finish_first,
    finish_second,
    first_derivatives_extended,
    luminance,
    orientation,
    second_derivatives_extended,
    vector_norm,
)
from .thresholds import histogram_dtype, histogram_edges, histogram_index, otsu_centre
from .thresholds import threshold as threshold_mask

__all__ = [
    "LOCAL_STAGES",
    "NON_LOCAL_STAGES",
    "STAGES",
    "MissingExtraError",
    "NonLocalStageError",
    "check_destination",
    "check_tile",
    "open_source",
    "process_huge",
    "refuse_non_local",
    "streamable",
]

FIRST_ORDER = ("gy", "gx", "magnitude", "orientation", "threshold")
SECOND_ORDER = ("gyy", "gxy", "gxx", "laplacian")
SIGNED_STAGES = ("gy", "gx", "gyy", "gxy", "gxx", "laplacian")
#: Every stage :func:`process_huge` computes. All are exact by tiles.
STAGES = FIRST_ORDER + SECOND_ORDER
#: Stages whose value at a pixel depends only on a fixed neighbourhood (one pass).
LOCAL_STAGES = STAGES
#: Stages that cannot be tiled, and why.
NON_LOCAL_STAGES: dict[str, str] = {
    "hysteresis": (
        "hysteresis keeps a weak pixel when a chain of weak pixels links it to a strong one; "
        "such a chain can cross any number of tiles, so no halo makes it exact"
    ),
    "canny": "Canny ends with hysteresis, which is not local",
}
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIX = ".zarr"
DEFAULT_TILE = 1024
_EXTRA_HINT = "pip install 'imgrad[dask]'"
_TMP_MARKER = ".imgrad-tmp"

Progress = Callable[[int, int], None]
Block = tuple[int, int, int, int]  # row start, row stop, column start, column stop


class NonLocalStageError(ValueError):
    """A stage that cannot be computed tile by tile (hysteresis, Canny)."""


class MissingExtraError(ImportError):
    """An optional dependency of the ``imgrad[dask]`` extra is not installed."""


def require(module: str, purpose: str) -> Any:
    """Import an optional module of the ``imgrad[dask]`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module!r}: {_EXTRA_HINT}"
        ) from exc


# --------------------------------------------------------------------------- sources


class Source:
    """Read access to a ``(C, H, W)`` image by rectangles; picklable (files reopen lazily)."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    rank: int  # 2 or 3: the rank an in-memory result is given back with
    kind: str  # "tensor" or "numpy": the container of an in-memory result
    read_in_task: bool  # True: each task reads its own window (files on shared storage)

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release what reading opened in this process (nothing by default)."""


class ArraySource(Source):
    """An in-memory numpy array or tensor; windows are cut by the caller and shipped."""

    read_in_task = False

    def __init__(self, image: np.ndarray | torch.Tensor):
        if isinstance(image, torch.Tensor):
            if image.dtype == torch.bfloat16:  # the tiles are numpy arrays
                raise TypeError(
                    "process_huge works on numpy-compatible dtypes and bfloat16 has none; "
                    "pass image.float() (or compute a tensor that fits in memory directly)"
                )
            self.kind = "tensor"
            array = image.detach().cpu().numpy()
        else:
            self.kind = "numpy"
            array = native_order(np.asarray(image))  # torch takes native byte order only
        if array.ndim not in (2, 3):
            raise ValueError(f"image must have shape (H, W) or (C, H, W); got {array.shape}")
        self.rank = array.ndim
        self.array = array if array.ndim == 3 else array[None]
        self.shape = tuple(self.array.shape)  # type: ignore[assignment]
        self.dtype = self.array.dtype

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        return self.array[:, rows[0] : rows[1], cols[0] : cols[1]]


class ZarrSource(Source):
    """A Zarr array ``(H, W)`` or ``(C, H, W)``, by path (reopened in each process) or object."""

    read_in_task = True
    kind = "numpy"

    def __init__(self, array: Any):
        self._path = None if hasattr(array, "shape") else str(array)
        self._array = array if self._path is None else None
        z = self._open()
        if z.ndim not in (2, 3):
            raise ValueError(f"Zarr image must have shape (H, W) or (C, H, W); got {z.shape}")
        self.rank = z.ndim
        self.shape = tuple(z.shape) if z.ndim == 3 else (1, *z.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(z.dtype)

    def _open(self) -> Any:
        if self._array is None:
            zarr = require("zarr", "reading Zarr images")
            self._array = zarr.open_array(self._path, mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._path is not None:
            state["_array"] = None
        return state

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        z = self._open()
        if z.ndim == 2:
            return np.asarray(z[rows[0] : rows[1], cols[0] : cols[1]])[None]
        return np.asarray(z[:, rows[0] : rows[1], cols[0] : cols[1]])


#: TIFF/EXIF orientation -> (transpose, then flip rows, then flip columns) of the stored image,
#: as ``PIL.ImageOps.exif_transpose`` (and :func:`imgrad.io.read_image`) turn it upright.
_UPRIGHT = (False, False, False)
_ORIENTATIONS = {
    1: _UPRIGHT,
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}


class TiffSource(Source):
    """The first image of a TIFF file, read by tiles or strips through tifffile's Zarr store
    (uncompressed contiguous data is memory-mapped instead: a single-strip file is one chunk,
    which the store would decode whole for every tile).

    Layouts ``YX`` (grey), ``YXS`` (samples interleaved, e.g. RGB) and ``SYX``/``CYX``. The
    samples are those :func:`imgrad.io.read_image` gives for the whole file: bilevel as 0/255,
    1- and 8-bit MinIsWhite inverted, a palette expanded to RGB, floats as float32, other
    integer types as uint8/uint16 when every value fits (checked window by window), the
    Orientation tag applied. Colour spaces other than grey, RGB, palette and YCbCr (decoded to
    RGB) are refused: a tile cannot be converted exactly as Pillow converts the whole image.
    Alpha is treated by ``alpha`` as :func:`imgrad.io.read_image` treats it (composited onto
    black, exactly, pixel by pixel, or dropped; premultiplied alpha dropped, extra samples of
    unspecified meaning left out), so the source has the grey or colour channels only.
    """

    read_in_task = True
    kind = "numpy"
    rank = 3

    def __init__(self, path: str | os.PathLike[str], alpha: str = "composite"):
        tifffile = require("tifffile", "reading TIFF images tile by tile")
        from .io import ImageReadError, tiff_extra_samples

        self._path = str(path)
        try:
            with tifffile.TiffFile(self._path) as tif:
                series, page = tif.series[0], tif.pages.first
                self.axes, shape = series.axes, tuple(series.shape)
                stored = np.dtype(series.dtype)
                photometric = page.photometric
                colormap = page.colormap
                tag = page.tags.get("Orientation")
                extrasamples = page.extrasamples
                compression = page.compression
        except Exception as exc:  # tifffile raises many kinds on a corrupt file
            raise ImageReadError(
                f"cannot read '{path}': corrupt or unsupported TIFF ({exc})"
            ) from exc
        if not isinstance(compression, tifffile.COMPRESSION):  # a code tifffile does not know
            raise ImageReadError(
                f"cannot read '{path}' tile by tile: its compression ({compression}) is unknown"
            )
        try:  # LZW, JPEG, ZSTD, ... are decoded by imagecodecs (zlib and PackBits need none)
            tifffile.TIFF.DECOMPRESSORS[compression]
        except (KeyError, ValueError, ImportError) as exc:
            raise MissingExtraError(
                f"reading '{path}' tile by tile: its {compression.name} compression needs the "
                f"optional package 'imagecodecs': {_EXTRA_HINT}"
            ) from exc
        if photometric not in _PHOTOMETRICS:
            raise ImageReadError(
                f"cannot read '{path}' tile by tile: its colour space ({photometric.name}) is "
                f"not grey, RGB or a palette; convert the file to grey or RGB"
            )
        self._invert = photometric == _MINISWHITE and stored in (np.bool_, np.uint8)  # as Pillow
        self._palette = None
        if photometric == _PALETTE:  # the colour table in 8 bits, as Pillow reads it
            self._palette = (np.asarray(colormap) // 256).astype(np.uint8)
        self.dtype = _read_dtype(stored) if self._palette is None else np.dtype(np.uint8)
        self._orientation = _ORIENTATIONS.get(int(tag.value) if tag is not None else 1, _UPRIGHT)
        if self.axes == "YX":
            channels = 1 if self._palette is None else 3
            self.shape = (channels, *shape)  # type: ignore[assignment]
            self.rank = 2 if channels == 1 else 3
        elif self.axes == "YXS" and self._palette is None:
            self.shape = (shape[2], shape[0], shape[1])
        elif self.axes in ("SYX", "CYX") and self._palette is None:
            self.shape = shape  # type: ignore[assignment]
        else:
            raise ValueError(
                f"'{self._path}': TIFF axes {self.axes!r} are not an image (YX, YXS, SYX or CYX)"
            )
        # the samples read (colour, then alpha if any) and what becomes of the alpha
        self._kept, premultiplied = tiff_extra_samples(extrasamples, self.shape[0])
        self._composite = alpha == "composite" and not premultiplied and self._kept in (2, 4)
        channels = self._kept - 1 if self._kept in (2, 4) else self._kept
        if self._orientation[0]:  # transposed: the picture is W x H
            self.shape = (channels, self.shape[2], self.shape[1])
        else:
            self.shape = (channels, *self.shape[1:])

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """The window of the picture as viewed (after the Orientation tag)."""
        transpose, flip_rows, flip_cols = self._orientation
        height, width = self.shape[1:]
        if flip_rows:
            rows = (height - rows[1], height - rows[0])
        if flip_cols:
            cols = (width - cols[1], width - cols[0])
        window = self._samples(self._stored(*((cols, rows) if transpose else (rows, cols))))
        if self._composite:
            from .io import composite_onto_black

            window = composite_onto_black(window[:-1], window[-1:])
        else:
            window = window[: self.shape[0]]
        if transpose:
            window = window.transpose(0, 2, 1)
        if flip_rows:
            window = window[:, ::-1]
        if flip_cols:
            window = window[:, :, ::-1]
        return window

    def _samples(self, stored: np.ndarray) -> np.ndarray:
        """Stored samples as the whole-image reader gives them (see the class notes)."""
        from .io import integer_samples

        stored = native_order(stored)  # a mapped big-endian file
        if self._invert:  # the grey sample; alpha, if any, as stored
            grey = ~stored[:1] if stored.dtype == np.bool_ else np.uint8(255) - stored[:1]
            stored = np.concatenate([grey, stored[1:]]) if len(stored) > 1 else grey
        if stored.dtype == np.bool_:
            return stored.astype(np.uint8) * np.uint8(255)
        if self._palette is not None:
            return self._palette[:, stored[0]]
        if stored.dtype.kind == "f":
            return stored.astype(np.float32, copy=False)
        if stored.dtype.kind in "iu":
            return integer_samples(stored, self._path)
        return stored  # complex: refused by process_huge with the usual message

    def _stored(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """``(C, h, w)`` window of the samples as stored."""
        array = _tiff_array(self._path)
        r, c = slice(*rows), slice(*cols)
        if self.axes == "YX":
            return np.asarray(array[r, c])[None]
        if self.axes == "YXS":
            return np.moveaxis(np.asarray(array[r, c, : self._kept]), -1, 0)
        return np.asarray(array[: self._kept, r, c])

    def close(self) -> None:
        """Close this process's handle on the file (it reopens if read again)."""
        with _TIFF_LOCK:
            for key in [k for k in _TIFF_STORES if k[0] == self._path]:
                _TIFF_STORES.pop(key)[0]()


_MINISWHITE, _PALETTE = 0, 3
_PHOTOMETRICS = (_MINISWHITE, 1, 2, _PALETTE, 6)  # MinIsBlack, RGB, YCbCr (decoded as RGB)


def _read_dtype(stored: np.dtype) -> np.dtype:
    """The dtype :func:`imgrad.io.read_image` gives samples stored as ``stored``."""
    if stored == np.bool_ or stored.itemsize == 1:
        return np.dtype(np.uint8)
    if stored.kind == "f":
        return np.dtype(np.float32)
    if stored.kind in "iu":
        return np.dtype(np.uint16)  # uint16, or other integers whose values fit (else an error)
    return stored


# One open file per TIFF and process: tasks on a worker share it instead of parsing the file
# again for every tile. The key has the file's mtime and size, so a rewritten file is opened
# afresh; the value is (close, array). At most _TIFF_OPEN files stay open: a long-lived worker
# that serves many files forgets the least recently used, which is closed when no reader holds
# its array any more.
_TIFF_STORES: OrderedDict[tuple[str, int, int], tuple[Callable[[], None], Any]] = OrderedDict()
_TIFF_LOCK = threading.Lock()
_TIFF_OPEN = 8


def _tiff_array(path: str) -> Any:
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _TIFF_LOCK:
        if key in _TIFF_STORES:
            _TIFF_STORES.move_to_end(key)
            return _TIFF_STORES[key][1]
        tifffile = require("tifffile", "reading TIFF images tile by tile")
        try:  # uncompressed contiguous samples: read only the bytes needed
            array = tifffile.memmap(path, series=0, level=0, mode="r")
            entry: tuple[Callable[[], None], Any] = (lambda: None, array)
        except ValueError:  # tiled, compressed or bit-packed
            zarr = require("zarr", "reading TIFF images tile by tile")
            store = tifffile.imread(path, aszarr=True, series=0, level=0)
            array = zarr.open_array(store, mode="r")
            weakref.finalize(array, store.close)  # evicted: closed once no reader holds it
            entry = (store.close, array)
        _TIFF_STORES[key] = entry
        while len(_TIFF_STORES) > _TIFF_OPEN:
            _TIFF_STORES.popitem(last=False)
        return entry[1]


def streamable(path: Any) -> bool:
    """True for a path that :func:`open_source` streams by tiles (a TIFF file, a Zarr array);
    other image files are read whole."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    path = Path(path)
    return path.suffix.lower() in (*TIFF_SUFFIXES, ZARR_SUFFIX) or path.is_dir()


def open_source(src: Any, alpha: str = "composite") -> Source:
    """A :class:`Source` for an array, tensor, ``zarr.Array`` or path (see the module notes);
    image files have their ``alpha`` treated as by :func:`imgrad.io.read_image`."""
    from .io import check_alpha

    check_alpha(alpha)
    if isinstance(src, Source):
        return src
    if isinstance(src, (np.ndarray, torch.Tensor)):
        return ArraySource(src)
    if not isinstance(src, (str, os.PathLike)):
        if hasattr(src, "shape") and hasattr(src, "chunks"):
            return ZarrSource(src)  # a zarr.Array (or anything sliced like one)
        raise TypeError(
            f"src must be an array, a tensor, a zarr.Array or a path; got {type(src).__name__}"
        )
    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"'{path}': no such file or directory")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return TiffSource(path, alpha)
    if streamable(path):
        return ZarrSource(path)
    from .io import read_image  # the pixel limit says to convert a too-large file to TIFF/Zarr

    return ArraySource(read_image(path, alpha=alpha))


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to compute one tile; small and picklable."""

    spec: GradientSpec
    stage: str
    norm: str
    degrees: bool
    signed: bool
    shape: tuple[int, int, int]
    in_dtype: torch.dtype
    threshold: float | None = None  # resolved threshold value for the threshold stage
    output: str = "float"  # "float", "uint8" or "uint16"
    scale: float | None = None

    @property
    def halo(self) -> int:
        return self.spec.op.radius

    @property
    def channels_out(self) -> int:
        return 1 if self.spec.color in ("luminance", "max") else self.shape[0]


@dataclass(frozen=True)
class _AxisWindow:
    runs: list[tuple[int, int]]  # source ranges read, in order
    take: torch.Tensor | None  # positions in the concatenated runs, or None for all of them
    pad_before: int  # constant border: samples of border_value before / after
    pad_after: int


def _axis_window(n: int, start: int, stop: int, halo: int, border: str) -> _AxisWindow:
    """Which source samples an extended window ``[start - halo, stop + halo)`` consists of."""
    if border == "constant":
        lo, hi = max(start - halo, 0), min(stop + halo, n)
        return _AxisWindow([(lo, hi)], None, lo - (start - halo), (stop + halo) - hi)
    index = border_index(n, halo, halo, border, torch.device("cpu"))[start : stop + 2 * halo]
    unique = torch.unique(index, sorted=True)
    breaks = (torch.nonzero(unique.diff() != 1).squeeze(1) + 1).tolist()
    edges = [0, *breaks, unique.numel()]
    runs = [(int(unique[a]), int(unique[b - 1]) + 1) for a, b in pairwise(edges)]
    take = torch.searchsorted(unique, index)
    straight = bool(torch.equal(take, torch.arange(take.numel())))  # a plain run of the image
    return _AxisWindow(runs, None if straight else take, 0, 0)


def read_window(source: Source, job: TileJob, block: Block) -> np.ndarray:
    """The source samples of a block's extended window, as ``(C, h', w')`` (before gathering)."""
    _, h, w = source.shape
    rows = _axis_window(h, block[0], block[1], job.halo, job.spec.border)
    cols = _axis_window(w, block[2], block[3], job.halo, job.spec.border)
    parts = [np.concatenate([source.read(r, c) for c in cols.runs], axis=-1) for r in rows.runs]
    return np.concatenate(parts, axis=-2) if len(parts) > 1 else parts[0]


def extend_window(raw: np.ndarray, job: TileJob, block: Block) -> torch.Tensor:
    """``(1, C, h + 2r, w + 2r)`` in the compute dtype: the whole image's extension, cut out."""
    _, h, w = job.shape
    rows = _axis_window(h, block[0], block[1], job.halo, job.spec.border)
    cols = _axis_window(w, block[2], block[3], job.halo, job.spec.border)
    x = torch.from_numpy(np.ascontiguousarray(raw))[None]
    if job.spec.color == "luminance":  # before the border, as on the whole image (constant)
        x = luminance(x, compute_dtype(job.in_dtype))
    else:
        x = x.to(compute_dtype(job.in_dtype))
    if rows.take is not None:
        x = x.index_select(-2, rows.take)
    if cols.take is not None:
        x = x.index_select(-1, cols.take)
    if job.spec.border == "constant":
        pads = (cols.pad_before, cols.pad_after, rows.pad_before, rows.pad_after)
        x = F.pad(x, pads, mode="constant", value=job.spec.border_value)
    return x


def stage_values(job: TileJob, xp: torch.Tensor, stage: str | None = None) -> torch.Tensor:
    """The stage's values on an extended window, mirroring the whole-image functions step by step.

    ``stage`` overrides ``job.stage`` (the statistics passes of a threshold take the magnitude).
    """
    stage = stage or job.stage
    spec, out_dtype = job.spec, result_dtype(job.in_dtype)
    if stage in SECOND_ORDER:
        raw = second_derivatives_extended(xp, spec.op, job.halo)
        gyy, gxy, gxx = (g.to(out_dtype) for g in finish_second(*raw, spec))
        return {"gyy": gyy, "gxy": gxy, "gxx": gxx}.get(stage, gxx + gyy)
    gy, gx = finish_first(*first_derivatives_extended(xp, spec.op, job.halo), spec)
    if stage in ("gy", "gx", "orientation"):
        gy, gx = gy.to(out_dtype), gx.to(out_dtype)
        if stage == "orientation":
            return orientation(Gradients(gy, gx), degrees=job.degrees, signed=job.signed)
        return gy if stage == "gy" else gx
    values = vector_norm(gy, gx, job.norm).to(out_dtype)  # as gradient_magnitude: rounded once
    if stage == "threshold":
        assert job.threshold is not None, "the threshold is resolved before the last pass"
        if math.isnan(job.threshold):  # ratio x a NaN maximum: as threshold_relative, no pixel
            return torch.zeros(values.shape, dtype=torch.bool)
        return threshold_mask(values, job.threshold)
    return values


def encode(job: TileJob, values: torch.Tensor) -> np.ndarray:
    """``(C', h, w)`` numpy values as stored: floats, 0/255 masks or fixed-scale integers."""
    array = values[0].numpy()
    if job.stage == "threshold":
        return array.astype(np.uint8) * np.uint8(255)
    if job.output == "float":
        return array
    from .io import to_image_values

    bits = 8 if job.output == "uint8" else 16
    return to_image_values(array, bits=bits, scale=job.scale, signed=job.stage in SIGNED_STAGES)


def compute_block(
    job: TileJob, source: Source | None, block: Block, raw: np.ndarray | None, sink: Any
) -> np.ndarray | None:
    """One tile: read (unless ``raw`` was shipped), compute, then write (task-side sinks) or return.

    This is the function every executor runs, in this process or on a Dask worker.
    """
    if raw is None:
        assert source is not None
        raw = read_window(source, job, block)
    values = encode(job, stage_values(job, extend_window(raw, job, block)))
    if sink is not None:
        sink.write(block, values)
        return None
    return values


def block_statistics(
    job: TileJob,
    source: Source | None,
    block: Block,
    raw: np.ndarray | None,
    binning: np.ndarray | None,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """The tile's magnitude extremes ``[min, max]`` (float64, NaN propagates) and, given
    ``binning``, the bin edges of the whole image (:func:`imgrad.thresholds.histogram_edges`),
    its histogram as :func:`imgrad.thresholds.otsu_threshold` bins floating data."""
    if raw is None:
        assert source is not None
        raw = read_window(source, job, block)
    values = stage_values(job, extend_window(raw, job, block), "magnitude").reshape(1, -1)
    data = values.double()
    extremes = torch.stack([data.amin(), data.amax()])
    if binning is None:
        return extremes, None
    edges = torch.from_numpy(binning)[None]
    index = histogram_index(values, edges)[0]  # in the magnitude's dtype, as numpy bins it
    return extremes, torch.bincount(index, minlength=len(binning) - 1).numpy()


# --------------------------------------------------------------------------- sinks


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TMP_MARKER}")


class MemorySink:
    """Collects the tiles into one array on the caller's side."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype):
        self.array = np.empty(shape, dtype)

    def write(self, block: Block, values: np.ndarray) -> None:
        self.array[:, block[0] : block[1], block[2] : block[3]] = values


class ZarrSink:
    """A Zarr array written chunk by chunk by whoever computes the tile (workers included).

    Tiles are the Zarr chunks, so concurrent writers never touch the same chunk.
    """

    def __init__(self, path: Path, shape: tuple[int, int, int], dtype: np.dtype, tile: tuple):
        zarr = require("zarr", "writing Zarr images")
        self.path = path
        self.tmp = _temporary_beside(path)
        self.grey = shape[0] == 1
        full = shape[1:] if self.grey else shape
        chunks = tile if self.grey else (shape[0], *tile)
        zarr.create_array(str(self.tmp), shape=full, chunks=chunks, dtype=dtype, fill_value=0)
        self._array: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def write(self, block: Block, values: np.ndarray) -> None:
        if self._array is None:
            zarr = require("zarr", "writing Zarr images")
            self._array = zarr.open_array(str(self.tmp), mode="r+")
        r, c = slice(block[0], block[1]), slice(block[2], block[3])
        if self.grey:
            self._array[r, c] = values[0]
        else:
            self._array[:, r, c] = values

    def commit(self) -> None:
        """Rename the finished array onto ``path``; an array there before (:func:`check_destination`
        allows only a Zarr array) is moved aside first and deleted after."""
        old = _temporary_beside(self.path) if self.path.exists() else None
        if old is not None:
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _write_tiff(
    path: Path,
    tiles: Iterator[np.ndarray],
    shape: tuple[int, int, int],
    dtype: np.dtype,
    tile: tuple[int, int],
    compression: str | None,
) -> None:
    """A tiled TIFF from ``(C, th, tw)`` tiles in row-major order, written atomically."""
    tifffile = require("tifffile", "writing tiled TIFF images")
    c, h, w = shape
    rgb = c == 3 and dtype in (np.uint8, np.uint16)
    tmp = _temporary_beside(path)
    data = (t[0] if c == 1 else np.moveaxis(t, 0, -1) for t in tiles)
    try:
        tifffile.imwrite(
            tmp,
            data=data,
            shape=(h, w) if c == 1 else (h, w, c),
            dtype=dtype,
            tile=tile,
            photometric="rgb" if rgb else "minisblack",
            planarconfig=None if c == 1 else "contig",
            compression=compression,
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- running tiles


def blocks_of(height: int, width: int, tile: tuple[int, int]) -> list[Block]:
    """Output tiles in row-major order (the order of a tiled TIFF)."""
    th, tw = tile
    return [
        (y, min(y + th, height), x, min(x + tw, width))
        for y in range(0, height, th)
        for x in range(0, width, tw)
    ]


def run_ordered(
    executor: Executor | None,
    fn: Callable[..., Any],
    calls: Iterable[tuple[Any, ...]],
    in_flight: int,
    on_done: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """``fn(*args)`` for each ``args``, results in order, at most ``in_flight`` pending at once.

    ``executor=None`` runs the calls here, one after the other (torch still uses its threads).
    ``on_done`` is called after each result.
    """
    if executor is None:
        results: Iterator[Any] = (fn(*args) for args in calls)
    else:
        results = _bounded(executor, fn, iter(calls), in_flight)
    for result in results:
        if on_done is not None:
            on_done()
        yield result


def _bounded(
    executor: Executor, fn: Callable[..., Any], calls: Iterator[tuple[Any, ...]], in_flight: int
) -> Iterator[Any]:
    pending: deque[Any] = deque()
    while True:
        for args in calls:
            pending.append(executor.submit(fn, *args))
            if len(pending) >= in_flight:
                break
        if not pending:
            return
        yield pending.popleft().result()


# --------------------------------------------------------------------------- the entry point


def check_tile(
    tile: int | tuple[int, int], dst: str | os.PathLike[str] | None = None
) -> tuple[int, int]:
    """``tile`` as ``(rows, columns)``, checked: positive ints, multiples of 16 for a TIFF
    ``dst`` (``ValueError`` quoting the bad value)."""
    if is_integer(tile):
        pair: tuple[Any, ...] = (tile, tile)
    else:
        pair = tuple(tile) if isinstance(tile, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_integer(t) for t in pair):
        raise ValueError(f"tile must be an int or a (rows, columns) pair of ints; got {tile!r}")
    rows, cols = int(pair[0]), int(pair[1])
    if min(rows, cols) < 1:
        raise ValueError(f"tile sizes must be positive; got {tile!r}")
    if _destination_kind(dst) == "tiff" and (rows % 16 or cols % 16):
        raise ValueError(f"TIFF tiles must be multiples of 16; got tile={tile!r}")
    return rows, cols


def check_destination(src: Any, dst: str | os.PathLike[str] | None) -> None:
    """Refuse, before any tile is computed, a ``dst`` whose writing would lose data or fail only
    at the end: the input itself, a folder that holds the input or a path inside it, a folder
    other than a Zarr array for a ``.zarr`` output (the output replaces what is there), a folder
    for a file output, or a folder that does not exist (``FileNotFoundError``)."""
    if dst is None:
        return
    target = Path(dst)
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"no folder '{target.parent}' to write into", dst)
    if isinstance(src, (str, os.PathLike)):
        source, out = Path(src).resolve(), target.resolve()
        if out == source or out in source.parents or source in out.parents or same_file(src, dst):
            raise ValueError(f"refusing to write '{dst}': it is, holds or lies in the input")
    if not target.exists():
        return
    if _destination_kind(dst) == "zarr":
        if not _is_zarr_array(target):
            raise ValueError(f"refusing to replace '{dst}': it is not a Zarr array")
    elif target.is_dir():
        raise ValueError(f"refusing to write '{dst}': it is a folder")


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """The same file under two names (a hard link), if both exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_zarr_array(path: Path) -> bool:
    """A folder holding a Zarr array (format 2's ``.zarray`` or format 3's ``zarr.json``)."""
    if (path / ".zarray").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type") == "array"
    except (OSError, ValueError, AttributeError):
        return False


def _destination_kind(dst: str | os.PathLike[str] | None) -> str:
    if dst is None:
        return "memory"
    suffix = Path(dst).suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix == ZARR_SUFFIX:
        return "zarr"
    return "image"


def refuse_non_local(stage: str) -> None:
    """Raise :class:`NonLocalStageError` for a stage of :data:`NON_LOCAL_STAGES`, saying why and
    what to use instead; return for any other stage."""
    if stage in NON_LOCAL_STAGES:
        raise NonLocalStageError(
            f"{stage} cannot be computed tile by tile: {NON_LOCAL_STAGES[stage]}. Use a fixed, "
            f"relative or Otsu threshold of the gradient magnitude instead, which tiles compute "
            f"exactly (stage='threshold' with threshold=, ratio= or otsu=True; on the command "
            f"line e.g. 'imgrad sobel' with --threshold, --threshold-relative or --otsu), or run "
            f"{stage} on an image that fits in memory "
            f"(imgrad.{'canny' if stage == 'canny' else 'hysteresis_threshold'})"
        )


def _check_stage(stage: str, spec: GradientSpec) -> str:
    refuse_non_local(stage)
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    if stage in SECOND_ORDER:
        if spec.color == "max":
            raise ValueError("color='max' is defined for first derivatives only")
        if spec.op.second is None:
            raise ValueError(f"{spec.op.name} has no second-derivative stencil; use sobel/central")
        if stage == "laplacian" and spec.op.name != "sobel":
            raise ValueError("stage='laplacian' uses Sobel second derivatives; operator='sobel'")
    return stage


def _threshold_options(
    stage: str, value: float | None, ratio: float | None, otsu: bool, bins: int | None
) -> str | None:
    """Which threshold method the options name ("fixed", "ratio", "otsu"), checked."""
    chosen = [
        name
        for name, on in (("fixed", value is not None), ("ratio", ratio is not None), ("otsu", otsu))
        if on
    ]
    if stage != "threshold":
        if chosen or bins is not None:
            raise ValueError("threshold=, ratio=, otsu= and bins= apply to stage='threshold' only")
        return None
    if len(chosen) != 1:
        raise ValueError("stage='threshold' needs exactly one of threshold=, ratio= or otsu=True")
    if value is not None:
        real_number(value, "threshold")  # NaN or a string is refused here, not in every tile
    if ratio is not None:
        real_number(ratio, "ratio")
    if bins is not None and not chosen == ["otsu"]:
        raise ValueError("bins applies to otsu=True only")
    if bins is not None and (not is_integer(bins) or bins < 2):
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    return chosen[0]


def _output_dtype(job: TileJob) -> np.dtype:
    if job.stage == "threshold":
        return np.dtype(np.uint8)
    if job.output != "float":
        return np.dtype(np.uint8 if job.output == "uint8" else np.uint16)
    return np.dtype(str(result_dtype(job.in_dtype)).removeprefix("torch."))


def process_huge(
    src: Any,
    dst: str | os.PathLike[str] | None = None,
    *,
    stage: str = "magnitude",
    operator: str = "sobel",
    ksize: int = 3,
    border: str = "reflect101",
    border_value: float = 0.0,
    normalized: bool = False,
    spacing: float | tuple[float, float] = 1.0,
    color: str = "channels",
    norm: str = "l2",
    degrees: bool = False,
    signed: bool = False,
    threshold: float | None = None,
    ratio: float | None = None,
    otsu: bool = False,
    bins: int | None = None,
    output: str = "float",
    scale: float | None = None,
    tile: int | tuple[int, int] = DEFAULT_TILE,
    compression: str | None = None,
    scheduler: Any = None,
    progress: Progress | None = None,
    alpha: str = "composite",
) -> Any:
    """Compute a stage of an image of any size, tile by tile, exactly as on the whole image.

    Parameters
    ----------
    src
        A numpy array or tensor ``(H, W)``/``(C, H, W)``, a ``zarr.Array``, or a path: ``.tif``/
        ``.tiff`` (read by tiles), ``.zarr``, or another image file (read whole).
    dst
        ``None`` to return the result (an array or tensor like ``src``; numpy for files), or a
        path: ``.tif``/``.tiff`` (tiled TIFF, BigTIFF when needed), ``.zarr``, or another
        format of :func:`imgrad.io.write_image` (then the result must fit in memory).
    stage
        One of :data:`STAGES`; see the module notes for what each equals on the whole image.
        ``"hysteresis"`` and ``"canny"`` raise :class:`NonLocalStageError`.
    operator, ksize, border, border_value, normalized, spacing, color
        As in :func:`imgrad.spatial_gradient` (second-derivative stages as in
        :func:`imgrad.second_derivatives`).
    norm
        Magnitude norm for ``magnitude`` and ``threshold``: ``"l2"``, ``"l1"`` or ``"squared"``.
    degrees, signed
        Orientation range, as in :func:`imgrad.orientation`.
    threshold, ratio, otsu, bins
        ``stage="threshold"`` only, exactly one of: a fixed ``threshold`` on the magnitude,
        ``ratio`` times the image's maximum magnitude, or Otsu's threshold (``bins`` bins,
        default 256) — the last two take their statistics in a first pass over the tiles.
    output
        ``"float"`` (default), or ``"uint8"``/``"uint16"``: values mapped with
        :func:`imgrad.io.to_image_values` at the fixed ``scale`` (signed stages put 0 at
        mid-grey). Ignored for ``threshold`` (a bool mask, 0/255 ``uint8`` in files).
    tile
        Output tile size, an int or ``(rows, columns)``; also the TIFF tile and Zarr chunk
        (a multiple of 16 for TIFF). Larger tiles cost memory, smaller ones overhead.
    compression
        TIFF compression passed to ``tifffile`` (e.g. ``"zlib"``); Zarr uses its default codec.
    scheduler
        Where tiles run: ``None`` (``$DASK_SCHEDULER_ADDRESS`` if set, else threads in this
        process), ``"threads"``, ``"local:N"`` (a local Dask cluster of N worker processes),
        ``"tcp://host:8786"``, or a ``distributed.Client``. See :mod:`imgrad.distributed`.
    progress
        Called as ``progress(done, total)`` after each tile of each pass.
    alpha
        Image files with alpha: ``"composite"`` onto black or ``"drop"``, as in
        :func:`imgrad.io.read_image` (TIFFs pixel by pixel, in each tile).

    Returns
    -------
    The result in memory when ``dst`` is ``None``, else ``None``.
    """
    from .distributed import executor_for

    spec = GradientSpec.build(operator, ksize, border, border_value, normalized, spacing, color)
    stage = _check_stage(stage, spec)
    method = _threshold_options(stage, threshold, ratio, otsu, bins)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}; got {norm!r}")
    if output not in ("float", "uint8", "uint16"):
        raise ValueError(f"output must be 'float', 'uint8' or 'uint16'; got {output!r}")
    if (output != "float" and stage != "threshold") != (scale is not None):
        raise ValueError("scale is required with output='uint8'/'uint16', and only there")
    tile_hw = check_tile(tile, dst)
    kind = _destination_kind(dst)
    check_destination(src, dst)
    source = open_source(src, alpha)
    try:
        c, h, w = source.shape
        if min(h, w) < 1:  # any other size works: short sides repeat the border rule
            raise ValueError(
                f"image of size {h}x{w} is too small: this stencil needs at least 1x1 pixels"
            )
        if spec.color == "luminance" and c != 3:
            raise ValueError(f"color='luminance' needs 3 channels (RGB); got {c}")
        try:
            in_dtype = torch.from_numpy(np.empty(0, source.dtype)).dtype
        except TypeError:
            raise TypeError(f"unsupported sample type {source.dtype}") from None
        compute_dtype(in_dtype)  # rejects bool and complex images with the usual message
        job = TileJob(spec, stage, norm, degrees, signed, (c, h, w), in_dtype, None, output, scale)
        blocks = blocks_of(h, w, tile_hw)
        passes = {None: 1, "fixed": 1, "ratio": 2, "otsu": 3}[method]
        counter = _Counter(progress, passes * len(blocks))
        sink: ZarrSink | None = None
        try:
            with executor_for(scheduler) as (executor, in_flight):

                def each(fn: Callable[..., Any], job: TileJob, extra: Any) -> Iterator[Any]:
                    """``fn(job, source, block, raw, extra)`` over the tiles, in order. Files are
                    read by the task itself; in-memory windows are cut here and shipped to remote
                    workers."""
                    ship = executor is not None and not source.read_in_task
                    calls = (
                        (job, None, b, read_window(source, job, b), extra)
                        if ship
                        else (job, source, b, None, extra)
                        for b in blocks
                    )
                    return run_ordered(executor, fn, calls, in_flight, counter.step)

                if method == "fixed":
                    job = replace(job, threshold=float(threshold))  # type: ignore[arg-type]
                elif method == "ratio":
                    extremes = torch.stack([e for e, _ in each(block_statistics, job, None)])
                    peak = extremes[:, 1].amax()  # the maximum, NaN if any value is NaN
                    job = replace(
                        job, threshold=float(torch.tensor(ratio, dtype=torch.float64) * peak)
                    )
                elif method == "otsu":
                    job = replace(job, threshold=_otsu_value(each, job, bins or 256, counter))
                dtype = _output_dtype(job)
                out_shape = (job.channels_out, h, w)
                if kind == "zarr":
                    sink = ZarrSink(Path(dst), out_shape, dtype, tile_hw)  # type: ignore[arg-type]
                    for _ in each(compute_block, job, sink):
                        pass
                    sink.commit()
                    return None
                tiles = each(compute_block, job, None)
                if kind == "tiff":
                    _write_tiff(Path(dst), tiles, out_shape, dtype, tile_hw, compression)  # type: ignore[arg-type]
                    return None
                if kind == "image" and h * w > _max_pixels():
                    raise ValueError(
                        f"a {w}x{h} result is too large for '{dst}'; write it as tiled TIFF "
                        f"(.tif) or Zarr (.zarr), which are streamed tile by tile"
                    )
                memory = MemorySink(out_shape, dtype)
                for block, values in zip(blocks, tiles, strict=True):
                    memory.write(block, values)
        except BaseException:
            if sink is not None:  # the executor has stopped: no tile writes into it any more
                sink.discard()
            raise
        result = memory.array if source.rank == 3 or job.channels_out > 1 else memory.array[0]
        if kind == "image":
            from .io import write_image

            write_image(dst, result)  # type: ignore[arg-type]
            return None
        if job.stage == "threshold":
            result = result.astype(bool)
        return torch.from_numpy(result) if source.kind == "tensor" else result
    finally:
        if source is not src:
            source.close()


def _max_pixels() -> int:
    from .io import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _otsu_value(
    each: Callable[..., Iterator[Any]], job: TileJob, bins: int, counter: _Counter
) -> float:
    """Otsu's threshold of the whole magnitude from tile statistics (two streamed passes).

    Mirrors :func:`imgrad.thresholds.otsu_threshold` on floating data: the histogram over
    ``[min, max]`` in ``bins`` bins of the magnitude's dtype, added up exactly from the tiles'
    integer counts, and scikit-image's choice of bin.
    """
    extremes = torch.stack([e for e, _ in each(block_statistics, job, None)])
    if bool(torch.isnan(extremes).any()):
        raise ValueError("the magnitude contains NaN: Otsu's threshold is undefined")
    lo, hi = extremes[:, 0].amin(), extremes[:, 1].amax()
    if not hi > lo:
        counter.skip(len(extremes))  # no histogram to take
        return float(lo)  # a constant magnitude: nothing is above its own value
    dtype = histogram_dtype(result_dtype(job.in_dtype))  # the magnitude's (extremes: exact)
    edges = histogram_edges(lo.to(dtype)[None], hi.to(dtype)[None], bins)
    hist = sum(counts for _, counts in each(block_statistics, job, edges[0].numpy()))
    return float(otsu_centre(torch.from_numpy(np.asarray(hist))[None], edges)[0])


class _Counter:
    """Progress over all the passes of a job: ``progress(done, total)`` after each tile."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def step(self) -> None:
        self.skip(1)

    def skip(self, tiles: int) -> None:
        self.done += tiles
        if self.progress is not None:
            self.progress(self.done, self.total)
