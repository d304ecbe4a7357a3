"""Processing image files: one file, or a directory tree of thousands.

A :class:`Recipe` says what to compute from an image (an operator and a result: magnitude, gx,
gy, orientation, an orientation picture, a thresholded mask, a Laplacian or Canny edges) and how
to store it (the value mapping and the bit depth). :func:`process_file` applies it to one file;
:func:`process_tree` applies it to a directory tree. The command line is a thin layer over these
two calls; nothing here knows about it (progress arrives through a callback).

Mapping values to image samples
-------------------------------
``mapping="fixed"`` (the default) uses one scale for every image of a data set, so that outputs
are comparable across images. The full scale is the largest response the operator can give for
the input's value range ``[0, peak]`` (peak = 255 for 8-bit input, 65535 for 16-bit input, 1.0
for float input); it maps to the top of the output range (255 or 65535). For Sobel 3 on 8-bit
input that is a magnitude of ``sqrt(20) * 255 = 1140.4`` and ``4 * 255 = 1020`` for gx/gy.
Signed results (gx, gy, Laplacian) map 0 to mid-grey ``2**(bits-1)`` and ``±full`` to
``mid ± (mid - 1)``. Orientation maps ``[0, 2π)`` radians linearly onto ``[0, top]``. ``scale``
replaces the automatic factor (output units per unit of the result). ``mapping="stretch"`` maps
each image's own range onto the output range; ``mapping="raw"`` keeps float32 values (TIFF or
``.npy``).

Default bit depth: 16 for 16-bit (and float) input, 8 for 8-bit input; masks and pictures are
8-bit; formats that only store 8 bits (JPEG, WebP, BMP) always get 8.

Directories
-----------
:func:`process_tree` mirrors the input tree into the output directory, each output keeping the
input's relative path and stem with the format's extension. Hidden files and directories (names
starting with ".") are not scanned. Rules:

- Resume: an input is skipped when its output exists, was modified strictly later than the
  input (mtime), and was made with the current options: the output directory records the
  options of its last run in ``.imgrad-options.json``, and a run with other options makes every
  older output stale (also after that run is interrupted). ``overwrite=True`` recomputes all.
- Outputs are written atomically (temporary file + rename, see :func:`imgrad.io.write_image`):
  an interrupted run leaves only complete images. Temporary files that a killed process could not
  remove are deleted by the next run into the same output directory.
- The output directory may not be the input directory nor lie inside it (its outputs would be
  scanned as inputs); no output is ever written onto an input or outside the output directory.
- One bad file never stops the batch: failures are collected with their path and reason.
  Nothing in the input tree makes the planning raise: a wanted name that is no regular file
  (a symbolic link in a loop or to nothing, a named pipe, a socket, a device), a symbolic link
  to a folder (links to files are followed, links to folders are not) and a folder that cannot
  be listed are failures of their own. An input that is a symbolic link is also out of date
  when the link was made again after its output; an output path holding a folder is a failure,
  never up to date.
- Reads and writes run on worker threads (Pillow and zlib release the GIL); images of the same
  size and type are computed together in batches, on the recipe's device.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import json
import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from . import io as image_io
from ._input import real_number
from .canny import CannySpec, canny
from .gradients import (
    Gradients,
    GradientSpec,
    gradient_magnitude,
    laplacian,
    magnitude,
    orientation,
    spatial_gradient,
)
from .operators import Stencil, get_operator
from .thresholds import hysteresis_threshold, threshold, threshold_otsu, threshold_relative
from .tiled import (
    DEFAULT_TILE,
    check_destination,
    open_source,
    process_huge,
    refuse_non_local,
    same_file,
    streamable,
)

__all__ = [
    "FORMAT_EXTENSIONS",
    "Failure",
    "Plan",
    "Progress",
    "Recipe",
    "Summary",
    "Task",
    "Threshold",
    "failure_reason",
    "is_inside",
    "plan_tree",
    "process_file",
    "process_huge_file",
    "process_tree",
    "remove_temporary",
]

GRADIENT_OPERATORS = ("sobel", "scharr", "prewitt", "central")
OPERATORS = (*GRADIENT_OPERATORS, "laplacian", "canny")
GRADIENT_RESULTS = ("magnitude", "gx", "gy", "orientation", "picture", "mask")
MAPPINGS = ("fixed", "stretch", "raw")
THRESHOLD_METHODS = ("value", "relative", "otsu", "hysteresis")
#: Output format names and the extension their files get.
FORMAT_EXTENSIONS = {"png": ".png", "tiff": ".tif", "npy": ".npy"}
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
_RAW_EXTENSIONS = (".tif", ".tiff", ".npy", ".zarr")  # .zarr: written by process_huge_file
_TMP_MARKER = ".imgrad-tmp"  # the marker of imgrad.io's temporary files
_MAX_BATCH_PIXELS = 2**25  # a batch is computed once it holds this many pixels


# --------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Threshold:
    """How a magnitude becomes a mask. Values are in the magnitude's units (not output units).

    ``method``: ``"value"`` (``magnitude > value``), ``"relative"`` (``magnitude > value * max``
    per image), ``"otsu"`` (Otsu's threshold per image) or ``"hysteresis"`` (above ``low`` and
    8-connected to a pixel above ``high``).
    """

    method: str = "otsu"
    value: float | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.method not in THRESHOLD_METHODS:
            raise ValueError(f"threshold method must be one of {THRESHOLD_METHODS}")
        if (self.method in ("value", "relative")) != (self.value is not None):
            raise ValueError("value is used by (and required for) the value and relative methods")
        if (self.method == "hysteresis") != (self.low is not None and self.high is not None):
            raise ValueError("low and high are used by (and required for) hysteresis")
        for name in ("value", "low", "high"):
            if getattr(self, name) is not None:
                real_number(getattr(self, name), f"threshold {name}")  # a number, not NaN
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"hysteresis low ({self.low:g}) must not exceed high ({self.high:g})")

    def apply(self, m: torch.Tensor) -> torch.Tensor:
        """Boolean mask of an ``(N, C, H, W)`` magnitude, statistics per image."""
        if self.method == "value":
            return threshold(m, self.value)
        if self.method == "relative":
            return threshold_relative(m, self.value)
        if self.method == "otsu":
            return threshold_otsu(m)
        return hysteresis_threshold(m, self.low, self.high)


@dataclass(frozen=True)
class Recipe:
    """What to compute from each image and how to store it.

    ``operator``: ``sobel``, ``scharr``, ``prewitt``, ``central``, ``laplacian`` or ``canny``.
    ``result``: for the gradient operators one of ``magnitude`` (default), ``gx``, ``gy``,
    ``orientation``, ``picture`` (hue = direction, brightness = magnitude) or ``mask`` (a
    thresholded magnitude, see ``threshold``; Otsu when none is given); ``laplacian`` writes the
    Laplacian and ``canny`` edges (both leave ``result`` as ``None``). ``ksize``, ``border``,
    ``normalized`` and ``color`` are passed to the library functions; ``low``, ``high``,
    ``l2gradient``, ``sigma`` and ``thresholds`` to :func:`imgrad.canny`. ``mapping``, ``scale``
    and ``bits`` turn values into samples (see the module docstring); ``device`` is where the
    batches are computed.
    """

    operator: str = "sobel"
    result: str | None = None
    ksize: int = 3
    border: str = "reflect101"
    normalized: bool = False
    color: str = "luminance"
    mapping: str = "fixed"
    scale: float | None = None
    bits: int | None = None
    threshold: Threshold | None = None
    low: float | None = None
    high: float | None = None
    l2gradient: bool = False
    sigma: float | None = None
    thresholds: str = "absolute"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(
                f"operator must be one of {', '.join(OPERATORS)}; got {self.operator!r}"
            )
        gradient = self.operator in GRADIENT_OPERATORS
        if gradient and self.result is None:
            object.__setattr__(self, "result", "magnitude")
        if gradient and self.result not in GRADIENT_RESULTS:
            raise ValueError(
                f"result must be one of {', '.join(GRADIENT_RESULTS)}; got {self.result!r}"
            )
        if not gradient and self.result is not None:
            raise ValueError(f"{self.operator} has one result; do not choose one")
        if self.result == "mask" and self.threshold is None:
            object.__setattr__(self, "threshold", Threshold("otsu"))
        if self.threshold is not None and self.result != "mask":
            raise ValueError("a threshold makes a mask: it does not apply to this result")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}; got {self.mapping!r}")
        if self.scale is not None and not (self.mapping == "fixed" and self.scale > 0):
            raise ValueError("scale must be positive and applies to the fixed mapping only")
        if self.bits not in (None, 8, 16):
            raise ValueError(f"bits must be 8 or 16; got {self.bits!r}")
        if self.binary and (self.mapping != "fixed" or self.scale is not None):
            raise ValueError("masks and edges are 0/max images: mapping and scale do not apply")
        if self.mapping == "raw" and self.result == "picture":
            raise ValueError("the orientation picture is an RGB image: raw mapping does not apply")
        if self.mapping == "raw" and self.bits is not None:
            raise ValueError("raw mapping writes float32: bits do not apply")
        if self.result == "orientation" and self.mapping == "stretch":
            raise ValueError("orientation always maps the full circle: stretch does not apply")
        if self.result == "picture" and self.color == "channels":
            raise ValueError("the orientation picture needs one channel: use luminance or max")
        if self.operator == "laplacian" and self.color == "max":
            raise ValueError("laplacian supports color channels or luminance, not max")
        # the library's own checks, now rather than at the first image
        if self.operator == "canny":
            CannySpec.build(
                self.low,
                self.high,
                self.ksize,
                self.l2gradient,
                self.sigma,
                self.color,
                self.thresholds,
            )
        else:
            name = "sobel" if self.operator == "laplacian" else self.operator
            GradientSpec.build(name, self.ksize, self.border, 0.0, self.normalized, 1.0, self.color)

    @property
    def binary(self) -> bool:
        """True for 0/max results (masks and Canny edges)."""
        return self.result == "mask" or self.operator == "canny"

    @property
    def signed(self) -> bool:
        """True for results whose zero maps to mid-grey."""
        return self.result in ("gx", "gy") or self.operator == "laplacian"

    def check_extension(self, extension: str) -> None:
        """Raise ``ValueError`` if files with ``extension`` cannot hold this recipe's output."""
        ext = extension.lower()
        if self.mapping == "raw" and ext not in _RAW_EXTENSIONS:
            raise ValueError(f"raw float output needs .tif, .npy or .zarr, not {extension!r}")
        if self.mapping == "raw" and ext in (".tif", ".tiff") and self.color == "channels":
            raise ValueError(
                "raw output of every colour channel needs .npy or .zarr (TIFF float is grey)"
            )
        if self.bits == 16 and ext in _EIGHT_BIT_ONLY:
            raise ValueError(f"{extension} stores 8-bit samples only; use .png or .tif for 16 bits")

    def bits_for(self, dtype: np.dtype, extension: str) -> int:
        """Output bit depth for an input of ``dtype`` written to a file with ``extension``."""
        if self.bits is not None:
            return self.bits
        if self.binary or self.result == "picture" or extension.lower() in _EIGHT_BIT_ONLY:
            return 8
        return 8 if dtype == np.uint8 else 16

    def full_scale(self, dtype: np.dtype) -> float:
        """The largest result any input of ``dtype`` can produce (what the fixed mapping maps to
        the top of the output range); computed once per recipe and dtype."""
        return _full_scale(self, np.dtype(dtype))

    def fixed_scale(self, dtype: np.dtype, bits: int) -> float:
        """Output units per unit of the result for the fixed mapping: ``scale`` if given, else
        the top of the output range (``2**bits - 1``, or ``2**(bits-1) - 1`` above mid-grey for
        signed results) over :meth:`full_scale`."""
        if self.scale is not None:
            return self.scale
        top = 2 ** (bits - 1) - 1 if self.signed else 2**bits - 1
        return top / self.full_scale(dtype)

    def color_for(self, channels: int) -> str:
        """The colour mode used for an image with ``channels`` channels: ``color`` applies to
        colour (3-channel) images; any other image is its own luminance and max."""
        return self.color if channels == 3 else ("max" if self.binary else "channels")

    def check_tiled(self) -> str:
        """The :func:`imgrad.process_huge` stage computing this recipe tile by tile.

        Raises :class:`imgrad.tiled.NonLocalStageError` for hysteresis masks and Canny edges,
        and ``ValueError`` for what needs a whole image (stretch mapping, orientation pictures)
        or cannot be written from tiles (16-bit masks).
        """
        if self.operator == "canny":
            refuse_non_local("canny")
        if self.threshold is not None and self.threshold.method == "hysteresis":
            refuse_non_local("hysteresis")
        if self.result == "picture":
            raise ValueError(
                "the orientation picture is not available tile by tile; write the orientation "
                "(result 'orientation') or use an image that fits in memory"
            )
        if self.mapping == "stretch":
            raise ValueError(
                "the stretch mapping needs each image's own range, which tiles do not know; use "
                "the fixed mapping (the default, or a scale) or raw values"
            )
        if self.binary and self.bits == 16:
            raise ValueError(
                "masks are written tile by tile as 0/255 8-bit samples: bits 16 does not apply"
            )
        if self.operator == "laplacian":
            return "laplacian"
        return "threshold" if self.result == "mask" else str(self.result)

    def huge_options(self, channels: int, dtype: np.dtype, extension: str) -> dict[str, Any]:
        """Keyword arguments of :func:`imgrad.process_huge` that compute, for an image with
        ``channels`` channels of ``dtype`` written to ``extension``, the samples :meth:`apply`
        computes (see :meth:`check_tiled` for what is refused)."""
        stage = self.check_tiled()
        if channels not in (1, 3):
            raise ValueError(
                f"tiles are computed from grey or RGB images; this one has {channels} channels"
            )
        options: dict[str, Any] = {
            "stage": stage,
            "operator": "sobel" if stage == "laplacian" else self.operator,
            "ksize": self.ksize,
            "border": self.border,
            "normalized": self.normalized,
            "color": self.color_for(channels),
            "norm": "l2",
        }
        if self.threshold is not None:
            method, value = self.threshold.method, self.threshold.value
            key = {"value": "threshold", "relative": "ratio", "otsu": "otsu"}[method]
            options[key] = True if method == "otsu" else value
        elif self.mapping == "raw":
            options["output"] = "float"
        else:
            bits = self.bits_for(dtype, extension)
            options["output"] = f"uint{bits}"
            options["scale"] = self.fixed_scale(dtype, bits)
        return options

    def apply(self, images: np.ndarray, extension: str = ".png") -> list[np.ndarray]:
        """Compute the output samples of an ``(N, C, H, W)`` batch of same-type images.

        Returns one ``(C', H, W)`` array per image, ready for :func:`imgrad.io.write_image`.
        """
        dtype = images.dtype
        if dtype != np.uint8:  # 16-bit: float32 holds it exactly, and CUDA has no uint16 math
            images = images.astype(np.float32)
        elif not images.flags.writeable:
            images = images.copy()
        x = torch.from_numpy(images).to(self.device)
        bits = self.bits_for(dtype, extension)
        color = self.color_for(images.shape[1])
        if self.operator == "canny":
            edges = canny(
                x,
                self.low,
                self.high,
                ksize=self.ksize,
                l2gradient=self.l2gradient,
                sigma=self.sigma,
                color=color,
                thresholds=self.thresholds,
            )
            return [_binary_samples(e, bits) for e in edges]
        if self.operator == "laplacian":
            values = laplacian(
                x, self.ksize, border=self.border, normalized=self.normalized, color=color
            )
            return self._samples(values, dtype, bits)
        options = {
            "ksize": self.ksize,
            "border": self.border,
            "normalized": self.normalized,
            "color": color,
        }
        if self.result == "magnitude":  # one call, and the fused path where it applies
            m = gradient_magnitude(x, self.operator, norm="l2", **options)
            return self._samples(m, dtype, bits)
        g = spatial_gradient(x, self.operator, **options)
        if self.result == "gx":
            return self._samples(g.gx, dtype, bits)
        if self.result == "gy":
            return self._samples(g.gy, dtype, bits)
        if self.result == "orientation":
            return self._samples(orientation(g), dtype, bits)
        m = magnitude(g)
        if self.result == "mask":
            assert self.threshold is not None
            return [_binary_samples(mask, bits) for mask in self.threshold.apply(m)]
        return self._pictures(m, g, dtype, bits)

    def _samples(self, values: torch.Tensor, dtype: np.dtype, bits: int) -> list[np.ndarray]:
        if self.mapping == "raw":
            return [v.float().numpy(force=True) for v in values]
        if self.mapping == "stretch":
            return [
                image_io.to_image_values(v, bits=bits, mode="stretch", signed=self.signed)
                for v in values
            ]
        scale = self.fixed_scale(dtype, bits)  # one scale: the whole batch in one call
        return list(image_io.to_image_values(values, bits=bits, scale=scale, signed=self.signed))

    def _pictures(
        self, m: torch.Tensor, g: Gradients, dtype: np.dtype, bits: int
    ) -> list[np.ndarray]:
        brightest: float | None = None  # stretch: each image's own largest magnitude
        if self.mapping == "fixed":
            brightest = (
                (2**bits - 1) / self.scale if self.scale is not None else self.full_scale(dtype)
            )
        angles = orientation(g)
        pictures = [
            image_io.orientation_picture(mi, ai, max_magnitude=brightest)
            for mi, ai in zip(m.cpu(), angles.cpu(), strict=True)
        ]
        return pictures if bits == 8 else [p.astype(np.uint16) * 257 for p in pictures]


@functools.lru_cache(maxsize=256)
def _full_scale(recipe: Recipe, dtype: np.dtype) -> float:
    """:meth:`Recipe.full_scale`, cached: a search over 3600 directions, 0.2 ms, once per file
    otherwise."""
    peak = _peak(dtype)
    if recipe.result == "orientation":
        return 2 * math.pi
    if recipe.operator == "laplacian":
        op = get_operator("sobel", recipe.ksize)
        assert op.second is not None
        kernel = _kernel(op.second, op.smoothing) + _kernel(op.smoothing, op.second)
        if recipe.normalized:
            kernel /= op.second.moment(2) * op.smoothing.moment(0)
        return peak * max(kernel[kernel > 0].sum(), -kernel[kernel < 0].sum())
    op = get_operator(recipe.operator, recipe.ksize)
    kx, ky = _kernel(op.smoothing, op.derivative), _kernel(op.derivative, op.smoothing)
    if recipe.normalized:
        gain = op.derivative.moment(1) * op.smoothing.moment(0)
        kx, ky = kx / gain, ky / gain
    if recipe.result in ("gx", "gy"):
        return peak * kx[kx > 0].sum()
    # The largest sqrt(gx² + gy²): an image that is `peak` where the kernel's response to
    # some direction u is positive, 0 elsewhere. Each sampled u proposes such an image.
    # Broadcasting, not a matrix product: numpy's product wakes OpenBLAS's thread pool, whose
    # threads then spin for about 60 ms of CPU, a core the run's other threads need.
    angles = np.linspace(0, 2 * np.pi, 3600, endpoint=False)
    u = np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, None, :]  # (3600, 1, 2)
    taps = np.stack([kx.ravel(), ky.ravel()], axis=1)  # (k, 2): each pixel's (gx, gy) weight
    chosen = (u * taps).sum(axis=2) > 0  # (3600, k): the pixels that are `peak` for each u
    responses = np.where(chosen[:, :, None], taps, 0.0).sum(axis=1)  # (3600, 2): (gx, gy)
    return peak * float(np.hypot(responses[:, 0], responses[:, 1]).max())


def _peak(dtype: np.dtype) -> float:
    """The largest sample value of an image of ``dtype`` (float images are taken as [0, 1])."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def _kernel(rows: Stencil, cols: Stencil) -> np.ndarray:
    """2-D correlation kernel of ``rows`` applied along y and ``cols`` along x, centred."""
    radius = max(rows.before, rows.after, cols.before, cols.after)
    out = np.zeros((2 * radius + 1, 2 * radius + 1))
    top, left = radius - rows.origin, radius - cols.origin
    out[top : top + len(rows.taps), left : left + len(cols.taps)] = np.outer(rows.taps, cols.taps)
    return out


def _binary_samples(mask: torch.Tensor, bits: int) -> np.ndarray:
    """A boolean mask as 0/255 (8-bit) or 0/65535 (16-bit) samples."""
    array = mask.numpy(force=True)
    return array.astype(np.uint8) * 255 if bits == 8 else array.astype(np.uint16) * 65535


# --------------------------------------------------------------------------- one file


Source = str | os.PathLike[str] | IO[bytes]


def process_file(
    source: Source,
    dest: Source,
    recipe: Recipe,
    *,
    format: str | None = None,
    alpha: str = "composite",
    max_pixels: int | None = image_io.DEFAULT_MAX_PIXELS,
) -> None:
    """Read ``source``, apply ``recipe`` and write ``dest`` atomically.

    ``source``/``dest`` are paths or binary streams (``format`` is then required for ``dest``).
    Raises :class:`imgrad.io.ImageReadError` for unreadable input, ``ValueError`` for an output
    the format cannot hold or a destination that is the source, ``OSError`` for write failures.
    """
    is_path = isinstance(dest, (str, os.PathLike))
    if format is not None:
        extension = FORMAT_EXTENSIONS.get(format, "." + format.lower().lstrip("."))
    elif is_path:
        extension = Path(dest).suffix
    else:
        raise ValueError("format is required when writing to a stream")
    recipe.check_extension(extension)
    if is_path and isinstance(source, (str, os.PathLike)) and same_file(source, dest):
        raise ValueError(f"refusing to write onto the input '{source}'")
    image = image_io.read_image(source, alpha=alpha, max_pixels=max_pixels)
    (out,) = recipe.apply(image[None], extension)
    image_io.write_image(dest, out, format=format)


def process_huge_file(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    recipe: Recipe,
    *,
    tile: int | tuple[int, int] = DEFAULT_TILE,
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
    alpha: str = "composite",
    max_pixels: int | None = image_io.DEFAULT_MAX_PIXELS,
) -> None:
    """:func:`process_file` for images of any size: ``recipe`` computed tile by tile.

    TIFF and Zarr sources are streamed (``max_pixels`` does not apply to them, nor ``alpha``
    to Zarr arrays); other image files are read whole, as :func:`process_file` reads them.
    ``dest`` is a tiled TIFF, a Zarr array or another image file (see
    :func:`imgrad.process_huge`, which runs the tiles on ``scheduler`` and reports
    ``progress(done, total)``). The samples are those :func:`process_file` writes, bit for bit.
    Raises what :meth:`Recipe.check_tiled` raises for recipes that tiles cannot compute.
    """
    recipe.check_tiled()
    check_destination(source, dest)
    if streamable(source):
        image: Any = open_source(source, alpha)
    else:
        image = open_source(image_io.read_image(source, alpha=alpha, max_pixels=max_pixels))
    try:
        options = recipe.huge_options(image.shape[0], image.dtype, Path(dest).suffix)
        process_huge(image, dest, tile=tile, scheduler=scheduler, progress=progress, **options)
    finally:
        image.close()


# --------------------------------------------------------------------------- directory trees


@dataclass(frozen=True)
class Task:
    """One input file and the output it becomes."""

    source: Path
    dest: Path


@dataclass(frozen=True)
class Failure:
    """A file that could not be processed, and why (one line)."""

    path: str
    reason: str


@dataclass
class Plan:
    """The files of a tree: to process, skipped as up to date, and refused up front."""

    tasks: list[Task] = field(default_factory=list)
    skipped: list[Task] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """Reported after every finished file. ``done`` counts processed and failed files."""

    done: int
    total: int
    failed: int
    elapsed: float
    path: str


@dataclass
class Summary:
    """What a :func:`process_tree` run did."""

    input: str
    output: str
    processed: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    removed_temporary: int = 0
    #: The output directory held outputs of other options, which were recomputed.
    options_changed: bool = False

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content, counts first."""
        out = asdict(self)
        out["failures"] = [asdict(f) for f in self.failures]
        return {"failed": self.failed, **out}


def make_folder(folder: Path) -> None:
    """``folder`` and its parents, made as needed; a file in the way is named as such (the
    operating system says only "File exists"). Made one level at a time from the deepest that
    exists (``mkdir(parents=True)`` recurses once per missing level: a RecursionError in a tree
    a thousand folders deep)."""
    missing = []
    path = folder
    try:
        while True:
            try:
                path.mkdir(exist_ok=True)
                break
            except FileNotFoundError:
                if path.parent == path:
                    raise
                missing.append(path)
                path = path.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
    except FileExistsError:
        raise ValueError(f"a file stands where the folder '{folder}' should be") from None


def is_inside(path: Path, root: Path) -> bool:
    """True if ``path`` is ``root`` or lies below it (compare resolved paths to follow links)."""
    return path == root or root in path.parents


def _wanted(relative: str, patterns: Sequence[str]) -> bool:
    """Supported image extension, or any of ``patterns`` (case-insensitive; a pattern with a
    "/" matches the relative path, otherwise the file name)."""
    name = relative.rsplit("/", 1)[-1]
    if not patterns:
        return Path(name).suffix.lower() in image_io.SUPPORTED_INPUT_EXTENSIONS
    return any(
        fnmatch.fnmatchcase((relative if "/" in p else name).lower(), p.lower()) for p in patterns
    )


def _not_a_file(mode: int) -> str:
    """What a non-regular file of ``mode`` is, in words."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _scan_failure(path: Path, error: OSError) -> Failure:
    """A listed name that leads to no file: a loop of symbolic links, a link to nothing, a
    file removed since the folder was listed, or another error on the way."""
    if error.errno == errno.ELOOP:
        return Failure(str(path), f"cannot read '{path}': a loop of symbolic links")
    if isinstance(error, FileNotFoundError):
        try:
            reason = f"a symbolic link to nothing ('{os.readlink(path)}')"
        except OSError:
            reason = "no such file (removed while the folder was scanned)"
        return Failure(str(path), f"cannot read '{path}': {reason}")
    return Failure(str(path), failure_reason("read", path, error))


def _scan(root: Path, patterns: Sequence[str], recursive: bool) -> tuple[list[str], list[Failure]]:
    """Relative POSIX paths of the wanted regular files under ``root`` (each folder's files by
    name, then its subfolders by name), and the failures of what cannot be scanned or read.

    Hidden names are skipped. Of the other entries, a wanted name that is no regular file (a
    symbolic link in a loop or to nothing, a named pipe, a socket, a device) is a failure: a
    pipe would block its reader for ever. Symbolic links to files are followed; links to
    folders are not (a failure when ``recursive``: their files would vanish silently). A folder
    that cannot be listed is a failure naming it. The walk keeps its own stack of folders, so
    any depth is scanned (``os.walk`` recurses once per level before Python 3.12).
    """
    found: list[str] = []
    failures: list[Failure] = []
    stack = [""]
    while stack:
        base = stack.pop()
        folder = root / base
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            failures.append(Failure(str(folder), failure_reason("list the folder", folder, error)))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = f"{base}/{entry.name}" if base else entry.name
            path = root / relative
            try:
                if entry.is_symlink():
                    mode = os.stat(path).st_mode  # where the link leads
                elif entry.is_dir(follow_symlinks=False):
                    if recursive:
                        subfolders.append(relative)
                    continue
                elif entry.is_file(follow_symlinks=False):  # the listing says: no system call
                    mode = stat.S_IFREG
                else:
                    mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as error:  # a loop, a link to nothing, removed since it was listed
                if _wanted(relative, patterns):
                    failures.append(_scan_failure(path, error))
                continue
            if stat.S_ISDIR(mode):
                if recursive:
                    reason = f"cannot scan '{path}': a symbolic link to a folder (not followed)"
                    failures.append(Failure(str(path), reason))
            elif not _wanted(relative, patterns):
                continue
            elif stat.S_ISREG(mode):
                found.append(relative)
            else:
                reason = f"cannot read '{path}': {_not_a_file(mode)}, not an image file"
                failures.append(Failure(str(path), reason))
        stack.extend(reversed(subfolders))
    return found, failures


def _identity(path: Path) -> tuple[int, int] | None:
    """The file ``path`` leads to, as (device, inode); ``None`` if it leads to no file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def plan_tree(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    extension: str = ".png",
    patterns: Sequence[str] = (),
    recursive: bool = True,
    overwrite: bool = False,
    since_ns: int = 0,
) -> Plan:
    """List the work of mirroring ``input_dir`` into ``output_dir``; nothing is written.

    An existing output is up to date (skipped) if it is a file modified after its input (and,
    for an input that is a symbolic link, after the link was made) and not before ``since_ns``
    (the time the current options took effect there, see :func:`options_since`). Every file of
    the tree with a wanted name becomes a task, a skip or a failure (see :func:`_scan` for what
    is refused while scanning); nothing in the tree makes the planner raise.

    Raises ``ValueError`` if ``input_dir`` is not a directory, ``output_dir`` is a file or a
    symbolic link to nothing, or the output directory is the input directory or inside it.
    """
    source_root, dest_root = check_roots(input_dir, output_dir)
    relatives, refused = _scan(source_root, patterns, recursive)
    # the files the inputs are, found once an output exists already (compared as files, not
    # names: a symbolic link or hard link in the output may lead to an input)
    inputs: set[tuple[int, int] | None] | None = None
    plan = Plan(failures=refused)
    owner: dict[Path, Path] = {}
    for relative in relatives:
        source = source_root / relative
        dest = (dest_root / relative).with_suffix(extension)
        if dest in owner:
            reason = f"same output '{dest}' as '{owner[dest]}'; rename one of them"
            plan.failures.append(Failure(str(source), reason))
            continue
        owner[dest] = source
        try:
            there = dest.lstat()
        except OSError:  # nothing there (a new output): neither an input nor up to date
            plan.tasks.append(Task(source, dest))
            continue
        if inputs is None:
            inputs = {_identity(source_root / r) for r in relatives} - {None}
        if stat.S_ISDIR(there.st_mode):
            plan.failures.append(Failure(str(source), f"its output '{dest}' is a folder"))
        elif _identity(dest) in inputs:
            plan.failures.append(Failure(str(source), f"its output '{dest}' is an input"))
        elif not overwrite and _up_to_date(source, dest, since_ns):
            plan.skipped.append(Task(source, dest))
        else:
            plan.tasks.append(Task(source, dest))
    return plan


def check_roots(
    input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """``(input, output)`` as paths, or ``ValueError`` if the input is not a directory, the
    output is a file or a symbolic link to nothing (in a loop), or the output directory is the
    input directory or inside it."""
    source_root, dest_root = Path(input_dir), Path(output_dir)
    if not source_root.is_dir():
        raise ValueError(f"input '{source_root}' is not a directory")
    if dest_root.exists() and not dest_root.is_dir():
        raise ValueError(f"output '{dest_root}' exists and is not a directory")
    if dest_root.is_symlink() and not dest_root.exists():
        raise ValueError(f"output '{dest_root}' is a symbolic link to nothing (or in a loop)")
    # os.path.realpath, not Path.resolve: that raises RuntimeError on a loop before Python 3.13
    real_dest, real_source = Path(os.path.realpath(dest_root)), Path(os.path.realpath(source_root))
    if is_inside(real_dest, real_source):
        raise ValueError(
            f"output directory '{dest_root}' is inside the input directory '{source_root}'; "
            f"choose one outside it (its outputs would be read back as inputs)"
        )
    return source_root, dest_root


def _up_to_date(source: Path, dest: Path, since_ns: int) -> bool:
    """``dest`` is a file modified after ``source`` changed (its content, or where a symbolic
    link ``source`` leads: a link made again later) and not before ``since_ns``."""
    try:
        written = dest.stat()
        link = os.lstat(source)
        changed = link.st_mtime_ns
        if stat.S_ISLNK(link.st_mode):
            changed = max(changed, os.stat(source).st_mtime_ns)
    except OSError:
        return False
    return (
        stat.S_ISREG(written.st_mode)
        and written.st_mtime_ns > changed
        and written.st_mtime_ns >= since_ns
    )


#: Hidden file in an output directory recording the options its outputs were made with.
OPTIONS_FILE = ".imgrad-options.json"


def options_since(root: Path, options: dict[str, Any]) -> tuple[int, bool]:
    """When ``options`` took effect in the output directory ``root``, as a file time (ns), and
    whether they replaced different ones recorded there.

    ``root/.imgrad-options.json`` holds the options of the last run into ``root``; its
    modification time is when they took effect. Different options (or no record) rewrite it,
    which makes every older output stale: after a change of options a resumed run recomputes
    what the earlier options made, even if the run that changed them was interrupted.
    """
    record = root / OPTIONS_FILE
    text = json.dumps(options, sort_keys=True, indent=1, default=str) + "\n"
    try:
        previous: str | None = record.read_text()
    except (OSError, UnicodeDecodeError):
        previous = None
    if previous == text:
        return record.stat().st_mtime_ns, False
    with image_io.atomic_file(record) as stream:
        stream.write(text.encode())
    return record.stat().st_mtime_ns, previous is not None


def remove_temporary(root: Path) -> int:
    """Delete the temporary files of :func:`imgrad.io.write_image` that a killed run left
    anywhere under ``root`` (hidden names ending in ``.imgrad-tmp``); return how many."""
    removed = 0
    folders = [root]
    while folders:  # a stack, not os.walk: that recurses once per level before Python 3.12
        try:
            with os.scandir(folders.pop()) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif entry.name.startswith(".") and entry.name.endswith(_TMP_MARKER):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def process_tree(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    recipe: Recipe,
    *,
    format: str = "png",
    patterns: Sequence[str] = (),
    recursive: bool = True,
    overwrite: bool = False,
    workers: int = 4,
    batch_size: int = 16,
    alpha: str = "composite",
    max_pixels: int | None = image_io.DEFAULT_MAX_PIXELS,
    on_progress: Callable[[Progress], None] | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> Summary:
    """Apply ``recipe`` to every image of ``input_dir``, mirroring the tree into ``output_dir``.

    ``format`` is ``"png"``, ``"tiff"`` or ``"npy"``; ``patterns`` are glob patterns replacing
    the default filter (the supported image extensions); ``workers`` threads read and write;
    ``batch_size`` same-size images are computed together, on the CPU with one torch thread fewer
    than ``torch.get_num_threads()`` for the run's duration (set back afterwards), which leaves
    the reading and writing threads a core. ``on_progress`` is called after each
    file, ``on_failure`` for each failure as it happens. A ``KeyboardInterrupt`` stops the run
    after the writes under way are finished; the summary then says ``interrupted``.

    Raises ``ValueError`` for refused arguments (see :func:`plan_tree`, :meth:`Recipe.
    check_extension`); failures of single files are collected in the summary instead.
    """
    if workers < 1 or batch_size < 1:
        raise ValueError("workers and batch_size must be at least 1")
    run = TreeRun.start(
        input_dir,
        output_dir,
        recipe,
        format=format,
        patterns=patterns,
        recursive=recursive,
        overwrite=overwrite,
        alpha=alpha,
        on_progress=on_progress,
        on_failure=on_failure,
    )
    root = run.root.resolve()
    runner = _Runner(recipe, run.extension, root, alpha, max_pixels, batch_size, run.report)
    run.summary.interrupted = runner.run(run.plan.tasks, workers)
    return run.finish()


@dataclass
class TreeRun:
    """One directory run in progress, whatever executes it (threads here, or a Dask cluster):
    the plan, the summary being filled, and the progress/failure reporting."""

    plan: Plan
    summary: Summary
    extension: str
    root: Path
    started: float
    on_progress: Callable[[Progress], None] | None
    on_failure: Callable[[Failure], None] | None
    done: int = 0

    @classmethod
    def start(
        cls,
        input_dir: str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
        recipe: Recipe,
        *,
        format: str,
        patterns: Sequence[str],
        recursive: bool,
        overwrite: bool,
        alpha: str,
        on_progress: Callable[[Progress], None] | None,
        on_failure: Callable[[Failure], None] | None,
    ) -> TreeRun:
        """Check the arguments, make the output root, record the options there (outputs made
        with other options are then not up to date, :func:`options_since`), clear stale
        temporaries, plan the tree and report the files the plan already refused."""
        if format not in FORMAT_EXTENSIONS:
            raise ValueError(
                f"format must be one of {', '.join(FORMAT_EXTENSIONS)}; got {format!r}"
            )
        extension = FORMAT_EXTENSIONS[format]
        recipe.check_extension(extension)
        started = time.perf_counter()
        _, root = check_roots(input_dir, output_dir)
        root.mkdir(parents=True, exist_ok=True)
        # the device does not change the numbers; everything else that shapes an output does
        options = {**asdict(recipe), "format": format, "alpha": alpha}
        del options["device"]
        since_ns, changed = options_since(root, options)
        plan = plan_tree(
            input_dir,
            output_dir,
            extension=extension,
            patterns=patterns,
            recursive=recursive,
            overwrite=overwrite,
            since_ns=since_ns,
        )
        summary = Summary(str(input_dir), str(output_dir), skipped=len(plan.skipped))
        summary.options_changed = changed
        summary.removed_temporary = remove_temporary(root)
        run = cls(plan, summary, extension, root, started, on_progress, on_failure)
        for failure in plan.failures:
            run.fail(failure)
        return run

    def fail(self, failure: Failure) -> None:
        self.summary.failures.append(failure)
        if self.on_failure is not None:
            self.on_failure(failure)

    def report(self, task: Task, reason: str | None) -> None:
        """One file done: ``reason`` is ``None`` on success, else why it failed."""
        self.done += 1
        if reason is None:
            self.summary.processed += 1
        else:
            self.fail(Failure(str(task.source), reason))
        if self.on_progress is not None:
            elapsed = time.perf_counter() - self.started
            failed = self.done - self.summary.processed
            total = len(self.plan.tasks)
            self.on_progress(Progress(self.done, total, failed, elapsed, str(task.source)))

    def finish(self) -> Summary:
        self.summary.seconds = time.perf_counter() - self.started
        return self.summary


def failure_reason(action: str, path: str | os.PathLike[str], error: BaseException) -> str:
    """The one-line reason of a :class:`Failure`: why ``action`` (read, process, write) failed
    on ``path``. imgrad.io's read errors already name the file; others get the prefix
    ``cannot {action} '{path}':``."""
    if isinstance(error, image_io.ImageReadError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return f"cannot {action} '{path}': {error.strerror}"
    if isinstance(error, MemoryError):
        return f"cannot {action} '{path}': out of memory"
    return f"cannot {action} '{path}': {error}"


@contextmanager
def _one_core_for_files(device: str) -> Iterator[None]:
    """On the CPU, compute with one thread fewer than torch's setting (at least one) for the
    duration of a directory run, then restore it.

    The reading and writing threads decode and encode while a batch is computed; torch's
    intra-op threads would otherwise take every core and spin between operations (on 2 cores,
    500 JPEGs of 256²: a fifth more time, and 0.7 s more CPU).
    """
    threads = torch.get_num_threads()
    if device != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Runner:
    """Reads on threads, computes same-size batches on the calling thread, writes on threads."""

    def __init__(
        self,
        recipe: Recipe,
        extension: str,
        dest_root: Path,
        alpha: str,
        max_pixels: int | None,
        batch_size: int,
        report: Callable[[Task, str | None], None],
    ) -> None:
        self.recipe = recipe
        self.extension = extension
        self.dest_root = dest_root
        self.alpha = alpha
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.report = report
        self.buckets: dict[tuple[Any, ...], list[tuple[Task, np.ndarray]]] = {}
        self.writes: dict[Future[None], Task] = {}
        self.folders: set[Path] = set()  # output folders made and checked to be under the root

    def run(self, tasks: Iterable[Task], workers: int) -> bool:
        """Process ``tasks``; return True if a ``KeyboardInterrupt`` stopped the run."""
        with _one_core_for_files(self.recipe.device):
            return self._run(tasks, workers)

    def _run(self, tasks: Iterable[Task], workers: int) -> bool:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgrad-io")
        reads: deque[tuple[Task, Future[np.ndarray]]] = deque()
        todo = iter(tasks)
        # Images held in memory at most, roughly: the reads of the next batch are under way
        # while this one is computed, so the threads and the computing thread overlap.
        window = 2 * self.batch_size + 2 * workers
        try:
            while True:
                while len(reads) + self._held() < window:
                    task = next(todo, None)
                    if task is None:
                        break
                    reads.append((task, self.pool.submit(self._read, task)))
                if not reads:
                    break
                task, future = reads.popleft()
                try:
                    image = future.result()
                except Exception as error:  # one bad file never stops the batch
                    self.report(task, failure_reason("read", task.source, error))
                else:
                    self._add(task, image)
                self._reap(block=len(self.writes) > window)
            for key in list(self.buckets):
                self._flush(key)
            self._reap(everything=True)
            return False
        except KeyboardInterrupt:
            # Writes under way finish (each is atomic); queued reads and writes are dropped.
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._reap(everything=True)
            return True
        finally:
            self.pool.shutdown(wait=True)

    def _held(self) -> int:
        return sum(len(items) for items in self.buckets.values())

    def _read(self, task: Task) -> np.ndarray:
        return image_io.read_image(task.source, alpha=self.alpha, max_pixels=self.max_pixels)

    def _add(self, task: Task, image: np.ndarray) -> None:
        key = (image.shape, image.dtype.str)
        items = self.buckets.setdefault(key, [])
        items.append((task, image))
        if len(items) >= self.batch_size or len(items) * image[0].size >= _MAX_BATCH_PIXELS:
            self._flush(key)
        elif self._held() >= self.batch_size:  # many sizes: compute the fullest bucket
            self._flush(max(self.buckets, key=lambda k: len(self.buckets[k])))

    def _flush(self, key: tuple[Any, ...]) -> None:
        """Compute one bucket; if the batch fails, image by image to single out the culprit."""
        items = self.buckets.pop(key)
        try:
            stack = np.stack([image for _, image in items])
            outputs: list[np.ndarray | None] = list(self.recipe.apply(stack, self.extension))
        except Exception:
            outputs = []
            for task, image in items:
                try:
                    outputs.extend(self.recipe.apply(image[None], self.extension))
                except Exception as error:
                    outputs.append(None)
                    self.report(task, failure_reason("process", task.source, error))
        for (task, _), out in zip(items, outputs, strict=True):
            if out is not None:
                self.writes[self.pool.submit(self._write, task, out)] = task

    def _write(self, task: Task, out: np.ndarray) -> None:
        folder = task.dest.parent
        if folder not in self.folders:  # once per folder: resolving costs a syscall per level
            make_folder(folder)
            if not is_inside(folder.resolve(), self.dest_root):
                raise ValueError("it is outside the output directory (a symbolic link?)")
            self.folders.add(folder)
        image_io.write_image(task.dest, out)

    def _reap(self, *, block: bool = False, everything: bool = False) -> None:
        """Report finished writes; ``block`` waits for one at least, ``everything`` for all."""
        for future in [f for f in self.writes if f.cancelled()]:
            del self.writes[future]  # dropped by an interrupt: nothing written, never "done"
        if everything or (block and self.writes):
            finished, _ = wait(
                self.writes, return_when=ALL_COMPLETED if everything else FIRST_COMPLETED
            )
        else:
            finished = {f for f in self.writes if f.done()}
        for future in finished:
            task = self.writes.pop(future)
            error = future.exception()
            self.report(task, None if error is None else failure_reason("write", task.dest, error))
