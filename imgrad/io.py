"""Reading and writing image files, and turning gradients into pictures.

Everything the command line does with files lives here; the CLI only parses options and calls
these functions. Only Pillow and numpy are imported up front; ``tifffile`` is imported lazily,
and only for TIFF files that Pillow cannot decode at full precision (16-bit colour, float colour).

Arrays are channels-first
-------------------------
:func:`read_image` returns ``(C, H, W)`` with ``C`` in {1, 3}: one channel for grey images, three
for everything else (palette, CMYK, YCbCr ... are converted to RGB). The sample type is kept:

========================================  ===========
stored samples                            dtype
========================================  ===========
1-bit, 8-bit                              ``uint8`` (1-bit becomes 0/255)
16-bit (PNG grey or colour, TIFF)         ``uint16`` (all 16 bits, never reduced to 8)
signed 8-bit TIFF                         ``uint8`` if no value is negative, else an error
other integers (signed, 32-bit)           ``uint16`` if every value fits in 0..65535, else an error
floating point TIFF (16, 32, 64-bit)      ``float32``
========================================  ===========

A MinIsWhite TIFF is inverted when its samples are 1- or 8-bit, and read as stored when they
are deeper (as Pillow reads them).

The EXIF orientation tag (or the TIFF ``Orientation`` tag) is applied, so the array is upright
the way a viewer shows it. Only the first frame of a GIF, WebP or multi-page TIFF is read.

Alpha
-----
``alpha="composite"`` (the default) composites the colour onto black, i.e. multiplies every
colour channel by alpha: a pixel contributes what it shows, so the arbitrary colour stored under
fully transparent pixels cannot create edges. For integer images this is computed exactly,
``out = round(colour * alpha / M)`` with ``M`` = 255 (8-bit) or 65535 (16-bit), in integer
arithmetic and in the image's own dtype. ``M`` is odd, so the quotient is never exactly halfway
between two integers and the rounding is unambiguous. A value of 200 under alpha 128 becomes
``round(200 * 128 / 255) = round(100.39) = 100``. Float images are multiplied by alpha as stored
(alpha in [0, 1]). Already premultiplied ("associated") TIFF alpha is simply dropped, leaving
the colour as stored; TIFF extra samples of unspecified meaning are not alpha and are left out
(as Pillow does). A PNG ``tRNS`` colour key on a grey or RGB image makes pixels of that colour
black.

``alpha="drop"`` ignores alpha and returns the stored colour.

Size limit
----------
An image with more than ``max_pixels`` pixels (width × height, default
:data:`DEFAULT_MAX_PIXELS` = 2**28, about 268 megapixels, which is 268 MB as 8-bit grey and
3.2 GB as float32 RGB) raises :class:`ImageTooLargeError` before any pixel data is decoded, which
protects against decompression bombs. ``max_pixels=None`` disables the check. This limit replaces
Pillow's global ``Image.MAX_IMAGE_PIXELS`` for files opened here; the global is left untouched.

Writing
-------
:func:`write_image` picks the format from the extension and writes atomically: a temporary file
next to the destination is written, flushed and fsynced, then renamed over the destination, so
an interrupted write never leaves a partial file behind.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
import struct
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch
    from numpy.typing import ArrayLike

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_INPUT_EXTENSIONS",
    "SUPPORTED_OUTPUT_EXTENSIONS",
    "ImageReadError",
    "ImageTooLargeError",
    "atomic_file",
    "orientation_picture",
    "read_image",
    "to_image_values",
    "write_image",
]

DEFAULT_MAX_PIXELS: int = 2**28
"""Default pixel limit of :func:`read_image` (268,435,456 pixels, e.g. 16384 × 16384)."""

SUPPORTED_INPUT_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}
)
"""Extensions of the files :func:`read_image` reads (it looks at the content, not the name)."""

_FORMAT_OF_EXTENSION: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".npy": "NPY",
}

SUPPORTED_OUTPUT_EXTENSIONS: frozenset[str] = frozenset(_FORMAT_OF_EXTENSION)
"""Extensions :func:`write_image` writes; ``.npy`` stores any array exactly."""

_UINT8 = {("uint8", "grey"), ("uint8", "RGB")}
_UINT16 = {("uint16", "grey"), ("uint16", "RGB")}
# (dtype, layout) pairs each format stores exactly; 16-bit RGB TIFF is written with tifffile
_WRITABLE: dict[str, set[tuple[str, str]]] = {
    "PNG": _UINT8 | _UINT16,
    "TIFF": _UINT8 | _UINT16 | {("float32", "grey")},
    "JPEG": _UINT8,
    "WEBP": _UINT8,
    "BMP": _UINT8,
}
_JPEG_QUALITY = 95
# zlib level 1 with the run-length strategy: OpenCV's imwrite defaults. On edge maps (mostly
# runs of zeros) it is 1.5x faster than the default strategy and the files are 9% smaller.
_PNG_COMPRESSION = 1
_PNG_STRATEGY = zlib.Z_RLE
_TMP_MARKER = ".imgrad-tmp"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DEFLATE_PIECE = 1 << 21  # bytes of filtered PNG data per deflate thread job
_READ_WHOLE_BYTES = 1 << 25  # files up to this size are read in one call, then decoded
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_UINT16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_DIRECT_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"}) | _UINT16_MODES
#: 8-bit modes whose bands Pillow's raw encoder packs one at a time (rawmodes "R", "G", ...).
_BAND_PACKED_MODES = frozenset({"RGB", "RGBA"})
# Pillow decodes 16-bit colour PNG rows with a "...;16B" unpacker that keeps the high byte of
# each sample; the "...;16L" unpacker applied to the same big-endian rows keeps the low byte.
_PNG16_LOW_BYTE_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_ORIENTATION_TAG = ExifTags.Base.Orientation
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the reason."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than the ``max_pixels`` limit of :func:`read_image`."""


@dataclass
class _Decoded:
    pixels: np.ndarray  # (H, W, C); C in {2, 4} means the last channel is alpha
    orientation: int  # EXIF/TIFF orientation, 1..8
    premultiplied: bool = False  # colour already multiplied by alpha
    colour_key: int | tuple[int, ...] | None = None  # PNG tRNS colour of transparent pixels


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    alpha: Literal["composite", "drop"] = "composite",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read an image file into a channels-first numpy array.

    Parameters
    ----------
    source : str, os.PathLike or binary file object
        Path of a PNG, JPEG, TIFF, WebP, BMP or GIF file, or an open binary stream such as
        ``sys.stdin.buffer`` (read to its end). The format is taken from the content.
    alpha : {"composite", "drop"}, default "composite"
        ``"composite"`` composites the colour onto black (multiplies it by alpha, exactly, with
        rounding to nearest); ``"drop"`` ignores alpha. See the module docstring.
    max_pixels : int or None, default DEFAULT_MAX_PIXELS
        Largest accepted width × height, checked before decoding; ``None`` disables the check.

    Returns
    -------
    numpy.ndarray
        Shape ``(C, H, W)`` with ``C`` = 1 (grey) or 3 (RGB), upright according to the EXIF
        orientation; ``uint8`` for 8-bit (and 1-bit) data, ``uint16`` for 16-bit data,
        ``float32`` for floating point TIFF.

    Raises
    ------
    ImageTooLargeError
        The image has more than ``max_pixels`` pixels.
    ImageReadError
        The file is missing, a directory, not an image, of an unsupported kind, truncated or
        corrupt.
    ValueError
        ``alpha`` or ``max_pixels`` is not a valid value.
    """
    check_alpha(alpha)
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    with _open_source(source) as (name, stream):
        decoded = _decode(stream, name, max_pixels)
    return _finish(decoded, alpha)


def check_alpha(alpha: str) -> None:
    """Raise ``ValueError`` unless ``alpha`` is a rule of :func:`read_image`."""
    if alpha not in ("composite", "drop"):
        raise ValueError(f"alpha must be 'composite' or 'drop', got {alpha!r}")


@contextmanager
def _open_source(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield (name for messages, seekable binary stream positioned at the start)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            stream = path.open("rb")
        except OSError as exc:
            if path.is_dir():
                reason = "it is a directory, not an image file"
            elif isinstance(exc, FileNotFoundError):
                reason = "no such file"
            else:
                reason = exc.strerror or str(exc)
            raise ImageReadError(f"cannot read '{path}': {reason}") from exc
        with stream:
            info = os.fstat(stream.fileno())
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):  # /dev/zero: endless
                raise ImageReadError(f"cannot read '{path}': a device, not an image file")
            if info.st_size > _READ_WHOLE_BYTES:
                yield str(path), stream
            else:  # one read: Pillow would make dozens, each a system call
                yield str(path), io.BytesIO(stream.read())
        return
    name = str(getattr(source, "name", "<stream>"))
    data = source.read()
    if not isinstance(data, bytes):
        raise TypeError(f"source must be a path or a binary file object; {name} gave text")
    yield name, io.BytesIO(data)


def _decode(stream: IO[bytes], name: str, max_pixels: int | None) -> _Decoded:
    """Decode the first frame with Pillow, or with tifffile where Pillow would lose precision."""
    try:
        with _pillow_bomb_check_disabled():
            im = Image.open(stream)
    except UnidentifiedImageError as exc:
        if _is_tiff(stream):
            return _decode_tiff_with_tifffile(stream, name, max_pixels)
        raise ImageReadError(
            f"cannot read '{name}': not an image in a supported format "
            f"(PNG, JPEG, TIFF, WebP, BMP, GIF) or its header is corrupt"
        ) from exc
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as exc:
        raise ImageReadError(f"cannot read '{name}': corrupt image header ({exc})") from exc

    with im:
        _check_size(im.size, name, max_pixels)
        if im.format == "TIFF" and _pillow_reduces_tiff(im):
            return _decode_tiff_with_tifffile(stream, name, max_pixels)
        rawmode = im.tile[0][3] if im.format == "PNG" and im.tile else None
        if rawmode == "LA;16B":
            raise ImageReadError(
                f"cannot read '{name}': 16-bit grey+alpha PNG is not supported (Pillow "
                f"decodes it to 8 bits); save it as 16-bit grey PNG or 16-bit TIFF instead"
            )
        try:
            try:
                im.load()  # decodes everything, so truncation is detected here
            except ValueError:  # Pillow has no unpacker for this layout (e.g. planar grey+alpha)
                if im.format != "TIFF":
                    raise
                return _decode_tiff_with_tifffile(stream, name, max_pixels)
            if rawmode in _PNG16_LOW_BYTE_RAWMODES:
                pixels = _png16_colour_pixels(im, stream, rawmode)
            else:
                pixels = _pillow_pixels(im, name)
            orientation = im.getexif().get(_ORIENTATION_TAG, 1)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error) as exc:
            raise ImageReadError(
                f"cannot read '{name}': truncated or corrupt image data ({exc})"
            ) from exc
        key = im.info.get("transparency") if im.mode in {"L", "RGB"} | _UINT16_MODES else None
    return _Decoded(
        pixels,
        orientation,
        colour_key=key if isinstance(key, (int, tuple)) else None,
    )


@contextmanager
def _pillow_bomb_check_disabled() -> Iterator[None]:
    """Switch off Pillow's global pixel limit while a header is parsed; ours governs instead.

    ``Image.open`` only parses the header, so the global is changed for a moment, under a lock
    so that concurrent reads here restore it correctly.
    """
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_size(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"cannot read '{name}': {width}x{height} = {width * height:,} pixels is more than "
            f"the limit of {max_pixels:,} pixels (a guard against decompression bombs). If the "
            f"file is trusted, raise the limit with max_pixels=... (--max-pixels on the command "
            f"line) or disable it with max_pixels=None. For images larger than memory, save them "
            f"as tiled TIFF or Zarr and run the same command on that file: imgrad streams those "
            f"tile by tile (imgrad.process_huge)."
        )


def _is_tiff(stream: IO[bytes]) -> bool:
    stream.seek(0)
    return stream.read(4) in _TIFF_MAGICS


def _pillow_reduces_tiff(im: Image.Image) -> bool:
    """True if Pillow would decode this TIFF with fewer bits than are stored, would wrap its
    signed 8-bit samples into 0..255 (-1 as 255), or would not give its stored colour under an
    associated (premultiplied) alpha (it divides RGB by alpha, and refuses grey)."""
    bits = _as_tuple(im.tag_v2.get(258, 1))  # type: ignore[attr-defined]  # BitsPerSample
    signed = 2 in _as_tuple(im.tag_v2.get(339, 1))  # type: ignore[attr-defined]  # SampleFormat
    associated = 1 in _as_tuple(im.tag_v2.get(338, ()))  # type: ignore[attr-defined]
    return (
        (max(bits) > 8 and im.mode not in _UINT16_MODES | {"I", "F"})
        or (signed and max(bits) == 8)
        or associated
    )


def tiff_extra_samples(extrasamples: Any, samples: int) -> tuple[int, bool]:
    """How many of a TIFF pixel's ``samples`` imgrad reads, and whether the last of those is
    alpha already multiplied into the colour, from the page's ExtraSamples values: the colour,
    then the first extra sample if it is alpha (associated 1, unassociated 2). Extra samples of
    unspecified meaning (0) are not alpha and are left out, as Pillow leaves them."""
    extras = tuple(int(e) for e in extrasamples or ())
    if not extras or len(extras) >= samples:
        return samples, False  # no ExtraSamples tag: 2 or 4 samples are read as colour + alpha
    alpha = extras[0] in (1, 2)
    return samples - len(extras) + alpha, extras[0] == 1


def _as_tuple(value: object) -> tuple[object, ...]:
    return value if isinstance(value, tuple) else (value,)


def _png16_colour_pixels(im: Image.Image, stream: IO[bytes], rawmode: str) -> np.ndarray:
    """All 16 bits of a colour PNG: Pillow's decode gives the high bytes, a second decode of the
    same rows with the little-endian unpacker gives the low bytes."""
    high = np.asarray(im, dtype=np.uint16)
    stream.seek(0)
    with _pillow_bomb_check_disabled():
        low_im = Image.open(stream)
    with low_im:
        tile = low_im.tile[0]
        low_rawmode = _PNG16_LOW_BYTE_RAWMODES[rawmode]
        # Pillow >= 11 tiles are named tuples; older ones plain tuples
        low_im.tile = [
            tile._replace(args=low_rawmode)
            if hasattr(tile, "_replace")
            else (*tile[:3], low_rawmode)
        ]
        low_im.load()
        low = np.asarray(low_im, dtype=np.uint16)
    return (high << 8) | low


def pillow_direct(im: Image.Image, what: str) -> Image.Image:
    """``im`` in a mode whose samples are the picture's values: bilevel ("1") becomes L 0/255,
    palette, CMYK, YCbCr, ... become RGB, or RGBA if they have alpha or a transparent colour;
    L, LA, RGB, RGBA, I, F and the 16-bit modes are kept. ``what`` names the image in errors."""
    if im.mode == "1":
        return im.convert("L")
    if im.mode in _DIRECT_MODES:
        return im
    bands = im.getbands()
    has_alpha = "A" in bands or "a" in bands or "transparency" in im.info
    try:
        return im.convert("RGBA" if has_alpha else "RGB")
    except ValueError as exc:
        raise ImageReadError(f"{what}: unsupported image mode {im.mode!r} ({exc})") from exc


def _pillow_pixels(im: Image.Image, name: str) -> np.ndarray:
    """(H, W, C) array of a loaded Pillow image, with C in {1, 2, 3, 4}."""
    im = pillow_direct(im, f"cannot read '{name}'")
    if im.mode in _BAND_PACKED_MODES:
        # band by band into (C, H, W), returned as its (H, W, C) view: the (C, H, W) result then
        # needs no strided transposing copy (read_image of a 4096² RGB JPEG in a fresh process:
        # 94-99 ms instead of 122-130; 0.36 ms instead of 0.41 at 256²)
        bands = im.getbands()
        planes = np.empty((len(bands), im.height, im.width), np.uint8)
        for plane, band in zip(planes, bands, strict=True):
            plane[...] = np.frombuffer(im.tobytes("raw", band), np.uint8).reshape(plane.shape)
        return np.moveaxis(planes, 0, -1)
    pixels = np.asarray(im)
    if im.mode in _UINT16_MODES:
        pixels = pixels.astype(np.uint16)  # native byte order
    elif im.mode == "I":
        pixels = integer_samples(pixels, name)
    return pixels if pixels.ndim == 3 else pixels[:, :, np.newaxis]


def integer_samples(pixels: np.ndarray, name: str) -> np.ndarray:
    """Integer samples of a type imgrad does not compute from (signed, 32- or 64-bit) as
    ``uint8`` (8-bit ones) or ``uint16``, if every value fits; ``ImageReadError`` naming the
    file otherwise. ``uint8`` and ``uint16`` samples are returned as they are."""
    if pixels.dtype in (np.uint8, np.uint16):
        return pixels
    top = 255 if pixels.dtype.itemsize == 1 else 65535
    if pixels.size and (pixels.min() < 0 or pixels.max() > top):
        raise ImageReadError(
            f"cannot read '{name}': integer samples outside 0..{top} "
            f"(range {pixels.min()}..{pixels.max()}) are not supported"
        )
    return pixels.astype(np.uint8 if top == 255 else np.uint16)


def _decode_tiff_with_tifffile(stream: IO[bytes], name: str, max_pixels: int | None) -> _Decoded:
    """First page of a TIFF that Pillow cannot decode at full precision."""
    try:
        import tifffile
    except ImportError as exc:
        raise ImageReadError(
            f"cannot read '{name}': this TIFF (16-bit colour, float colour or an unusual "
            f"layout) needs the optional package tifffile: pip install tifffile"
        ) from exc
    stream.seek(0)
    try:
        with tifffile.TiffFile(stream) as tif:
            page = tif.pages.first
            axes = page.axes
            if axes not in ("YX", "YXS", "SYX"):
                raise ImageReadError(
                    f"cannot read '{name}': TIFF page with axes {axes!r} is not a 2-D image"
                )
            shape = dict(zip(axes, page.shape, strict=True))
            _check_size((shape["X"], shape["Y"]), name, max_pixels)
            pixels = page.asarray()
            orientation_tag = page.tags.get("Orientation")
            extrasamples = page.extrasamples
            miniswhite = page.photometric == 0
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many kinds on corrupt input
        raise ImageReadError(f"cannot read '{name}': corrupt or unsupported TIFF ({exc})") from exc
    if axes == "SYX":
        pixels = np.moveaxis(pixels, 0, -1)
    elif axes == "YX":
        pixels = pixels[:, :, np.newaxis]
    kept, premultiplied = tiff_extra_samples(extrasamples, pixels.shape[-1])
    pixels = pixels[..., :kept]
    if miniswhite and pixels.dtype == np.uint8:  # the grey sample, not alpha, as Pillow inverts
        pixels[..., 0] = 255 - pixels[..., 0]
    if pixels.shape[-1] > 4:
        raise ImageReadError(f"cannot read '{name}': {pixels.shape[-1]} samples per pixel")
    if pixels.dtype.kind == "f":
        pixels = pixels.astype(np.float32, copy=False)
    elif pixels.dtype.kind in "iu":
        pixels = integer_samples(pixels, name)
    else:
        raise ImageReadError(f"cannot read '{name}': unsupported TIFF sample type {pixels.dtype}")
    orientation = int(orientation_tag.value) if orientation_tag is not None else 1
    return _Decoded(pixels, orientation, premultiplied=premultiplied)


def _finish(decoded: _Decoded, alpha: str) -> np.ndarray:
    """Apply the alpha rule and the orientation; return a writable contiguous (C, H, W) array."""
    pixels = decoded.pixels
    channels = pixels.shape[-1]
    colour = pixels[..., : channels - 1] if channels in (2, 4) else pixels
    if alpha == "composite":
        if channels in (2, 4) and not decoded.premultiplied:
            colour = composite_onto_black(colour, pixels[..., -1:])
        elif decoded.colour_key is not None:
            key = np.atleast_1d(np.asarray(decoded.colour_key))
            transparent = np.all(colour == key.astype(colour.dtype), axis=-1, keepdims=True)
            colour = np.where(transparent, 0, colour).astype(colour.dtype)
    chw = np.ascontiguousarray(_apply_orientation(np.moveaxis(colour, -1, 0), decoded.orientation))
    # writable, so that torch.from_numpy takes it without a warning (Pillow's buffers are not)
    return chw if chw.flags.writeable else chw.copy()


def composite_onto_black(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """colour * alpha / max, rounded to nearest, in the colour's own dtype."""
    if colour.dtype.kind == "f":
        return (colour * alpha).astype(np.float32)
    full = np.iinfo(colour.dtype).max  # 255 or 65535, odd: no exact halves
    product = colour.astype(np.uint64) * alpha.astype(np.uint64)
    return ((product + full // 2) // full).astype(colour.dtype)


def _apply_orientation(chw: np.ndarray, orientation: int) -> np.ndarray:
    """Transform (C, H, W) as ``PIL.ImageOps.exif_transpose`` does for EXIF orientation 1..8."""
    if orientation == 2:  # mirrored horizontally
        return chw[:, :, ::-1]
    if orientation == 3:  # rotated 180
        return chw[:, ::-1, ::-1]
    if orientation == 4:  # mirrored vertically
        return chw[:, ::-1, :]
    if orientation == 5:  # transpose
        return chw.transpose(0, 2, 1)
    if orientation == 6:  # rotate 90 clockwise to view
        return np.rot90(chw, k=-1, axes=(1, 2))
    if orientation == 7:  # transverse
        return chw.transpose(0, 2, 1)[:, ::-1, ::-1]
    if orientation == 8:  # rotate 90 counter-clockwise to view
        return np.rot90(chw, k=1, axes=(1, 2))
    return chw


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_image(
    dest: str | os.PathLike[str] | IO[bytes],
    array: np.ndarray,
    *,
    format: str | None = None,
) -> None:
    """Write an array to an image file, atomically.

    Parameters
    ----------
    dest : str, os.PathLike or binary file object
        Destination path, or a binary stream such as ``sys.stdout.buffer`` (then ``format`` is
        required and the bytes are written straight to the stream).
    array : numpy.ndarray
        ``(C, H, W)`` with ``C`` in {1, 3}, or ``(H, W)``. Per format:

        - ``.png``: ``uint8`` grey/RGB, ``uint16`` grey/RGB;
        - ``.tif``/``.tiff``: ``uint8`` grey/RGB, ``uint16`` grey (RGB needs tifffile),
          ``float32`` grey;
        - ``.jpg``/``.jpeg`` (quality 95), ``.webp`` (lossless), ``.bmp``: ``uint8`` only;
        - ``.npy``: any array, saved unchanged with :func:`numpy.save`.
    format : str, optional
        Format name or extension (``"png"``, ``".tif"``, ``"jpeg"``, ``"npy"``, ...,
        case-insensitive); by default taken from the extension of ``dest``.

    Raises
    ------
    ValueError
        Unknown extension or format, or an array the format cannot store (the message says
        which format can).

    Notes
    -----
    A path destination is written through a temporary file in the same directory (a hidden
    name containing ``.imgrad-tmp``) that is flushed, fsynced and then renamed onto ``dest``
    with :func:`os.replace`. If anything fails the temporary file is removed and ``dest`` is
    left as it was.
    """
    if not isinstance(dest, (str, os.PathLike)):
        if format is None:
            raise ValueError("format is required when writing to a file object")
        fmt = _format_of(format, what="format")
        _check_writable(array, fmt)
        buffer = io.BytesIO()  # TIFF writers seek back; a pipe cannot
        _encode(buffer, array, fmt)
        _write_all(dest, buffer.getbuffer())
        dest.flush()
        return
    path = Path(dest)
    if format is None and not path.suffix:
        supported = ", ".join(sorted(SUPPORTED_OUTPUT_EXTENSIONS))
        raise ValueError(f"'{path}' has no extension to tell the format; use one of {supported}")
    fmt = _format_of(format if format is not None else path.suffix, what="extension")
    _check_writable(array, fmt)
    with atomic_file(path) as stream:
        _encode(stream, array, fmt)


def _format_of(name: str, *, what: str) -> str:
    key = name.lower() if name.startswith(".") else "." + name.lower()
    fmt = _FORMAT_OF_EXTENSION.get(key)
    if fmt is None:
        supported = ", ".join(sorted(SUPPORTED_OUTPUT_EXTENSIONS))
        raise ValueError(f"unsupported output {what} {name!r}; supported: {supported}")
    return fmt


def _as_hwc(array: np.ndarray) -> np.ndarray:
    """(H, W) or (C, H, W) with C in {1, 3} -> (H, W) or (H, W, 3)."""
    if array.ndim == 3 and array.shape[0] in (1, 3):
        return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        return array
    raise ValueError(
        f"expected an image of shape (H, W) or (C, H, W) with C in (1, 3), got {array.shape}"
    )


def _check_writable(array: np.ndarray, fmt: str) -> None:
    if fmt == "NPY":
        return
    hwc = _as_hwc(array)
    kind = (hwc.dtype.name, "RGB" if hwc.ndim == 3 else "grey")
    if kind not in _WRITABLE[fmt]:
        accepted = ", ".join(f"{dtype} {layout}" for dtype, layout in sorted(_WRITABLE[fmt]))
        raise ValueError(
            f"{fmt} cannot store a {kind[1]} {kind[0]} image, only {accepted}. 16-bit data "
            f"goes to .png or .tif, float32 grey to .tif, anything to .npy; to_image_values "
            f"turns float gradients into 8- or 16-bit values"
        )


def _encode(stream: IO[bytes], array: np.ndarray, fmt: str) -> None:
    if fmt == "NPY":
        np.save(stream, array, allow_pickle=False)
        return
    hwc = np.ascontiguousarray(_as_hwc(array), dtype=array.dtype.newbyteorder("="))
    if fmt == "PNG":
        _write_png(stream, hwc)
        return
    if hwc.dtype == np.uint16 and hwc.ndim == 3:
        _write_tiff16_rgb(stream, hwc)
        return
    image = Image.fromarray(hwc)
    if fmt == "JPEG":
        image.save(stream, format=fmt, quality=_JPEG_QUALITY)
    elif fmt == "WEBP":
        image.save(stream, format=fmt, lossless=True)
    else:
        image.save(stream, format=fmt)


def _write_png(stream: IO[bytes], hwc: np.ndarray) -> None:
    """PNG of 8/16-bit grey or RGB samples: big-endian rows, filter "Up", fast zlib (level 1,
    run-length strategy).

    Written here rather than by Pillow, which cannot write 16-bit RGB and takes twice as long
    for the rest (its adaptive filtering).
    """
    height, width = hwc.shape[:2]
    channels = 1 if hwc.ndim == 2 else hwc.shape[2]
    bits = 8 * hwc.dtype.itemsize
    big_endian = hwc if hwc.dtype.itemsize == 1 else hwc.astype(">u2")
    rows = big_endian.view(np.uint8).reshape(height, -1)
    filtered = np.empty((height, 1 + rows.shape[1]), np.uint8)  # each row: filter type, bytes
    filtered[:, 0] = 2  # "Up": Up(x) = Raw(x) - Prior(x) mod 256, the first row as it is
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    colour_type = 0 if channels == 1 else 2  # grey or RGB
    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    idat = _deflate(memoryview(filtered).cast("B"))
    stream.write(_PNG_SIGNATURE)
    for kind, data in ((b"IHDR", header), (b"IDAT", idat), (b"IEND", b"")):
        stream.write(struct.pack(">I", len(data)) + kind + data)
        stream.write(struct.pack(">I", zlib.crc32(kind + data)))


def _deflate(data: memoryview) -> bytes:
    """The zlib stream of ``data`` (fast level, run-length strategy); above
    2 x :data:`_DEFLATE_PIECE` bytes, pieces deflated on threads (zlib lets go of the GIL)
    and joined as pigz does.

    Each piece is a raw deflate stream ending on a byte boundary (a sync flush; the last one
    finished), so their concatenation is one valid stream; the zlib header and the Adler-32 of
    the whole data go around it. Run-length matches reach back one byte only, so the pieces
    compress as well as one stream (+54 bytes on 3 MB). A 4096² grey PNG: 56 ms instead of 103
    on 2 cores.
    """
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    starts = range(0, len(data), _DEFLATE_PIECE)
    if len(data) < 2 * _DEFLATE_PIECE or cores < 2:
        deflate = zlib.compressobj(_PNG_COMPRESSION, zlib.DEFLATED, 15, 9, _PNG_STRATEGY)
        return deflate.compress(data) + deflate.flush()

    def piece(start: int) -> bytes:
        deflate = zlib.compressobj(_PNG_COMPRESSION, zlib.DEFLATED, -15, 9, _PNG_STRATEGY)
        last = start + _DEFLATE_PIECE >= len(data)
        body = deflate.compress(data[start : start + _DEFLATE_PIECE])
        return body + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    with ThreadPoolExecutor(min(cores, len(starts))) as pool:
        pieces = list(pool.map(piece, starts))
    # CMF 0x78: deflate, 32 KiB window; FLG 0x01: fastest level, (CMF * 256 + FLG) % 31 == 0
    return b"\x78\x01" + b"".join(pieces) + struct.pack(">I", zlib.adler32(data))


def _write_tiff16_rgb(stream: IO[bytes], hwc: np.ndarray) -> None:
    try:
        import tifffile
    except ImportError as exc:
        raise ValueError(
            "writing 16-bit RGB TIFF needs the optional package tifffile (pip install "
            "tifffile); or write 16-bit RGB as .png, or .npy"
        ) from exc
    encoded = io.BytesIO()  # tifffile wants a named file or a buffer, not a bare descriptor
    tifffile.imwrite(encoded, hwc, photometric="rgb")
    stream.write(encoded.getvalue())


def _write_all(stream: IO[bytes], data: memoryview) -> None:
    """Write all of ``data`` to ``stream``, or raise.

    A stream's ``write`` may take only part (a pipe whose reader stops mid-stream: Python's
    buffered writer then returns the count taken instead of raising), so the rest is written
    again until the stream takes it or raises, e.g. ``BrokenPipeError``. A file-like object
    whose ``write`` returns ``None`` (no count) is taken to have written everything.
    """
    done = 0
    while done < len(data):
        taken = stream.write(data[done:])
        if taken is None:
            return
        if taken == 0:
            raise OSError(f"the stream took {done} of {len(data)} bytes and then no more")
        done += taken


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temporary file beside ``path``; on success fsync it and rename it onto ``path``."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TMP_MARKER}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            fd = os.open(tmp, flags, 0o666)  # minus the umask, as an ordinary open() gives
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Float values to pictures
# --------------------------------------------------------------------------------------------


def _to_float64(x: ArrayLike | torch.Tensor) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: any device, dtype or requires_grad
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def to_image_values(
    x: ArrayLike | torch.Tensor,
    *,
    bits: Literal[8, 16] = 8,
    scale: float | None = None,
    mode: Literal["fixed", "stretch"] = "fixed",
    max_value: float | None = None,
    signed: bool = False,
) -> np.ndarray:
    """Map float values (a gradient, a magnitude) to integer image values.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Values of any shape; tensors are detached and copied to the CPU.
    bits : {8, 16}, default 8
        Output depth: ``uint8`` (0..255) or ``uint16`` (0..65535).
    scale : float, optional
        Required for ``mode="fixed"`` (and only allowed there): output units per input unit.
        A fixed scale makes the outputs of a whole data set comparable.
    mode : {"fixed", "stretch"}, default "fixed"
        ``"fixed"``: ``out = clip(round(x * scale), 0, 2**bits - 1)``.
        ``"stretch"``: a per-image linear map of ``[lo, hi]`` onto ``[0, 2**bits - 1]``, a range
        that always contains 0: ``hi`` = max(0, largest finite value) (or ``max_value``) and
        ``lo`` = min(0, smallest finite value). So non-negative data maps ``[0, max]``, data
        with negatives ``[min, max]``; a constant positive image is all white, and an all-zero
        image (``hi == lo``) all 0.
    max_value : float, optional
        ``mode="stretch"`` only: the value that maps to full white instead of the image's
        maximum (e.g. a data set's maximum). Larger values are clipped.
    signed : bool, default False
        Keep the sign: 0 maps to mid-grey ``mid = 2**(bits-1)`` (128 for 8 bits). Fixed:
        ``out = clip(round(x * scale + mid), 0, 2**bits - 1)``. Stretch: symmetric,
        ``±m`` maps to ``mid ± (mid - 1)`` where ``m`` is the largest finite ``|x|`` (or
        ``max_value``).

    Returns
    -------
    numpy.ndarray
        ``uint8`` for ``bits=8``, ``uint16`` for ``bits=16``, same shape as ``x``.

    Notes
    -----
    Rounding is to nearest with ties to even (:func:`numpy.rint`), so 0.5 -> 0 and 1.5 -> 2.
    NaN is treated as 0 (output 0, or mid-grey when ``signed``); infinities are clipped.
    """
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if mode not in ("fixed", "stretch"):
        raise ValueError(f"mode must be 'fixed' or 'stretch', got {mode!r}")
    if mode == "fixed" and scale is None:
        raise ValueError("mode='fixed' needs a scale (output units per input unit)")
    if mode == "fixed" and max_value is not None:
        raise ValueError("max_value applies to mode='stretch' only; use scale with 'fixed'")
    if mode == "stretch" and scale is not None:
        raise ValueError("scale applies to mode='fixed' only; use max_value with 'stretch'")
    if max_value is not None and not max_value > 0:
        raise ValueError(f"max_value must be positive, got {max_value!r}")
    top = 2**bits - 1
    mid = 2 ** (bits - 1) if signed else 0
    if mode == "fixed":
        assert scale is not None
        return _fixed_samples(x, scale, mid, top)
    values = _to_float64(x)
    values = np.where(np.isnan(values), 0.0, values)
    if mode == "stretch":
        finite = values[np.isfinite(values)]
        if signed:
            m = max_value if max_value is not None else float(np.abs(finite).max(initial=0.0))
            scale, offset = ((mid - 1) / m if m > 0 else 0.0), 0.0
        else:
            hi = max_value if max_value is not None else float(finite.max(initial=0.0))
            lo = min(0.0, float(finite.min(initial=0.0)))
            scale, offset = (top / (hi - lo), -lo) if hi > lo else (0.0, 0.0)
        values = (values + offset) * scale if scale else np.zeros_like(values)
    out = np.clip(np.rint(values + mid), 0, top)
    return out.astype(np.uint8 if top == 255 else np.uint16)


def _fixed_samples(x: ArrayLike | torch.Tensor, scale: float, mid: int, top: int) -> np.ndarray:
    """``clip(rint(x * scale + mid), 0, top)`` in float64, NaN as 0: numpy's operations in
    numpy's order, done by torch's loops in place on float64 chunks of
    :data:`imgrad._memory.CHUNK_ELEMENTS` in a reused per-thread :func:`~imgrad._memory.scratch`.

    A float64 copy of the whole input would be a fresh allocation: at 4096² its 128 MiB of first
    page touches made the mapping take 52 ms instead of 7-9 on the reference machine (in a
    directory run of 256² images, 8 MiB of fresh pages per batch of 16).
    """
    import torch

    from . import _memory

    if isinstance(x, torch.Tensor):
        source = x.detach().cpu()  # a GPU result comes over once, in its own (narrower) dtype
    else:
        array = np.asarray(x, dtype=np.float64)  # only read: x stays as it was
        source = torch.from_numpy(array if array.flags.writeable else array.copy())
    flat = source.reshape(-1)
    out = np.empty(tuple(source.shape), np.uint8 if top == 255 else np.uint16)
    out_flat = out.reshape(-1)
    chunk = _memory.CHUNK_ELEMENTS
    for start in range(0, flat.numel(), chunk):
        n = min(chunk, flat.numel() - start)
        values = _memory.scratch("fixed samples", (n,), torch.float64, torch.device("cpu"))
        values.copy_(flat[start : start + n]).mul_(scale)
        # NaN (NaN * scale) becomes 0; ±inf become ±DBL_MAX, which the clip maps as it maps ±inf
        values.nan_to_num_(nan=0.0)
        if mid:
            values.add_(mid)
        values.round_()  # to nearest, ties to even, as numpy.rint
        values.clamp_(0, top)
        out_flat[start : start + n] = values.numpy()  # whole numbers in range: cast exactly
    return out


def orientation_picture(
    magnitude: ArrayLike | torch.Tensor,
    orientation: ArrayLike | torch.Tensor,
    *,
    max_magnitude: float | None = None,
) -> np.ndarray:
    """Colour picture of a gradient field: hue = direction, brightness = magnitude.

    Parameters
    ----------
    magnitude : array_like or torch.Tensor
        Gradient magnitude, shape ``(H, W)`` or ``(1, H, W)``.
    orientation : array_like or torch.Tensor
        Gradient direction in radians, same shape. Taken modulo 2π, so both [0, 2π) and
        atan2's (-π, π] work: 0 (+x, right) is red, π/2 (+y, down) yellow-green
        (hue 0.25), π cyan, 3π/2 violet.
    max_magnitude : float, optional
        Magnitude shown at full brightness; larger ones are clipped. Default: the image's
        largest finite magnitude, which makes the picture per-image.

    Returns
    -------
    numpy.ndarray
        ``uint8`` of shape ``(3, H, W)``: HSV with hue = orientation / 2π, saturation 1,
        value = clip(magnitude / max_magnitude, 0, 1), converted to RGB and rounded to
        nearest (ties to even). Zero (or NaN) magnitude is black.
    """
    mag = _to_float64(magnitude)
    angle = _to_float64(orientation)
    if mag.shape != angle.shape:
        raise ValueError(f"magnitude {mag.shape} and orientation {angle.shape} differ in shape")
    if mag.ndim == 3 and mag.shape[0] == 1:
        mag, angle = mag[0], angle[0]
    if mag.ndim != 2:
        raise ValueError(f"expected shape (H, W) or (1, H, W), got {mag.shape}")
    if max_magnitude is None:
        finite = mag[np.isfinite(mag)]
        max_magnitude = float(finite.max(initial=0.0))
    elif not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be positive, got {max_magnitude!r}")
    if max_magnitude > 0:
        value = np.clip(np.nan_to_num(mag / max_magnitude, nan=0.0), 0.0, 1.0)
    else:
        value = np.zeros_like(mag)
    hue6 = np.mod(np.nan_to_num(angle, nan=0.0), 2 * np.pi) / (2 * np.pi) * 6  # 0 <= hue6 <= 6
    sector = np.floor(hue6)
    frac = hue6 - sector
    sector = sector.astype(np.int64) % 6  # hue6 == 6 after rounding wraps to red
    rising = value * frac  # HSV "t" with s = 1
    falling = value * (1 - frac)  # HSV "q"
    zero = np.zeros_like(value)
    # sector:   0=red->yellow 1=yellow->green 2=green->cyan 3=cyan->blue 4=blue->magenta 5=back
    red = np.choose(sector, [value, falling, zero, zero, rising, value])
    green = np.choose(sector, [rising, value, value, falling, zero, zero])
    blue = np.choose(sector, [zero, zero, rising, value, value, falling])
    rgb = np.stack([red, green, blue])
    return np.rint(rgb * 255).astype(np.uint8)
