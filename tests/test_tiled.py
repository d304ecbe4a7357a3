"""Tiled processing of huge images: stitched tiles equal the whole-image call, bit for bit."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch

import imgrad
from imgrad import io as image_io
from imgrad.thresholds import threshold, threshold_otsu, threshold_relative
from imgrad.tiled import (
    MissingExtraError,
    NonLocalStageError,
    Source,
    open_source,
    process_huge,
)

tifffile = pytest.importorskip("tifffile")
PIL_MAJOR = int(PIL.__version__.split(".")[0])
zarr = pytest.importorskip("zarr")

OPERATORS = [("sobel", 1), ("sobel", 3), ("sobel", 5), ("sobel", 7)] + [
    (name, 3) for name in ("scharr", "prewitt", "central", "forward")
]


def _random_tile(rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
    return int(rng.integers(1, h + 5)), int(rng.integers(1, w + 5))


def _image(shape: tuple[int, ...], dtype: torch.dtype = torch.uint8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    return torch.randint(0, 256, shape, generator=g).to(dtype)


def test_huge_ish_image_with_random_tiles_equals_whole() -> None:
    """A 2-megapixel image cut into random tile sizes stitches to the whole-image magnitude."""
    x = _image((1200, 1700))
    whole = imgrad.magnitude(imgrad.sobel(x))
    rng = np.random.default_rng(1)
    for _ in range(3):
        tile = (int(rng.integers(50, 700)), int(rng.integers(50, 900)))
        assert torch.equal(process_huge(x, tile=tile), whole), tile


@pytest.mark.parametrize("border", list(imgrad.BORDERS))
@pytest.mark.parametrize(("operator", "ksize"), OPERATORS)
def test_every_operator_and_border(operator: str, ksize: int, border: str) -> None:
    """gy, gx, magnitude (three norms) and orientation equal the whole-image functions."""
    x = _image((2, 45, 38), seed=ksize)
    tile = _random_tile(np.random.default_rng(ksize + len(border)), 45, 38)
    options = dict(operator=operator, ksize=ksize, border=border, border_value=3.5)
    g = imgrad.spatial_gradient(x, **options)
    assert torch.equal(process_huge(x, stage="gy", tile=tile, **options), g.gy)
    assert torch.equal(process_huge(x, stage="gx", tile=tile, **options), g.gx)
    for norm in ("l2", "l1", "squared"):
        tiled = process_huge(x, norm=norm, tile=tile, **options)
        assert torch.equal(tiled, imgrad.magnitude(g, norm)), norm
    whole_angle = imgrad.orientation(g, degrees=True)
    tiled_angle = process_huge(x, stage="orientation", degrees=True, tile=tile, **options)
    assert torch.equal(tiled_angle, whole_angle)


def test_orientation_tiles_equal_the_whole_image() -> None:
    """Orientation is position-independent (computed in float64), so tiles give the same bits."""
    x = _image((60, 70), torch.float32)
    tiled = process_huge(x, stage="orientation", signed=True, tile=(13, 17))
    assert torch.equal(tiled, imgrad.orientation(imgrad.sobel(x), signed=True))


@pytest.mark.parametrize("border", list(imgrad.BORDERS))
@pytest.mark.parametrize(("operator", "ksize"), [("sobel", 1), ("sobel", 5), ("central", 3)])
def test_second_derivatives_and_laplacian(operator: str, ksize: int, border: str) -> None:
    """gyy, gxy, gxx (normalized, with spacing) and the Laplacian tile exactly."""
    x = _image((31, 29), torch.float64, seed=2)
    options = dict(operator=operator, ksize=ksize, border=border, border_value=-1.0)
    whole = imgrad.second_derivatives(x, normalized=True, spacing=(0.5, 2.0), **options)
    for stage in ("gyy", "gxy", "gxx"):
        tiled = process_huge(
            x, stage=stage, normalized=True, spacing=(0.5, 2.0), tile=(7, 5), **options
        )
        assert torch.equal(tiled, getattr(whole, stage)), stage
    if operator == "sobel":
        tiled = process_huge(x, stage="laplacian", tile=(4, 9), **options)
        assert torch.equal(tiled, imgrad.laplacian(x, ksize, border=border, border_value=-1.0))


@pytest.mark.parametrize("color", ["channels", "luminance", "max"])
@pytest.mark.parametrize("border", ["constant", "circular", "reflect101"])
def test_colour_modes(color: str, border: str) -> None:
    """Luminance is taken before the border (it matters for constant), max per pixel."""
    x = _image((3, 40, 33), seed=5)
    options = dict(border=border, border_value=100.0, color=color, normalized=True)
    whole = imgrad.magnitude(imgrad.sobel(x, **options))
    assert torch.equal(process_huge(x, tile=(9, 14), **options), whole)


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.uint16, torch.int32, torch.float16, torch.float64]
)
def test_dtypes_follow_the_whole_image_rules(dtype: torch.dtype) -> None:
    """Integers compute in float32/float64, float16 is rounded once, as on the whole image."""
    x = _image((25, 27), dtype, seed=3)
    whole = imgrad.gradient_magnitude(x, "scharr")
    tiled = process_huge(x, operator="scharr", tile=(6, 11))
    assert tiled.dtype == whole.dtype
    assert torch.equal(tiled, whole)


def test_numpy_in_numpy_out_and_rank() -> None:
    """Arrays come back as arrays; (H, W) stays (H, W), (C, H, W) stays (C, H, W)."""
    x = _image((2, 20, 21)).numpy()
    out = process_huge(x, tile=8)
    assert isinstance(out, np.ndarray) and out.shape == (2, 20, 21)
    np.testing.assert_array_equal(out, imgrad.magnitude(imgrad.sobel(x)))
    assert process_huge(x[0], tile=8).shape == (20, 21)


@pytest.mark.parametrize("border", ["circular", "constant"])
def test_thresholds_fixed_relative_otsu(border: str) -> None:
    """Fixed is local; ratio and Otsu take global statistics in a first pass: all exact."""
    x = _image((2, 70, 61), torch.float32, seed=7)
    m = imgrad.magnitude(imgrad.sobel(x, border=border))
    cases = [
        (dict(threshold=1.2), threshold(m, 1.2)),
        (dict(ratio=0.4), threshold_relative(m, 0.4)),
        (dict(otsu=True), threshold_otsu(m)),
        (dict(otsu=True, bins=19), threshold_otsu(m, 19)),
    ]
    for options, expected in cases:
        tiled = process_huge(x, stage="threshold", border=border, tile=(11, 16), **options)
        assert tiled.dtype == torch.bool
        assert torch.equal(tiled, expected), options


def test_otsu_of_a_constant_magnitude_is_empty() -> None:
    """A flat image has one magnitude value; nothing is above Otsu's threshold (its value)."""
    out = process_huge(np.full((20, 20), 9, np.uint8), stage="threshold", otsu=True, tile=7)
    assert not out.any()


def test_hysteresis_and_canny_are_refused_with_advice() -> None:
    """Non-local stages raise NonLocalStageError saying why and what to use."""
    for stage in ("hysteresis", "canny"):
        with pytest.raises(NonLocalStageError, match="not local|cross any number of tiles"):
            process_huge(np.zeros((8, 8), np.uint8), stage=stage)
    with pytest.raises(NonLocalStageError, match="stage='threshold'"):
        process_huge(np.zeros((8, 8), np.uint8), stage="canny")


def test_bad_options() -> None:
    """Bad values raise ValueError naming them."""
    x = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="unknown stage 'edges'"):
        process_huge(x, stage="edges")
    with pytest.raises(ValueError, match="exactly one of"):
        process_huge(x, stage="threshold")
    with pytest.raises(ValueError, match="threshold=, ratio="):
        process_huge(x, threshold=3.0)
    with pytest.raises(ValueError, match="scale is required"):
        process_huge(x, output="uint8")
    with pytest.raises(ValueError, match="tile"):
        process_huge(x, tile=0)
    with pytest.raises(ValueError, match=r"tile must be an int or a \(rows, columns\) pair"):
        process_huge(x, tile=16.5)
    with pytest.raises(TypeError, match=r"bfloat16 has none; pass image.float\(\)"):
        process_huge(torch.rand(40, 40).bfloat16(), tile=16)
    with pytest.raises(ValueError, match="too small"):
        process_huge(np.zeros((0, 9), np.uint8), ksize=7)
    with pytest.raises(ValueError, match="luminance"):
        process_huge(x, color="luminance")
    with pytest.raises(ValueError, match="no second-derivative"):
        process_huge(x, stage="gxx", operator="scharr")
    with pytest.raises(ValueError, match="alpha must be 'composite' or 'drop', got 'over'"):
        process_huge(x, alpha="over")


def test_progress_counts_every_tile_of_every_pass() -> None:
    """progress(done, total) after each tile; Otsu takes three passes."""
    calls: list[tuple[int, int]] = []
    x = np.zeros((30, 30), np.uint8)
    process_huge(x, tile=10, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 9) for i in range(1, 10)]
    calls.clear()
    process_huge(
        x, stage="threshold", otsu=True, tile=10, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (27, 27) and len(calls) == 19  # a flat image has no histogram pass
    calls.clear()
    process_huge(
        x + np.eye(30, dtype=np.uint8),
        stage="threshold",
        otsu=True,
        tile=10,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(i, 27) for i in range(1, 28)]


class _CountingSource(Source):
    """A source that records the largest window it was asked for."""

    read_in_task = True
    kind = "numpy"
    rank = 2

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype, self.largest = (
            array[None],
            (1, *array.shape),
            array.dtype,
            0,
        )

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        self.largest = max(self.largest, (rows[1] - rows[0]) * (cols[1] - cols[0]))
        return self.array[:, rows[0] : rows[1], cols[0] : cols[1]]


def test_reads_are_tile_sized() -> None:
    """Only windows of a tile plus its halo are ever read from the source."""
    source = _CountingSource(np.arange(100 * 90, dtype=np.uint16).reshape(100, 90) % 251)
    out = process_huge(source, ksize=5, tile=(16, 32))
    np.testing.assert_array_equal(out, imgrad.magnitude(imgrad.sobel(source.array[0], 5)))
    assert source.largest <= (16 + 4) * (32 + 4)


# --------------------------------------------------------------------------- files


def _tiles(image: np.ndarray, tile: int):
    for y in range(0, image.shape[0], tile):
        for x in range(0, image.shape[1], tile):
            yield image[y : y + tile, x : x + tile]


def test_tiff_in_tiff_out_streaming(tmp_path: Path) -> None:
    """A tiled TIFF written from a generator goes to a tiled TIFF, equal to the whole image."""
    image = _image((300, 260)).numpy()
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, data=_tiles(image, 64), shape=image.shape, dtype=np.uint8, tile=(64, 64))
    assert process_huge(src, dst, operator="scharr", border="circular", tile=(48, 80)) is None
    with tifffile.TiffFile(dst) as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 80
        out = tif.asarray()
    expected = imgrad.magnitude(imgrad.scharr(image, border="circular"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*imgrad-tmp"))


def test_zarr_in_zarr_out_and_fixed_scale(tmp_path: Path) -> None:
    """Zarr to Zarr (chunks = tiles) and to a uint16 TIFF with a fixed scale (signed gx)."""
    image = _image((3, 90, 110), torch.float32).numpy()
    src = zarr.create_array(
        str(tmp_path / "in.zarr"), shape=image.shape, chunks=(3, 32, 32), dtype="f4"
    )
    src[:] = image
    process_huge(tmp_path / "in.zarr", tmp_path / "out.zarr", stage="gx", tile=(32, 48))
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    assert out.chunks == (3, 32, 48)
    np.testing.assert_array_equal(out[:], imgrad.sobel(image).gx)
    process_huge(src, tmp_path / "gx.tif", stage="gx", output="uint16", scale=1000.0, tile=32)
    expected = image_io.to_image_values(imgrad.sobel(image).gx, bits=16, scale=1000.0, signed=True)
    np.testing.assert_array_equal(
        np.moveaxis(tifffile.imread(tmp_path / "gx.tif"), -1, 0), expected
    )


def test_rgb_tiff_and_mask_output(tmp_path: Path) -> None:
    """An interleaved RGB TIFF is read as (3, H, W); a mask is stored as 0/255 uint8."""
    rgb = _image((70, 50, 3), seed=9).numpy()
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, tile=(32, 32), photometric="rgb")
    process_huge(
        tmp_path / "rgb.tif",
        tmp_path / "mask.zarr",
        stage="threshold",
        otsu=True,
        color="luminance",
        tile=(16, 16),
    )
    m = imgrad.magnitude(imgrad.sobel(np.moveaxis(rgb, -1, 0), color="luminance"))
    expected = threshold_otsu(m).astype(np.uint8) * 255
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "mask.zarr"))[:], expected[0])


def test_existing_destination_is_replaced_only_when_complete(tmp_path: Path) -> None:
    """A failed run leaves the old output and no temporary file."""
    dst = tmp_path / "out.zarr"
    process_huge(np.ones((20, 20), np.uint8), dst, tile=16)

    def boom(done: int, total: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        process_huge(np.ones((40, 40), np.uint8), dst, tile=16, progress=boom)
    assert zarr.open_array(str(dst)).shape == (20, 20)
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]


def test_small_results_to_png_and_a_clear_error_when_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other formats are written whole; beyond the pixel limit the error names TIFF and Zarr."""
    image = _image((40, 30)).numpy()
    process_huge(image, tmp_path / "m.png", output="uint8", scale=0.25, tile=16)
    expected = image_io.to_image_values(imgrad.magnitude(imgrad.sobel(image)), scale=0.25)
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "m.png")[0], expected)
    monkeypatch.setattr(image_io, "DEFAULT_MAX_PIXELS", 100)
    with pytest.raises(ValueError, match=r"tiled TIFF \(\.tif\) or Zarr"):
        process_huge(image, tmp_path / "big.png", output="uint8", scale=0.25, tile=16)


def test_numpy_integer_tiles() -> None:
    """A tile size computed with numpy (np.int64) is an int like any other."""
    x = _image((30, 31), torch.float32, seed=2)
    got = process_huge(x, tile=(np.int64(7), np.int32(9)))
    assert torch.equal(got, imgrad.gradient_magnitude(x))


def test_tiff_tiles_must_be_multiples_of_16(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        process_huge(np.zeros((40, 40), np.uint8), tmp_path / "o.tif", tile=20)


def test_missing_extra_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tifffile/zarr the error says pip install 'imgrad[dask]'."""
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((20, 20), np.uint8))
    real_import = importlib.import_module

    def fail(name: str, *args: object) -> object:
        if name in ("tifffile", "zarr", "distributed"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fail)
    for call in (
        lambda: open_source(tmp_path / "a.tif"),
        lambda: process_huge(np.zeros((20, 20), np.uint8), tmp_path / "o.zarr"),
    ):
        with pytest.raises(MissingExtraError, match=r"pip install 'imgrad\[dask\]'") as info:
            call()
        assert isinstance(info.value, ImportError)


# --------------------------------------------------------------------------- TIFF samples

_COLOURS = (np.arange(3 * 256).reshape(3, 256) * 85 % 65536).astype(np.uint16)
_GREY = np.arange(24 * 20).reshape(24, 20) % 200  # 0..199


@pytest.mark.parametrize(
    ("kind", "stored", "options", "expected"),
    [
        ("int16", _GREY.astype(np.int16), {}, _GREY.astype(np.uint16)),
        ("uint32", _GREY.astype(np.uint32) * 300, {}, (_GREY * 300).astype(np.uint16)),
        ("int8", (_GREY // 2).astype(np.int8), {}, (_GREY // 2).astype(np.uint8)),
        ("float16", (_GREY / 7).astype(np.float16), {}, (_GREY / 7).astype(np.float16)),
        ("float64", _GREY / 7, {}, (_GREY / 7).astype(np.float32)),
        (
            "miniswhite",
            _GREY.astype(np.uint8),
            {"photometric": "miniswhite"},
            255 - _GREY.astype(np.uint8),
        ),
        ("bilevel miniswhite", _GREY % 3 == 0, {"photometric": "miniswhite"}, (_GREY % 3 != 0)),
        ("palette", _GREY.astype(np.uint8), {"photometric": "palette", "colormap": _COLOURS}, None),
    ],
)
def test_tiff_samples_are_those_of_the_whole_image_reader(
    tmp_path: Path, kind: str, stored: np.ndarray, options: dict, expected: np.ndarray | None
) -> None:
    """Tiles read the samples read_image gives for the whole file (values written out by hand
    here), in strips and in tiles, so the tiled magnitude equals the whole-image one."""
    if expected is None:  # a palette: Pillow's colour table, each 16-bit entry // 256
        expected = (_COLOURS // 256).astype(np.uint8)[:, _GREY]
    elif expected.dtype == np.bool_:
        expected = expected.astype(np.uint8) * 255
    want = expected if expected.ndim == 3 else expected[None]
    want = want.astype(np.float32) if want.dtype.kind == "f" else want
    for layout in ({}, {"tile": (16, 16)}):
        path = tmp_path / f"{kind}{len(layout)}.tif"
        tifffile.imwrite(path, stored, **options, **layout)
        whole = image_io.read_image(path)
        source = open_source(path)
        window = source.read((0, 24), (0, 20))
        assert whole.dtype == window.dtype == want.dtype, (kind, whole.dtype, window.dtype)
        np.testing.assert_array_equal(whole, want)
        np.testing.assert_array_equal(window, want)
        tiled = process_huge(path, tile=(7, 9))
        magnitude = imgrad.gradient_magnitude(whole)
        np.testing.assert_array_equal(tiled, magnitude if tiled.ndim == 3 else magnitude[0])


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (np.full((20, 20), -3, np.int16), r"integer samples outside 0\.\.65535 \(range -3\.\.-3\)"),
        (np.full((20, 20), 70000, np.int32), r"outside 0\.\.65535 \(range 70000\.\.70000\)"),
        (np.full((20, 20), -1, np.int8), r"outside 0\.\.255 \(range -1\.\.-1\)"),
    ],
)
def test_integer_samples_that_do_not_fit_are_refused_alike(
    tmp_path: Path, stored: np.ndarray, message: str
) -> None:
    """Out-of-range integers: the same error, naming the file, whole or by tiles (Pillow alone
    would wrap the signed 8-bit -1 to 255)."""
    path = tmp_path / "ints.tif"
    tifffile.imwrite(path, stored)
    with pytest.raises(image_io.ImageReadError, match=message) as whole:
        image_io.read_image(path)
    with pytest.raises(image_io.ImageReadError, match=message) as tiles:
        process_huge(path, tile=8)
    assert str(path) in str(whole.value) and str(path) in str(tiles.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("photometric", ["minisblack", "rgb", "miniswhite"])
@pytest.mark.parametrize("extra", [0, 1, 2])  # unspecified, associated, unassociated alpha
@pytest.mark.parametrize("planar", [False, True])
def test_tiff_alpha_by_tiles_as_whole(tmp_path: Path, dtype, photometric, extra, planar) -> None:
    """Alpha composited (or dropped) in each window exactly as read_image does it for the
    whole file, in strips and in tiles: the same samples, so the same tiled magnitude."""
    rng = np.random.default_rng(extra)
    samples = 4 if photometric == "rgb" else 2
    if dtype == np.float32:
        pixels = rng.random((samples, 37, 41)).astype(dtype)
    else:
        pixels = rng.integers(0, np.iinfo(dtype).max + 1, (samples, 37, 41)).astype(dtype)
    data = pixels if planar else np.moveaxis(pixels, 0, -1)
    layout = {"planarconfig": "separate"} if planar else {"planarconfig": "contig"}
    for storage in ({}, {"tile": (16, 16)}):
        path = tmp_path / f"a{len(storage)}.tif"
        tifffile.imwrite(path, data, photometric=photometric, extrasamples=[extra], **layout,
                         **storage)  # fmt: skip
        for alpha in ("composite", "drop"):
            whole = image_io.read_image(path, alpha=alpha)
            window = open_source(path, alpha).read((0, 37), (0, 41))
            assert window.dtype == whole.dtype and window.shape == whole.shape == (
                samples - 1,
                37,
                41,
            )
            np.testing.assert_array_equal(window, whole)
            tiled = process_huge(path, tile=(16, 16), alpha=alpha)
            magnitude = imgrad.gradient_magnitude(whole)
            np.testing.assert_array_equal(tiled, magnitude if tiled.ndim == 3 else magnitude[0])


@pytest.mark.parametrize(
    ("compression", "options"),
    [
        ("lzw", {"photometric": "rgb"}),
        pytest.param(
            "zstd",
            {"photometric": "rgb"},
            marks=pytest.mark.skipif(
                PIL_MAJOR < 12, reason="Pillow's wheels decode ZSTD TIFFs from 12.0 on"
            ),
        ),
        ("zlib", {"photometric": "rgb"}),
        ("jpeg", {"photometric": "ycbcr"}),  # chroma subsampled 2 x 2, decoded to RGB
        ("jpeg", {"photometric": "minisblack"}),
    ],
)
def test_compressed_tiffs_by_tiles_as_whole(tmp_path: Path, compression: str, options) -> None:
    """Compressed tiles decoded by tifffile (imagecodecs) give the samples Pillow's decode of
    the whole file gives, JPEG's YCbCr included, so the same magnitude."""
    pytest.importorskip("imagecodecs")
    rgb = np.moveaxis(_image((3, 70, 90), seed=8).numpy(), 0, -1)
    stored = rgb[..., 0] if options["photometric"] == "minisblack" else rgb
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, stored, compression=compression, tile=(32, 32), **options)
    whole = image_io.read_image(path)
    np.testing.assert_array_equal(open_source(path).read((0, 70), (0, 90)), whole)
    tiled = process_huge(path, tile=(32, 32))
    magnitude = imgrad.gradient_magnitude(whole)
    np.testing.assert_array_equal(tiled, magnitude if tiled.ndim == 3 else magnitude[0])


def test_a_missing_codec_names_the_package(tmp_path: Path, monkeypatch) -> None:
    """Without imagecodecs an LZW TIFF cannot be read by tiles: said before any tile runs."""
    from imgrad.tiled import MissingExtraError

    tifffile.imwrite(tmp_path / "l.tif", np.zeros((40, 40), np.uint8), compression="zlib")
    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", {})  # as tifffile without imagecodecs
    with pytest.raises(MissingExtraError, match=r"l\.tif' tile by tile: its ADOBE_DEFLATE") as e:
        process_huge(tmp_path / "l.tif", tile=16)
    assert "optional package 'imagecodecs': pip install 'imgrad[dask]'" in str(e.value)


def test_an_unknown_compression_is_named(tmp_path: Path) -> None:
    """A compression code tifffile does not know: one line naming the file and the code."""
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8))
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 2] = (34999).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(image_io.ImageReadError, match=r"u\.tif' tile by tile: its compression "):
        process_huge(path, tile=16)


def test_other_colour_spaces_and_corrupt_files_are_refused_with_the_name(tmp_path: Path) -> None:
    cmyk = tmp_path / "cmyk.tif"
    tifffile.imwrite(cmyk, np.zeros((20, 20, 4), np.uint8), photometric="separated")
    with pytest.raises(ValueError, match=r"cmyk\.tif' tile by tile: its colour space \(SEPARATED"):
        open_source(cmyk)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\xff" * 100)
    with pytest.raises(image_io.ImageReadError, match=r"corrupt\.tif': corrupt or unsupported"):
        process_huge(corrupt, tile=16)


def test_uncompressed_tiffs_are_memory_mapped(tmp_path: Path) -> None:
    """A single-strip file is one Zarr chunk, decoded whole for every tile: uncompressed ones
    are mapped instead (a window reads its own bytes), big-endian ones too. Compressed files
    are not mappable and go through the store; all give the whole-image result."""
    from imgrad import tiled

    image = _image((130, 150), torch.float32, seed=4).numpy()
    expected = imgrad.gradient_magnitude(image)
    for name, options, mapped in [
        ("strip", {}, True),
        ("strips", {"rowsperstrip": 16}, True),
        ("deflated", {"compression": "zlib"}, False),
        ("big-endian", {"byteorder": ">"}, True),
    ]:
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, image, **options)
        assert isinstance(tiled._tiff_array(str(path)), np.memmap) == mapped, name
        np.testing.assert_array_equal(process_huge(path, tile=(40, 64))[0], expected[0])


def test_open_tiff_files_per_process_are_bounded(tmp_path: Path) -> None:
    """A long-lived worker that reads many TIFFs keeps at most a few of them open."""
    from imgrad import tiled

    paths = []
    for i in range(tiled._TIFF_OPEN + 4):
        paths.append(tmp_path / f"{i}.tif")
        tifffile.imwrite(paths[-1], np.full((20, 20), i, np.uint8), compression="zlib")
    for i, path in enumerate(paths):
        assert open_source(path).read((0, 1), (0, 1)).item() == i
    assert len([k for k in tiled._TIFF_STORES if Path(k[0]).parent == tmp_path]) == 8
    if Path("/proc/self/fd").is_dir():
        import gc

        gc.collect()
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
            except OSError:  # the descriptor listdir itself used
                pass
        assert len([t for t in targets if t.parent == tmp_path]) == tiled._TIFF_OPEN


# --------------------------------------------------------------------------- destinations


def test_outputs_never_land_on_into_or_around_the_input(tmp_path: Path) -> None:
    """Every refusal comes before any tile is computed, and the input is left as it was."""
    folder = tmp_path / "res.zarr"  # a folder that happens to end in .zarr, holding the input
    folder.mkdir()
    tifffile.imwrite(folder / "in.tif", _image((40, 40)).numpy())
    (folder / "notes.txt").write_text("keep me")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    array = tmp_path / "in.zarr"
    zarr.create_array(str(array), data=_image((40, 40)).numpy(), chunks=(16, 16))
    inside = [(folder / "in.tif", folder), (folder / "in.tif", folder / "in.tif")]
    for src, dst in [*inside, (array, array / "out.zarr")]:
        with pytest.raises(ValueError, match="holds or lies in the input"):
            process_huge(src, dst, tile=16)
    with pytest.raises(ValueError, match=r"refusing to replace .*res\.zarr': it is not a Zarr"):
        process_huge(array, folder, tile=16)
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(ValueError, match=r"dir\.tif': it is a folder"):
        process_huge(array, tmp_path / "dir.tif", tile=16)
    with pytest.raises(FileNotFoundError, match="no folder .*nodir' to write into"):
        process_huge(array, tmp_path / "nodir" / "out.zarr", tile=16)
    assert not (tmp_path / "nodir").exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.tif", "in.zarr", "res.zarr"]


def test_a_zarr_array_output_is_replaced_whole(tmp_path: Path) -> None:
    dst = tmp_path / "out.zarr"
    process_huge(np.zeros((30, 30), np.uint8), dst, tile=16)
    image = _image((20, 24), torch.float32).numpy()
    process_huge(image, dst, tile=16)
    np.testing.assert_array_equal(zarr.open_array(str(dst))[:], imgrad.gradient_magnitude(image))
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]


# --------------------------------------------------------------------------- odd values


def test_relative_threshold_of_a_nan_magnitude_is_empty_as_on_the_whole_image() -> None:
    x = _image((30, 30), torch.float32)
    x[10, 10] = float("nan")
    whole = threshold_relative(imgrad.gradient_magnitude(x), 0.5)
    assert not whole.any()
    assert torch.equal(process_huge(x, stage="threshold", ratio=0.5, tile=8), whole)
    for bad in ({"threshold": float("nan")}, {"ratio": float("nan")}):
        with pytest.raises(ValueError, match="must not be NaN"):
            process_huge(x, stage="threshold", tile=8, **bad)


def test_big_endian_arrays_are_read_like_native_ones() -> None:
    image = _image((25, 27), torch.float32, seed=5).numpy()
    got = process_huge(image.astype(">f4"), tile=(8, 10))
    np.testing.assert_array_equal(got, imgrad.gradient_magnitude(image))


def test_float64_orientation_by_tiles_is_within_one_ulp() -> None:
    """torch's vector and scalar float64 atan2 differ by up to an ulp, so a pixel's angle can
    depend on where it falls; float32 angles (rounded from float64) do not (above)."""
    x = torch.rand((300, 301), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = imgrad.orientation(imgrad.sobel(x)).numpy()
    tiled = process_huge(x, stage="orientation", tile=(37, 41)).numpy()
    assert np.all(np.abs(tiled - whole) <= np.spacing(np.maximum(np.abs(whole), np.abs(tiled))))
