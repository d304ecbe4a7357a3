"""Options shared by the commands, each defined once as a decorator.

Nothing here imports torch or imgrad: ``imgrad --help`` and argument errors must answer at
once. The choice lists repeat names from the library; ``tests/test_cli.py`` pins them to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

BORDERS = ("reflect101", "reflect", "replicate", "constant", "circular")
RESULTS = ("magnitude", "gx", "gy", "orientation", "picture", "mask")
MAPPINGS = ("fixed", "stretch", "raw")
#: --format names and the extension their files get (imgrad.batch.FORMAT_EXTENSIONS).
FORMATS = {"png": ".png", "tiff": ".tif", "npy": ".npy"}
#: Extensions imgrad.io writes, for checking OUTPUT before the library is imported.
OUTPUT_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_MAX_PIXELS = 2**28  # imgrad.io.DEFAULT_MAX_PIXELS
#: Zarr arrays (directories) are read and written tile by tile (imgrad.tiled.ZARR_SUFFIX).
ZARR_EXTENSION = ".zarr"
DEFAULT_TILE = 1024  # imgrad.tiled.DEFAULT_TILE


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` in the order they are listed (top to bottom)."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


class Number(click.ParamType):
    """A finite float (``nan`` and ``inf`` are refused), optionally within ``[low, high]``."""

    name = "float"

    def __init__(self, low: float = -math.inf, high: float = math.inf) -> None:
        self.low, self.high = low, high

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{number:g} is not in the range {self.low:g} to {self.high:g}", param, ctx)
        return number


NUMBER = Number()


def positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise click.BadParameter(f"must be positive, got {value:g}")
    return value


def _bits(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else int(value)


# --------------------------------------------------------------------------- arguments


def _path(ctx: click.Context, param: click.Parameter, value: str) -> Path:
    """``-`` (stdin/stdout) as ``Path("-")``; a file named ``-`` spelt otherwise (``./-``),
    which ``Path`` would shorten to ``-``, as its absolute path."""
    path = Path(value)
    return path.absolute() if value != "-" and str(path) == "-" else path


paths = compose(
    click.argument(
        "input", type=click.Path(exists=True, allow_dash=True), callback=_path, metavar="INPUT"
    ),
    click.argument("output", type=click.Path(allow_dash=True), callback=_path, metavar="OUTPUT"),
)

# --------------------------------------------------------------------------- operator


def ksize(choices: tuple[int, ...], default: int) -> Callable[[F], F]:
    """``--ksize``: the Sobel aperture (the choices differ between commands)."""
    return click.option(
        "--ksize",
        type=click.Choice([str(k) for k in choices]),
        default=str(default),
        show_default=True,
        callback=lambda ctx, param, value: int(value),
        help="Sobel aperture (kernel size).",
    )


border = click.option(
    "--border",
    type=click.Choice(BORDERS),
    default="reflect101",
    show_default=True,
    help="How the image is extended beyond its edges (reflect101 is OpenCV's default).",
)

normalized = click.option(
    "--normalized",
    is_flag=True,
    help="Divide by the stencil's gain: true derivatives per pixel instead of OpenCV's units.",
)


def color(choices: tuple[str, ...], default: str) -> Callable[[F], F]:
    """``--color``: how colour images are reduced (grey images are used as they are)."""
    meaning = {
        "luminance": "luminance = BT.601 grey first",
        "max": "max = per pixel the channel with the strongest gradient",
        "channels": "channels = each channel on its own (RGB output)",
    }
    return click.option(
        "--color",
        type=click.Choice(choices),
        default=default,
        show_default=True,
        help="Colour images: " + "; ".join(meaning[c] for c in choices) + ".",
    )


# --------------------------------------------------------------------------- what is written

result = click.option(
    "--result",
    type=click.Choice(RESULTS),
    default=None,
    help="What to write: gradient magnitude (default), gx or gy (signed: 0 is mid-grey), "
    "orientation (0..2π over the full range), picture (hue = direction, brightness = "
    "magnitude) or mask (a threshold of the magnitude; Otsu unless a threshold option is "
    "given, any of which implies mask).",
)

mapping = compose(
    click.option(
        "--mapping",
        type=click.Choice(MAPPINGS),
        default=None,
        help="Float values to samples. fixed: one scale for every image, the operator's "
        "largest possible response for the input's value range maps to the top of the output "
        "range (default); stretch: each image's own range; raw: float32 values (.tif or .npy; "
        "the default for .npy).",
    ),
    click.option(
        "--scale",
        type=NUMBER,
        default=None,
        callback=positive,
        metavar="FACTOR",
        help="Fixed mapping with this gain instead: output units per unit of the result "
        "(e.g. --scale 1 writes a Sobel magnitude of 37 as 37).",
    ),
)

output_format = compose(
    click.option(
        "--format",
        "format_",
        type=click.Choice(list(FORMATS)),
        default=None,
        help="Output format. Files: taken from OUTPUT's extension; directories: png (tiff for "
        "raw float values); stdout: png.",
    ),
    click.option(
        "--bits",
        type=click.Choice(["8", "16"]),
        default=None,
        callback=_bits,
        help="Output bit depth. Default: the input's (8 for 8-bit, 16 for 16-bit and float "
        "input); masks, edges and pictures 8.",
    ),
)

# --------------------------------------------------------------------------- thresholds

thresholds = compose(
    click.option(
        "--threshold",
        type=NUMBER,
        default=None,
        metavar="VALUE",
        help="Mask of magnitude > VALUE (in the magnitude's units, e.g. 0..1140 for Sobel on "
        "8-bit input).",
    ),
    click.option(
        "--threshold-relative",
        type=Number(0, 1),
        default=None,
        metavar="RATIO",
        help="Mask of magnitude > RATIO × the image's largest magnitude.",
    ),
    click.option("--otsu", is_flag=True, help="Mask of magnitude > Otsu's threshold (per image)."),
    click.option(
        "--hysteresis",
        type=(NUMBER, NUMBER),
        default=None,
        metavar="LOW HIGH",
        help="Mask of magnitude > LOW that is 8-connected to a pixel > HIGH.",
    ),
)

# --------------------------------------------------------------------------- reading, device

reading = compose(
    click.option(
        "--alpha",
        type=click.Choice(["composite", "drop"]),
        default="composite",
        show_default=True,
        help="Transparent images: composite onto black (colour × alpha, so hidden colour makes "
        "no edges) or drop the alpha channel.",
    ),
    click.option(
        "--max-pixels",
        type=click.IntRange(min=0),
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Refuse images with more pixels (a guard against decompression bombs); 0 = no limit.",
    ),
)

device = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where to compute: auto picks cuda when available.",
)

# --------------------------------------------------------------------------- directories

#: Options that only apply to a directory INPUT (rejected for a single file).
DIRECTORY_ONLY = ("glob", "recursive", "jobs", "batch_size", "json_")

directories = compose(
    click.option(
        "--glob",
        multiple=True,
        metavar="PATTERN",
        help="Directories: process the files matching PATTERN (repeatable; case-insensitive; "
        "matched against the name, or the relative path if it contains '/') instead of every "
        "image file.",
    ),
    click.option(
        "--recursive/--no-recursive",
        default=True,
        show_default=True,
        help="Directories: descend into subdirectories (the tree is mirrored).",
    ),
    click.option(
        "--overwrite",
        is_flag=True,
        help="Directories: recompute every output, even those newer than their input and made "
        "with the same options (a single OUTPUT file is always written).",
    ),
    click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        help="Directories: threads reading and writing files.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=16,
        show_default=True,
        help="Directories: same-size images computed together.",
    ),
    click.option(
        "-q", "--quiet", is_flag=True, help="No progress bar and no summary (errors still show)."
    ),
    click.option(
        "--json",
        "json_",
        is_flag=True,
        help="Directories: print a machine-readable summary on stdout.",
    ),
)

# --------------------------------------------------------------------------- huge images, clusters

scheduler = click.option(
    "--scheduler-address",
    "scheduler",
    default=None,
    metavar="ADDR",
    help="Run on Dask: a scheduler address (tcp://host:8786), local:N (a local cluster of N "
    "worker processes) or threads (this process). Default: $DASK_SCHEDULER_ADDRESS if set, "
    "else threads. Directories: one task per file; a single file is computed tile by tile.",
)

tile = click.option(
    "--tile",
    type=click.IntRange(min=1),
    default=DEFAULT_TILE,
    show_default=True,
    metavar="N",
    help="Compute a single file tile by tile, N x N pixels per tile (a multiple of 16 for TIFF "
    "output): identical results for images of any size. Automatic for Zarr (.zarr) and for "
    "TIFF input above --max-pixels.",
)

#: Options that only apply to a file INPUT (rejected for a directory).
FILE_ONLY = ("tile",)
