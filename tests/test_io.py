"""Tests of imgrad.io: reading, writing, value mapping and orientation pictures."""

from __future__ import annotations

import colorsys
import io
import math
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from imgrad import _memory
from imgrad import io as imgrad_io
from imgrad.io import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_INPUT_EXTENSIONS,
    SUPPORTED_OUTPUT_EXTENSIONS,
    ImageReadError,
    ImageTooLargeError,
    orientation_picture,
    read_image,
    to_image_values,
    write_image,
)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_images"
RNG = np.random.default_rng(12345)


def ramp_rgb(height: int = 6, width: int = 7) -> np.ndarray:
    """(3, H, W) uint8 with distinct values in every channel and pixel."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([10 * y + x, 200 - 7 * x, 3 * y + 40]).astype(np.uint8)


def png16(pixels: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG with the Sub filter on every row (exercises the filter's bytes-per-pixel)."""
    height, width, channels = pixels.shape
    raw = pixels.astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    bpp = channels * 2
    sub = raw.copy()
    sub[:, bpp:] -= raw[:, :-bpp]  # Sub(x) = Raw(x) - Raw(x - bpp) mod 256
    rows = np.concatenate([np.ones((height, 1), np.uint8), sub], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )


def leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if ".imgrad-tmp" in name]


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".bmp", ".webp", ".PNG"])
def test_8bit_rgb_and_grey_round_trip_exactly(tmp_path: Path, ext: str) -> None:
    """Lossless formats give back exactly the written uint8 values, grey and RGB."""
    rgb = ramp_rgb()
    write_image(tmp_path / f"rgb{ext}", rgb)
    back = read_image(tmp_path / f"rgb{ext}")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, rgb)
    if ext != ".webp":  # WebP has no grey mode: it comes back as three equal channels
        write_image(tmp_path / f"grey{ext}", rgb[:1])
        np.testing.assert_array_equal(read_image(tmp_path / f"grey{ext}"), rgb[:1])


@pytest.mark.parametrize("shape", [(1, 37, 53), (3, 37, 53)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_deflated_in_pieces_reads_back(
    tmp_path: Path, shape: tuple[int, ...], dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large PNGs are deflated in pieces on threads: with 500-byte pieces (boundaries inside
    rows) a small image takes that path, and Pillow's decoder and zlib read it back exactly."""
    monkeypatch.setattr(imgrad_io, "_DEFLATE_PIECE", 500)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    values = RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    values[..., 5:20, 10:30] = 7  # runs, which the run-length strategy encodes
    write_image(tmp_path / "a.png", values)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), values)
    if dtype == np.uint8 and shape[0] == 1:  # an independent decoder
        with Image.open(tmp_path / "a.png") as im:
            np.testing.assert_array_equal(np.asarray(im), values[0])
    data = (tmp_path / "a.png").read_bytes()
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    size = shape[1] * (1 + shape[0] * shape[2] * np.dtype(dtype).itemsize)
    raw = zlib.decompress(idat)  # one valid zlib stream: header, pieces, Adler-32 of the whole
    assert len(raw) == size and raw[:1] == b"\x02"  # the first row's filter byte, "Up"
    assert idat.count(b"\x00\x00\xff\xff") >= -(-size // 500) - 1  # a sync flush per piece


def test_2d_array_is_written_as_grey(tmp_path: Path) -> None:
    """An (H, W) array is a one-channel image."""
    write_image(tmp_path / "a.png", ramp_rgb()[0])
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), ramp_rgb()[:1])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_grey_keeps_every_bit(tmp_path: Path, ext: str) -> None:
    """16-bit grey PNG and TIFF keep 0, 1, 257, 65535 exactly, as uint16."""
    values = np.array([[[0, 1, 257, 65535], [256, 255, 32768, 65534]]], dtype=np.uint16)
    write_image(tmp_path / f"a{ext}", values)
    back = read_image(tmp_path / f"a{ext}")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, values)


def test_big_endian_array_is_written_by_value(tmp_path: Path) -> None:
    """Byte order of the array does not matter, only its values."""
    values = np.array([[[1, 258, 65535]]], dtype=">u2")
    write_image(tmp_path / "be.png", values)
    assert read_image(tmp_path / "be.png").tolist() == [[[1, 258, 65535]]]


def test_16bit_grey_png_written_by_pillow(tmp_path: Path) -> None:
    """A PNG that Pillow writes from mode I;16 reads back as the same uint16 values."""
    values = np.array([[0, 1, 257, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), values[np.newaxis])


def test_16bit_rgb_png_round_trip(tmp_path: Path) -> None:
    """16-bit RGB PNG (which Pillow cannot write nor fully read) keeps all 16 bits."""
    rgb16 = RNG.integers(0, 65536, (3, 9, 11), dtype=np.uint16)
    rgb16[:, 0, 0] = [0, 257, 65535]
    write_image(tmp_path / "a.png", rgb16)
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, rgb16)
    # an independent decoder agrees: Pillow reads the file as the high bytes
    with Image.open(tmp_path / "a.png") as im:
        np.testing.assert_array_equal(np.moveaxis(np.asarray(im), -1, 0), rgb16 >> 8)


def test_16bit_rgba_png_composite_and_drop(tmp_path: Path) -> None:
    """A Sub-filtered 16-bit RGBA PNG: drop gives the colour, composite round(c * a / 65535)."""
    rgba = RNG.integers(0, 65536, (5, 8, 4), dtype=np.uint16)
    rgba[0, 0] = [65535, 1000, 1, 32768]
    (tmp_path / "a.png").write_bytes(png16(rgba, colour_type=6))
    colour = np.moveaxis(rgba[..., :3], -1, 0)
    alpha = rgba[..., 3].astype(np.float64)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", alpha="drop"), colour)
    composite = read_image(tmp_path / "a.png")
    assert composite.dtype == np.uint16
    np.testing.assert_array_equal(composite, np.round(colour * alpha / 65535).astype(np.uint16))
    assert composite[:, 0, 0].tolist() == [32768, 500, 1]  # 0.50001 -> 1 (no exact halves)


def test_16bit_rgb_png_hand_encoded(tmp_path: Path) -> None:
    """A Sub-filtered 16-bit RGB PNG from an encoder other than ours reads exactly."""
    rgb = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    (tmp_path / "a.png").write_bytes(png16(rgb, colour_type=2))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), np.moveaxis(rgb, -1, 0))


def test_16bit_grey_alpha_png_is_refused_rather_than_truncated(tmp_path: Path) -> None:
    """Pillow decodes 16-bit LA PNG to 8 bits; that must be an error, not silent data loss."""
    (tmp_path / "la.png").write_bytes(png16(np.full((2, 3, 2), 1000, np.uint16), colour_type=4))
    with pytest.raises(ImageReadError, match=r"la\.png.*16-bit grey\+alpha"):
        read_image(tmp_path / "la.png")


def test_16bit_rgb_tiff_round_trip(tmp_path: Path) -> None:
    """16-bit RGB TIFF is written and read with tifffile, exactly."""
    pytest.importorskip("tifffile")
    rgb16 = RNG.integers(0, 65536, (3, 5, 6), dtype=np.uint16)
    write_image(tmp_path / "a.tif", rgb16)
    back = read_image(tmp_path / "a.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, rgb16)


def test_float32_grey_tiff_round_trip(tmp_path: Path) -> None:
    """Float32 grey TIFF keeps negative, fractional and large values bit for bit."""
    values = np.array([[[-1.5, 0.0, 1e-7, 3.25e5]]], dtype=np.float32)
    write_image(tmp_path / "f.tiff", values)
    back = read_image(tmp_path / "f.tiff")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, values)


def test_float_rgb_tiff_from_tifffile(tmp_path: Path) -> None:
    """A float64 RGB TIFF (Pillow cannot open it) is read with tifffile as float32."""
    tifffile = pytest.importorskip("tifffile")
    values = RNG.standard_normal((4, 5, 3))
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb")
    back = read_image(tmp_path / "f.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, np.moveaxis(values, -1, 0).astype(np.float32))


def test_tifffile_planar_rgba_with_orientation(tmp_path: Path) -> None:
    """Planar 16-bit RGBA TIFF: samples moved last, alpha composited, Orientation tag applied."""
    tifffile = pytest.importorskip("tifffile")
    planes = np.zeros((4, 2, 3), np.uint16)
    planes[:3] = 40000
    planes[3] = 65535
    planes[3, 0, 0] = 0
    tifffile.imwrite(
        tmp_path / "p.tif",
        planes,
        photometric="rgb",
        planarconfig="separate",
        extrasamples=["unassalpha"],
        extratags=[(274, "H", 1, 3, True)],  # Orientation 3: rotated 180 degrees
    )
    back = read_image(tmp_path / "p.tif")
    assert back.shape == (3, 2, 3)
    assert back[:, 1, 2].tolist() == [0, 0, 0]  # the transparent pixel, now bottom-right
    assert back[:, 0, 0].tolist() == [40000, 40000, 40000]


def tiff_with_extra_sample(path: Path, dtype, photometric: str, extra: int, planar: bool):
    """A 5 x 7 TIFF of one grey (or three RGB) samples and one extra sample of kind ``extra``
    (0 unspecified, 1 associated alpha, 2 unassociated alpha); returns (colour, alpha), HWC."""
    tifffile = pytest.importorskip("tifffile")
    samples = 2 if photometric != "rgb" else 4
    if np.dtype(dtype).kind == "f":
        pixels = RNG.random((5, 7, samples)).astype(dtype)
    else:
        pixels = RNG.integers(0, np.iinfo(dtype).max + 1, (5, 7, samples)).astype(dtype)
    pixels[0, 0, -1] = 0  # transparent
    layout = {"planarconfig": "separate"} if planar else {}
    data = np.moveaxis(pixels, -1, 0) if planar else pixels
    tifffile.imwrite(path, data, photometric=photometric, extrasamples=[extra], **layout)
    return pixels[..., :-1], pixels[..., -1:]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("photometric", ["minisblack", "rgb", "miniswhite"])
@pytest.mark.parametrize("extra", [0, 1, 2])
@pytest.mark.parametrize("planar", [False, True])
def test_tiff_extra_samples(tmp_path: Path, dtype, photometric, extra, planar) -> None:
    """Unassociated alpha (2) is composited, round(c * a / M); associated alpha (1) is already
    multiplied in and is dropped; an unspecified extra sample (0) is not alpha and is left out.
    The same for every bit depth and layout (Pillow, where it decodes the file, divided
    associated RGB by alpha and refused grey; planar grey+alpha it could not decode at all).
    An 8-bit MinIsWhite grey is inverted, its alpha not."""
    colour, alpha = tiff_with_extra_sample(tmp_path / "x.tif", dtype, photometric, extra, planar)
    if photometric == "miniswhite" and dtype == np.uint8:
        colour = 255 - colour
    if extra == 2 and dtype == np.float32:
        composite = (colour * alpha).astype(np.float32)
    elif extra == 2:
        top = np.iinfo(dtype).max
        composite = np.round(colour.astype(np.float64) * alpha / top).astype(dtype)
    else:
        composite = colour
    chw = np.moveaxis(composite, -1, 0)
    back = read_image(tmp_path / "x.tif")
    assert back.dtype == np.dtype(dtype) and back.shape == chw.shape
    np.testing.assert_array_equal(back, chw)
    if extra == 2:
        assert not back[:, 0, 0].any()
    np.testing.assert_array_equal(
        read_image(tmp_path / "x.tif", alpha="drop"), np.moveaxis(colour, -1, 0)
    )


def test_jpeg_read_is_roughly_right(tmp_path: Path) -> None:
    """JPEG is lossy: shape, dtype and values close to what was written."""
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.stack([4 * x, 6 * y, np.full_like(x, 128)]).astype(np.uint8)
    write_image(tmp_path / "a.jpg", rgb)
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == (3, 32, 48) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).mean() < 3
    write_image(tmp_path / "g.JPEG", rgb[:1])
    grey = read_image(tmp_path / "g.JPEG")
    assert grey.shape == (1, 32, 48)
    assert np.abs(grey.astype(int) - rgb[:1]).mean() < 3


@pytest.mark.parametrize("name", ["a.jpg", "a.png", "a.tif"])
def test_large_files_are_decoded_from_the_file_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Files up to a size are read whole before decoding, larger ones streamed from the open
    file: both give the same pixels (and a truncated file fails the same way)."""
    y, x = np.mgrid[0:40, 0:56]
    rgb = np.stack([4 * x, 6 * y, (x * y) % 256]).astype(np.uint8)
    write_image(tmp_path / name, rgb)
    whole = read_image(tmp_path / name)
    monkeypatch.setattr(imgrad_io, "_READ_WHOLE_BYTES", 0)
    assert np.array_equal(read_image(tmp_path / name), whole)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        read_image(tmp_path / name)


def test_gif_first_frame(tmp_path: Path) -> None:
    """An animated GIF gives its first frame (red), not the second (blue)."""
    first = Image.new("P", (4, 3))
    first.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    second = first.copy()
    second.putdata([1] * 12)
    first.save(tmp_path / "a.gif", save_all=True, append_images=[second])
    back = read_image(tmp_path / "a.gif")
    assert back.shape == (3, 3, 4)
    assert (back[0] == 255).all() and (back[1:] == 0).all()


def test_palette_without_and_with_transparency(tmp_path: Path) -> None:
    """P becomes RGB from the palette; a transparent index composites to black."""
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putdata([0, 1, 1])
    im.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png")[:, 0, :].T.tolist() == [
        [10, 20, 30],
        [200, 100, 50],
        [200, 100, 50],
    ]
    im.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "pt.png")[:, 0, 0].tolist() == [0, 0, 0]
    assert read_image(tmp_path / "pt.png")[:, 0, 1].tolist() == [200, 100, 50]
    assert read_image(tmp_path / "pt.png", alpha="drop")[:, 0, 0].tolist() == [10, 20, 30]


def test_la_composite_matches_exact_rounding_for_every_pair(tmp_path: Path) -> None:
    """All 65536 (grey, alpha) pairs: composite == round(v * a / 255); 200 @ 128 -> 100."""
    grey, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    Image.fromarray(np.stack([grey, alpha], axis=-1).astype(np.uint8), "LA").save(
        tmp_path / "la.png"
    )
    out = read_image(tmp_path / "la.png")
    assert out.shape == (1, 256, 256) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], np.round(grey * alpha / 255).astype(np.uint8))
    assert out[0, 200, 128] == 100 and out[0, 200, 255] == 200 and out[0, 200, 0] == 0
    np.testing.assert_array_equal(read_image(tmp_path / "la.png", alpha="drop")[0], grey)


def test_rgba_composite_and_drop(tmp_path: Path) -> None:
    """RGBA (200, 100, 50, 128) -> (100, 50, 25); a fully transparent junk colour -> black."""
    rgba = np.array([[[200, 100, 50, 128], [255, 255, 255, 0], [1, 2, 3, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png")[:, 0, :].T.tolist() == [
        [100, 50, 25],
        [0, 0, 0],
        [1, 2, 3],
    ]
    np.testing.assert_array_equal(
        read_image(tmp_path / "a.png", alpha="drop"), np.moveaxis(rgba[..., :3], -1, 0)
    )


def test_png_colour_key_transparency(tmp_path: Path) -> None:
    """A tRNS colour key on a grey PNG makes that grey black when compositing."""
    Image.fromarray(np.array([[7, 8, 7]], np.uint8)).save(tmp_path / "k.png", transparency=7)
    assert read_image(tmp_path / "k.png")[0, 0].tolist() == [0, 8, 0]
    assert read_image(tmp_path / "k.png", alpha="drop")[0, 0].tolist() == [7, 8, 7]


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    """CMYK white, cyan, black and half magenta convert to RGB."""
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [0, 128, 0, 0]]], np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    assert read_image(tmp_path / "c.tif")[:, 0, :].T.tolist() == [
        [255, 255, 255],
        [0, 255, 255],
        [0, 0, 0],
        [255, 127, 255],
    ]


def test_bilevel_becomes_0_and_255(tmp_path: Path) -> None:
    """Mode 1 reads as uint8 0/255."""
    Image.fromarray(np.array([[True, False, True]])).save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out.dtype == np.uint8 and out.tolist() == [[[255, 0, 255]]]


def test_32bit_integer_image_in_range_is_uint16(tmp_path: Path) -> None:
    """Mode I fitting 0..65535 gives uint16; values outside that range are an error."""
    Image.fromarray(np.array([[0, 65535, 300]], np.int32)).save(tmp_path / "i.tif")
    out = read_image(tmp_path / "i.tif")
    assert out.dtype == np.uint16 and out.tolist() == [[[0, 65535, 300]]]
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ImageReadError, match=r"big\.tif.*outside 0\.\.65535"):
        read_image(tmp_path / "big.tif")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    """All eight EXIF orientations are applied as PIL.ImageOps.exif_transpose applies them."""
    rgb = ramp_rgb(4, 6)
    im = Image.fromarray(np.moveaxis(rgb, 0, -1))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as saved:
        expected = np.moveaxis(np.asarray(ImageOps.exif_transpose(saved)), -1, 0)
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), expected)


@pytest.mark.parametrize(("orientation", "bright_corner"), [(6, (0, -1)), (8, (-1, 0))])
def test_exif_rotated_jpeg(tmp_path: Path, orientation: int, bright_corner: tuple) -> None:
    """A 16x32 JPEG tagged 6 (or 8) reads as 32x16; its top-left block moves to the top-right
    (rotated clockwise for viewing) or the bottom-left (counter-clockwise)."""
    grey = np.zeros((16, 32), np.uint8)
    grey[:8, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(grey).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (1, 32, 16)
    rows = slice(0, 8) if bright_corner[0] == 0 else slice(24, 32)
    cols = slice(0, 8) if bright_corner[1] == 0 else slice(8, 16)
    assert out[0, rows, cols].mean() > 240
    assert out[0].mean() < 255 * 64 / 512 + 5  # only that one 8x8 block is bright


def test_read_from_binary_stream() -> None:
    """A binary stream (like stdin) reads like a file."""
    buffer = io.BytesIO()
    Image.fromarray(np.moveaxis(ramp_rgb(), 0, -1)).save(buffer, format="PNG")
    buffer.seek(0)
    np.testing.assert_array_equal(read_image(buffer), ramp_rgb())


# --------------------------------------------------------------------------------------------
# Read errors
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope\.png.*no such file"):
        read_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ImageReadError, match=r"d\.png.*directory"):
        read_image(tmp_path / "d.png")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_device_is_refused_before_reading() -> None:
    """/dev/zero would be read until memory runs out."""
    with pytest.raises(ImageReadError, match=r"'/dev/zero': a device, not an image file"):
        read_image("/dev/zero")


def test_pipe_is_read(tmp_path: Path) -> None:
    """A named pipe (as `<(cat a.png)` gives) is read to its end like a file."""
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    write_image(tmp_path / "a.png", pixels)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes((tmp_path / "a.png").read_bytes()))
    writer.start()
    assert np.array_equal(read_image(fifo), pixels)
    writer.join()


def test_text_file_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("hello, not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png.*not an image"):
        read_image(tmp_path / "notes.png")


def test_stream_errors_name_the_stream() -> None:
    with pytest.raises(ImageReadError, match=r"<stream>.*not an image"):
        read_image(io.BytesIO(b"GIF? no"))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_truncated_file(tmp_path: Path, ext: str) -> None:
    """A file cut in half is an error, not a partly black image."""
    noise = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible: data is late
    Image.fromarray(noise).save(tmp_path / f"full{ext}")
    data = (tmp_path / f"full{ext}").read_bytes()
    (tmp_path / f"cut{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=rf"cut\{ext}.*truncated or corrupt"):
        read_image(tmp_path / f"cut{ext}")


def test_too_many_pixels(tmp_path: Path) -> None:
    """Over max_pixels: ImageTooLargeError (an ImageReadError and ValueError) saying what to do."""
    write_image(tmp_path / "big.png", np.zeros((1, 10, 20), np.uint8))
    with pytest.raises(ImageTooLargeError) as info:
        read_image(tmp_path / "big.png", max_pixels=199)
    message = str(info.value)
    assert "big.png" in message and "20x10 = 200 pixels" in message and "199" in message
    assert "--max-pixels" in message and "tiled TIFF or Zarr" in message
    assert isinstance(info.value, ImageReadError) and isinstance(info.value, ValueError)
    assert read_image(tmp_path / "big.png", max_pixels=200).shape == (1, 10, 20)


def test_our_limit_replaces_pillows_global(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's global limit neither warns nor refuses; ours governs, and the global is kept."""
    write_image(tmp_path / "a.png", np.zeros((1, 10, 20), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 200 px > 2 * 10: Pillow would raise
    assert read_image(tmp_path / "a.png", max_pixels=None).shape == (1, 10, 20)
    assert Image.MAX_IMAGE_PIXELS == 10
    assert DEFAULT_MAX_PIXELS == 2**28


def test_invalid_arguments(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        read_image(tmp_path / "a.png", alpha="keep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(tmp_path / "a.png", max_pixels=0)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def test_extension_sets() -> None:
    for extensions in (SUPPORTED_INPUT_EXTENSIONS, SUPPORTED_OUTPUT_EXTENSIONS):
        assert all(ext.startswith(".") and ext == ext.lower() for ext in extensions)
    assert {".png", ".jpg", ".tif", ".tiff", ".webp", ".bmp", ".gif"} <= SUPPORTED_INPUT_EXTENSIONS
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".npy"} == (
        SUPPORTED_OUTPUT_EXTENSIONS
    )


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'\.xyz'.*supported: .*\.png"):
        write_image(tmp_path / "a.xyz", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"'.*noext' has no extension.*\.png"):
        write_image(tmp_path / "noext", np.zeros((2, 2), np.uint8))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "array", "match"),
    [
        ("a.png", np.zeros((2, 2), np.float32), "PNG cannot store a grey float32"),
        ("a.jpg", np.zeros((2, 2), np.uint16), "JPEG cannot store a grey uint16"),
        ("a.webp", np.zeros((3, 2, 2), np.uint16), "WEBP cannot store a RGB uint16"),
        ("a.tif", np.zeros((3, 2, 2), np.float32), r"TIFF cannot store a RGB float32.*\.npy"),
        ("a.tif", np.zeros((2, 2), np.float64), "TIFF cannot store a grey float64"),
        ("a.png", np.zeros((2, 2, 2), np.uint8), r"shape \(H, W\) or \(C, H, W\)"),
    ],
)
def test_arrays_a_format_cannot_store(tmp_path: Path, name: str, array, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_image(tmp_path / name, array)
    assert os.listdir(tmp_path) == []


def test_npy_keeps_any_array(tmp_path: Path) -> None:
    array = RNG.standard_normal((2, 3, 4, 5))
    write_image(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)


def test_format_overrides_extension_and_streams(tmp_path: Path) -> None:
    """format= picks the encoder; a stream needs it."""
    write_image(tmp_path / "out.dat", ramp_rgb(), format="png")
    assert (tmp_path / "out.dat").read_bytes().startswith(b"\x89PNG")
    stream = io.BytesIO()
    write_image(stream, ramp_rgb(), format=".TIFF")
    stream.seek(0)
    np.testing.assert_array_equal(read_image(stream), ramp_rgb())
    with pytest.raises(ValueError, match="format is required"):
        write_image(io.BytesIO(), ramp_rgb())


class Sip(io.RawIOBase):
    """A stream that takes at most ``per_call`` bytes a call; after ``limit`` bytes its reader
    is gone (a pipe whose reader stopped mid-stream)."""

    def __init__(self, per_call: int, limit: int | None = None) -> None:
        self.per_call, self.limit, self.data = per_call, limit, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.limit is not None and len(self.data) >= self.limit:
            raise BrokenPipeError(32, "Broken pipe")
        taken = bytes(b[: self.per_call])
        self.data += taken
        return len(taken)


def test_stream_that_takes_part_of_each_write_gets_all_or_an_error() -> None:
    """A short write is continued, not taken for the whole image; a reader that stops
    mid-stream raises instead of leaving a truncated image behind a success."""
    want = io.BytesIO()
    write_image(want, ramp_rgb(), format="png")
    sip = Sip(per_call=7)
    write_image(sip, ramp_rgb(), format="png")
    assert bytes(sip.data) == want.getvalue() and len(sip.data) > 7
    with pytest.raises(BrokenPipeError):
        write_image(Sip(per_call=7, limit=14), ramp_rgb(), format="png")

    class NoCount(io.BytesIO):  # a file-like object whose write returns no count
        def write(self, b) -> None:  # type: ignore[override]
            super().write(b)

    quiet = NoCount()
    write_image(quiet, ramp_rgb(), format="png")
    assert quiet.getvalue() == want.getvalue()


def test_overwrite_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "a.png"
    dest.write_bytes(b"old")
    write_image(dest, ramp_rgb())
    np.testing.assert_array_equal(read_image(dest), ramp_rgb())
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_failed_npy_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder failing midway leaves the old destination intact and no temporary file."""

    def broken_save(file, *args, **kwargs) -> None:
        file.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    dest = tmp_path / "a.npy"
    dest.write_bytes(b"old content")
    with pytest.raises(OSError, match="disk full"):
        write_image(dest, np.zeros(3))
    assert dest.read_bytes() == b"old content"
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["a.npy"]


@pytest.mark.parametrize("error", [RuntimeError("encoder crashed"), KeyboardInterrupt()])
@pytest.mark.parametrize("name", ["a.tif", "a.png"])
def test_failed_image_write_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, name: str
) -> None:
    """Even an interrupt during encoding leaves no destination and no temporary file."""

    def broken_save(self, fp, *args, **kwargs) -> None:  # Pillow's encoders (TIFF, ...)
        fp.write(b"II*\x00 partial")
        raise error

    def broken_deflate(*args, **kwargs):  # imgrad's own PNG writer
        raise error

    monkeypatch.setattr(Image.Image, "save", broken_save)
    monkeypatch.setattr(imgrad_io.zlib, "compressobj", broken_deflate)
    with pytest.raises(type(error)):
        write_image(tmp_path / name, ramp_rgb())
    assert os.listdir(tmp_path) == []


def test_temporary_file_is_hidden_beside_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While encoding, the data goes to '.<name>.<random>.imgrad-tmp' in the same directory."""
    seen: list[list[str]] = []
    real_save = np.save

    def spying_save(file, array, **kwargs) -> None:
        seen.append(leftovers(tmp_path))
        real_save(file, array, **kwargs)

    monkeypatch.setattr(np, "save", spying_save)
    write_image(tmp_path / "a.npy", np.arange(3))
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith(".a.npy.")
    assert os.listdir(tmp_path) == ["a.npy"]


# --------------------------------------------------------------------------------------------
# to_image_values
# --------------------------------------------------------------------------------------------


def test_fixed_scale_rounds_half_to_even_and_clips() -> None:
    x = np.array([-1.0, 0.0, 0.5, 1.5, 2.5, 100.0, 300.0])
    out = to_image_values(x, scale=1.0)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 0, 2, 2, 100, 255]
    assert to_image_values(x, scale=10.0).tolist() == [0, 0, 5, 15, 25, 255, 255]


def test_fixed_scale_16_bits() -> None:
    out = to_image_values(np.array([0.25, 1.0, 2.0]), bits=16, scale=65535.0)
    assert out.dtype == np.uint16 and out.tolist() == [16384, 65535, 65535]


def test_signed_fixed_maps_zero_to_mid_grey() -> None:
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert to_image_values(x, scale=100.0, signed=True).tolist() == [0, 28, 128, 228, 255]
    assert to_image_values(x, bits=16, scale=1.0, signed=True).tolist() == [
        32766,
        32767,
        32768,
        32769,
        32770,
    ]


def test_nan_is_zero_and_infinities_clip() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert to_image_values(x, scale=1.0).tolist() == [0, 255, 0, 1]
    assert to_image_values(x, scale=1.0, signed=True).tolist() == [128, 255, 0, 129]
    assert to_image_values(x, mode="stretch").tolist() == [0, 255, 0, 255]


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("chunk", [None, 1000])
def test_fixed_mapping_equals_the_numpy_formula(
    bits: int, signed: bool, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the documented formula in numpy float64 vs the implementation (torch's loops on float64
    # chunks; 1000 does not divide the 16384 values, so the last chunk is partial), on float32
    # magnitudes with exact ties (k + 0.5 after scaling), NaN, infinities and negatives; as a
    # tensor, an array and a transposed (non-contiguous) view, none of which may change
    if chunk is not None:
        monkeypatch.setattr(_memory, "CHUNK_ELEMENTS", chunk)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 1, 64, 64, generator=gen) * 300
    x.view(-1)[:200] = torch.arange(200) * 0.25 - 10  # scale 2: every other one is a tie
    x.view(-1)[200:203] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    scale, top, mid = 2.0, 2**bits - 1, (2 ** (bits - 1) if signed else 0)
    values = np.nan_to_num(x.double().numpy(), nan=0.0, posinf=np.inf, neginf=-np.inf)
    expected = np.clip(np.rint(values * scale + mid), 0, top)
    before = x.clone()
    for given in (x, x.numpy()):
        out = to_image_values(given, bits=bits, scale=scale, signed=signed)
        assert out.dtype == (np.uint8 if bits == 8 else np.uint16) and out.shape == x.shape
        np.testing.assert_array_equal(out, expected)
    transposed = to_image_values(x.mT, bits=bits, scale=scale, signed=signed)
    np.testing.assert_array_equal(transposed, np.swapaxes(expected, -1, -2))
    assert torch.equal(x.nan_to_num(nan=7), before.nan_to_num(nan=7))
    assert out.flat[1] == np.clip(np.rint(-9.75 * 2 + mid), 0, top)  # -19.5 + mid, a tie


def test_stretch() -> None:
    """[0, max] -> [0, 255]; with negatives [min, max]; 127.5 rounds to 128 (even)."""
    assert to_image_values(np.array([0.0, 1.0, 2.0, 4.0]), mode="stretch").tolist() == [
        0,
        64,
        128,
        255,
    ]
    assert to_image_values(np.array([-1.0, 0.0, 3.0]), mode="stretch").tolist() == [0, 64, 255]
    assert to_image_values(np.array([1.0, 2.0]), mode="stretch", bits=16).tolist() == [
        32768,
        65535,
    ]
    assert to_image_values(
        np.array([0.0, 1.0, 2.0, 8.0]), mode="stretch", max_value=4.0
    ).tolist() == [
        0,
        64,
        128,
        255,
    ]


def test_stretch_range_always_contains_zero() -> None:
    """All-negative data maps [min, 0]; constant positive data is all white."""
    assert to_image_values(np.array([-4.0, -2.0]), mode="stretch").tolist() == [0, 128]
    assert to_image_values(np.full(2, 3.0), mode="stretch").tolist() == [255, 255]


def test_stretch_degenerate_is_zeros() -> None:
    assert to_image_values(np.zeros((2, 3)), mode="stretch").tolist() == [[0, 0, 0], [0, 0, 0]]
    assert to_image_values(np.full(3, -2.0), mode="stretch").tolist() == [0, 0, 0]
    assert to_image_values(np.full(2, np.nan), mode="stretch").tolist() == [0, 0]
    assert to_image_values(np.zeros(2), mode="stretch", signed=True).tolist() == [128, 128]


def test_signed_stretch_is_symmetric() -> None:
    out = to_image_values(np.array([-2.0, 0.0, 1.0, 2.0]), mode="stretch", signed=True)
    assert out.tolist() == [1, 128, 192, 255]  # 128 + 63.5 rounds to even


def test_torch_tensor_input() -> None:
    x = torch.tensor([[0.0, 1.0], [2.0, 4.0]], requires_grad=True)
    out = to_image_values(x, scale=10.0)
    assert isinstance(out, np.ndarray) and out.tolist() == [[0, 10], [20, 40]]
    bf16 = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    assert to_image_values(bf16, mode="stretch").tolist() == [128, 255]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs a scale"),
        ({"scale": 1.0, "bits": 12}, "bits must be 8 or 16"),
        ({"mode": "stretch", "scale": 2.0}, "scale applies to mode='fixed'"),
        ({"scale": 1.0, "max_value": 2.0}, "max_value applies to mode='stretch'"),
        ({"mode": "stretch", "max_value": 0.0}, "max_value must be positive"),
        ({"mode": "log"}, "mode must be"),
    ],
)
def test_to_image_values_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_image_values(np.zeros(2), **kwargs)


# --------------------------------------------------------------------------------------------
# orientation_picture
# --------------------------------------------------------------------------------------------


def test_orientation_picture_primary_directions() -> None:
    """0 (gx only) red, pi/2 (gy only) hue 0.25, pi cyan, 3pi/2 violet; atan2's -pi/2 too."""
    angles = np.array([[0.0, math.pi / 2, math.pi, 3 * math.pi / 2, -math.pi / 2]])
    picture = orientation_picture(np.ones_like(angles), angles)
    assert picture.shape == (3, 1, 5) and picture.dtype == np.uint8
    assert picture[:, 0, :].T.tolist() == [
        [255, 0, 0],
        [128, 255, 0],
        [0, 255, 255],
        [128, 0, 255],
        [128, 0, 255],
    ]


def test_orientation_picture_value_is_relative_magnitude() -> None:
    """Brightness = magnitude / max; zero and NaN magnitude are black; max_magnitude clips."""
    magnitude = np.array([[2.0, 1.0, 0.0, np.nan]])
    angle = np.zeros_like(magnitude)
    assert orientation_picture(magnitude, angle)[:, 0, :].T.tolist() == [
        [255, 0, 0],
        [128, 0, 0],
        [0, 0, 0],
        [0, 0, 0],
    ]
    clipped = orientation_picture(magnitude, angle, max_magnitude=1.0)
    assert clipped[0, 0, :2].tolist() == [255, 255]
    assert orientation_picture(np.zeros((2, 2)), np.ones((2, 2))).max() == 0


def test_orientation_picture_matches_colorsys() -> None:
    """Random hues and values agree with colorsys.hsv_to_rgb to within rounding."""
    magnitude = RNG.uniform(0, 1, (1, 8, 9))
    magnitude[0, 0, 0] = 1.0
    angle = RNG.uniform(-math.pi, 2 * math.pi, (1, 8, 9))
    picture = orientation_picture(torch.from_numpy(magnitude), torch.from_numpy(angle))
    expected = np.array(
        [
            colorsys.hsv_to_rgb((a / (2 * math.pi)) % 1.0, 1.0, m)
            for m, a in zip(magnitude.ravel(), angle.ravel(), strict=True)
        ]
    )
    expected = np.rint(expected.T.reshape(3, 8, 9) * 255)
    assert np.abs(picture.astype(int) - expected).max() <= 1


def test_orientation_picture_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        orientation_picture(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(1, H, W\)"):
        orientation_picture(np.zeros((3, 2, 2)), np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="max_magnitude must be positive"):
        orientation_picture(np.zeros((2, 2)), np.zeros((2, 2)), max_magnitude=0.0)


# --------------------------------------------------------------------------------------------
# Sample images
# --------------------------------------------------------------------------------------------

SAMPLE_SHAPES = {
    "astronaut.png": (3, 512, 512),
    "brick.png": (1, 512, 512),
    "camera.png": (1, 512, 512),
    "chelsea.png": (3, 300, 451),
    "coffee.png": (3, 400, 600),
    "coins.png": (1, 303, 384),
    "horse.png": (3, 328, 400),
    "rocket.jpg": (3, 427, 640),
    "text.png": (1, 172, 448),
}


def test_sample_images_are_the_licensed_ones() -> None:
    files = {p.name for p in SAMPLE_DIR.iterdir()} - {"LICENSES.md"}
    assert files == set(SAMPLE_SHAPES)
    licences = (SAMPLE_DIR / "LICENSES.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in licences for name in SAMPLE_SHAPES)


@pytest.mark.parametrize("name", sorted(SAMPLE_SHAPES))
def test_sample_image_reads(name: str) -> None:
    image = read_image(SAMPLE_DIR / name)
    assert image.shape == SAMPLE_SHAPES[name] and image.dtype == np.uint8
    assert image.max() > image.min()


def test_module_does_not_import_click_or_torch_eagerly() -> None:
    """imgrad.io depends on Pillow and numpy only (torch tensors are duck-typed)."""
    source = Path(imgrad_io.__file__).read_text(encoding="utf-8")
    assert "import click" not in source
    assert "\nimport torch" not in source and "\nimport tifffile" not in source
