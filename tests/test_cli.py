"""Tests of the ``imgrad`` command line: CliRunner for every command and option, and real runs of
the installed console script (one per major feature)."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from imgrad_cli import options
from imgrad_cli.main import cli
from imgrad_cli.progress import ProgressPrinter, duration
from PIL import Image

import imgrad
from imgrad import batch, spatial_gradient, tiled
from imgrad import distributed as imgrad_distributed
from imgrad import io as imgrad_io
from imgrad.canny import COLORS, THRESHOLD_MODES, canny
from imgrad.thresholds import hysteresis_threshold

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
COMMANDS = ("sobel", "scharr", "prewitt", "central", "gradient", "laplacian", "canny")
SHARED = {
    "--color",
    "--format",
    "--bits",
    "--alpha",
    "--max-pixels",
    "--device",
    "--glob",
    "--recursive",
    "--overwrite",
    "--jobs",
    "--batch-size",
    "--quiet",
    "--json",
    "--scheduler-address",
}


def run(args: list[str], code: int = 0, stdin: bytes | None = None) -> Result:
    """Invoke the CLI; check the exit code and that no traceback escaped."""
    result = CliRunner().invoke(cli, [str(a) for a in args], input=stdin, prog_name="imgrad")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def rgb_image(height: int = 24, width: int = 20, seed: int = 0) -> np.ndarray:
    """(3, H, W) uint8: a bright square on a noisy background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (3, height, width), dtype=np.uint8)
    image[:, 6:16, 5:14] += 180
    return image


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    imgrad_io.write_image(path, array)
    return path


def read(path: Path) -> np.ndarray:
    """The image as a writable array (torch warns about read-only ones)."""
    return imgrad_io.read_image(path).copy()


def read_sobel(path: Path) -> np.ndarray:
    """What ``imgrad sobel`` writes for ``path``, computed by the library."""
    return batch.Recipe().apply(read(path)[None])[0]


@pytest.fixture
def rgb(tmp_path: Path) -> Path:
    return save(tmp_path / "rgb.png", rgb_image())


@pytest.fixture
def grey(tmp_path: Path) -> Path:
    return save(tmp_path / "grey.png", rgb_image()[:1])


def make_tree(root: Path) -> None:
    """Four good images (two sizes, a subdirectory) and two bad ones."""
    save(root / "a.png", rgb_image(seed=1))
    save(root / "b.png", rgb_image(seed=2)[:1])
    save(root / "sub" / "c.png", rgb_image(16, 16, seed=3))
    save(root / "sub" / "d.jpg", rgb_image(seed=4))
    (root / "sub" / "text.png").write_text("not an image")
    (root / "zero.png").write_bytes(b"")


# --------------------------------------------------------------------------- help, version


def test_help_lists_commands_examples_and_exit_codes() -> None:
    out = run(["--help"]).output
    for name in COMMANDS:
        assert name in out
    assert "Examples:" in out and "Exit codes" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_and_option_is_documented(name: str) -> None:
    command = cli.commands[name]
    assert "Examples:" in (command.epilog or "")
    flags = set()
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help"
            flags.update(param.opts)
    assert SHARED <= flags, SHARED - flags
    assert "Examples:" in run([name, "--help"]).output


def test_choices_match_the_library() -> None:
    """The CLI repeats names so that --help needs no torch; they must agree with the library."""
    assert options.BORDERS == tuple(imgrad.BORDERS)
    assert options.RESULTS == batch.GRADIENT_RESULTS
    assert options.MAPPINGS == batch.MAPPINGS
    assert options.FORMATS == batch.FORMAT_EXTENSIONS
    assert set(options.OUTPUT_EXTENSIONS) == imgrad_io.SUPPORTED_OUTPUT_EXTENSIONS
    assert options.DEFAULT_MAX_PIXELS == imgrad_io.DEFAULT_MAX_PIXELS
    assert options.ZARR_EXTENSION == tiled.ZARR_SUFFIX
    assert options.DEFAULT_TILE == tiled.DEFAULT_TILE
    params = {p.name: p for p in cli.commands["canny"].params}
    assert tuple(params["thresholds"].type.choices) == THRESHOLD_MODES
    assert set(params["color"].type.choices) == set(COLORS)


def test_version() -> None:
    assert run(["--version"]).output.strip() == f"imgrad {imgrad.__version__}"


# --------------------------------------------------------------------------- single files


def test_sobel_file_equals_the_library(rgb: Path, tmp_path: Path) -> None:
    run(["sobel", rgb, tmp_path / "out.png"])
    expected = batch.Recipe().apply(read(rgb)[None])[0]
    assert np.array_equal(read(tmp_path / "out.png"), expected)
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L" and im.size == (20, 24)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_runs(name: str, rgb: Path, tmp_path: Path) -> None:
    run([name, rgb, tmp_path / "out.png"])
    out = read(tmp_path / "out.png")
    assert out.shape == (1, 24, 20) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "result, channels",
    [("magnitude", 1), ("gx", 1), ("gy", 1), ("orientation", 1), ("picture", 3), ("mask", 1)],
)
def test_every_result(result: str, channels: int, rgb: Path, tmp_path: Path) -> None:
    run(["scharr", rgb, tmp_path / "out.png", "--result", result])
    out = read(tmp_path / "out.png")
    assert out.shape == (channels, 24, 20)
    if result == "mask":
        assert set(np.unique(out)) == {0, 255}


@pytest.mark.parametrize(
    "args, method",
    [
        (["--threshold", "300"], {"method": "value", "value": 300.0}),
        (["--threshold-relative", "0.5"], {"method": "relative", "value": 0.5}),
        (["--otsu"], {"method": "otsu"}),
        (["--hysteresis", "100", "400"], {"method": "hysteresis", "low": 100.0, "high": 400.0}),
    ],
)
def test_threshold_options_make_masks(args: list, method: dict, grey: Path, tmp_path: Path):
    run(["sobel", grey, tmp_path / "mask.png", *args])
    recipe = batch.Recipe(result="mask", threshold=batch.Threshold(**method))
    assert np.array_equal(read(tmp_path / "mask.png"), recipe.apply(read(grey)[None])[0])


def test_hysteresis_mask_is_in_magnitude_units(grey: Path, tmp_path: Path) -> None:
    run(["sobel", grey, tmp_path / "mask.png", "--hysteresis", "100", "400"])
    m = imgrad.magnitude(spatial_gradient(torch.from_numpy(read(grey)).float()))
    expected = hysteresis_threshold(m, 100, 400).numpy().astype(np.uint8) * 255
    assert np.array_equal(read(tmp_path / "mask.png"), expected)


def test_mapping_and_scale(grey: Path, tmp_path: Path) -> None:
    run(["sobel", grey, tmp_path / "raw.npy"])  # .npy defaults to raw float32
    raw = np.load(tmp_path / "raw.npy")
    assert raw.dtype == np.float32 and raw.shape == (1, 24, 20)
    run(["sobel", grey, tmp_path / "raw.tif", "--mapping", "raw"])
    assert np.array_equal(read(tmp_path / "raw.tif"), raw)
    run(["sobel", grey, tmp_path / "one.png", "--scale", "0.25"])
    assert np.array_equal(read(tmp_path / "one.png"), np.clip(np.rint(raw * 0.25), 0, 255))
    run(["sobel", grey, tmp_path / "stretch.png", "--mapping", "stretch"])
    assert read(tmp_path / "stretch.png").max() == 255
    run(["sobel", grey, tmp_path / "fixed.png"])
    full = math.sqrt(20) * 255
    assert np.array_equal(read(tmp_path / "fixed.png"), np.rint(raw * 255 / full))
    run(["sobel", grey, tmp_path / "mag.npy", "--mapping", "fixed"])
    assert np.load(tmp_path / "mag.npy").dtype == np.uint8


def test_operator_options_reach_the_library(grey: Path, tmp_path: Path) -> None:
    args = ["--result", "gx", "--ksize", "5", "--border", "replicate", "--normalized"]
    run(["sobel", grey, tmp_path / "gx.npy", *args])
    expected = spatial_gradient(read(grey), ksize=5, border="replicate", normalized=True).gx
    assert np.array_equal(np.load(tmp_path / "gx.npy"), expected)


def test_color_options(rgb: Path, tmp_path: Path) -> None:
    run(["sobel", rgb, tmp_path / "channels.png", "--color", "channels"])
    assert read(tmp_path / "channels.png").shape == (3, 24, 20)
    run(["sobel", rgb, tmp_path / "max.npy", "--color", "max"])
    expected = imgrad.magnitude(spatial_gradient(read(rgb), color="max"))
    assert np.array_equal(np.load(tmp_path / "max.npy"), expected)


def test_bits_and_format(grey: Path, tmp_path: Path) -> None:
    run(["sobel", grey, tmp_path / "out16.png", "--bits", "16"])
    assert read(tmp_path / "out16.png").dtype == np.uint16
    run(["sobel", grey, tmp_path / "out.tif", "--format", "tiff"])
    assert read(tmp_path / "out.tif").dtype == np.uint8
    result = run(["sobel", grey, tmp_path / "out.png", "--format", "tiff"], code=2)
    assert "contradicts" in result.output


def test_laplacian_equals_opencv(grey: Path, tmp_path: Path) -> None:
    run(["laplacian", grey, tmp_path / "lap.npy", "--ksize", "3"])
    expected = cv2.Laplacian(read(grey)[0], cv2.CV_32F, ksize=3)
    assert np.array_equal(np.load(tmp_path / "lap.npy")[0], expected)
    run(["laplacian", grey, tmp_path / "lap1.npy"])  # the default: the 5-point stencil
    expected = cv2.Laplacian(read(grey)[0], cv2.CV_32F, ksize=1)
    assert np.array_equal(np.load(tmp_path / "lap1.npy")[0], expected)
    run(["laplacian", grey, tmp_path / "lap.png"])
    assert read(tmp_path / "lap.png")[0, 0, 0] in range(120, 137)  # near mid-grey


def test_canny_equals_opencv(tmp_path: Path) -> None:
    source = SAMPLES / "coins.png"
    image = read(source)[0]
    run(["canny", source, tmp_path / "edges.png", "--low", "100", "--high", "200"])
    assert np.array_equal(read(tmp_path / "edges.png")[0], cv2.Canny(image, 100, 200))
    run(["canny", source, tmp_path / "e5.png", "--low", "300", "--high", "900", "--ksize", "5"])
    expected = cv2.Canny(image, 300, 900, apertureSize=5, L2gradient=False)
    assert np.array_equal(read(tmp_path / "e5.png")[0], expected)
    run(["canny", source, tmp_path / "l2.png", "--low", "100", "--high", "200", "--l2"])
    assert np.array_equal(read(tmp_path / "l2.png")[0], cv2.Canny(image, 100, 200, L2gradient=True))


def test_canny_options(rgb: Path, tmp_path: Path) -> None:
    run(["canny", rgb, tmp_path / "auto.png"])  # automatic thresholds
    expected = canny(torch.from_numpy(read(rgb))).numpy().astype(np.uint8) * 255
    assert np.array_equal(read(tmp_path / "auto.png"), expected)
    run(["canny", rgb, tmp_path / "s.png", "--sigma", "1.4", "--color", "luminance"])
    rel = ["--thresholds", "relative", "--low", "0.1", "--high", "0.3"]
    run(["canny", rgb, tmp_path / "r.png", *rel])
    assert set(np.unique(read(tmp_path / "r.png"))) == {0, 255}
    run(["canny", rgb, tmp_path / "r16.png", "--bits", "16"])
    assert set(np.unique(read(tmp_path / "r16.png"))) == {0, 65535}
    assert "give both low and high" in run(["canny", rgb, "x.png", "--low", "9"], code=2).output
    run(["canny", rgb, "x.png", "--sigma", "0"], code=2)
    result = run(["canny", rgb, "x.png", *rel[:2], "--low", "3", "--high", "5"], code=2)
    assert "fractions" in result.output


def test_sixteen_bit_round_trip(tmp_path: Path) -> None:
    """16-bit in -> 16-bit out by default, every bit kept (a ramp of step 100)."""
    ramp = np.tile(np.arange(12, dtype=np.uint16) * 100 + 20000, (1, 5, 1))
    source = save(tmp_path / "ramp16.png", ramp)
    run(["sobel", source, tmp_path / "gx.png", "--result", "gx", "--scale", "1"])
    gx = read(tmp_path / "gx.png")
    assert gx.dtype == np.uint16
    assert (gx[0, :, 1:-1] == 32768 + 800).all() and (gx[0, :, [0, -1]] == 32768).all()
    run(["sobel", source, tmp_path / "mag.png"])  # default: fixed scale, 16 bits
    mag = read(tmp_path / "mag.png")
    assert mag.dtype == np.uint16
    assert (mag[0, :, 1:-1] == round(800 * 65535 / (math.sqrt(20) * 65535))).all()
    run(["sobel", source, tmp_path / "mag8.png", "--bits", "8"])
    assert read(tmp_path / "mag8.png").dtype == np.uint8


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = rgb_image(8, 14)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    run(["sobel", tmp_path / "rotated.png", tmp_path / "out.png"])
    upright = np.ascontiguousarray(np.rot90(stored, k=-1))[None]
    assert np.array_equal(read(tmp_path / "out.png"), batch.Recipe().apply(upright[None])[0])


def test_alpha_options(tmp_path: Path) -> None:
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[:, 6:, :3] = 255  # white on the right, but transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    run(["sobel", tmp_path / "rgba.png", tmp_path / "c.png"])
    assert read(tmp_path / "c.png").max() == 0  # hidden colour makes no edges
    run(["sobel", tmp_path / "rgba.png", tmp_path / "d.png", "--alpha", "drop"])
    assert read(tmp_path / "d.png").max() > 0


def test_stdin_and_stdout(rgb: Path, tmp_path: Path) -> None:
    run(["sobel", rgb, tmp_path / "file.png"])
    result = run(["sobel", "-", "-"], stdin=rgb.read_bytes())
    assert result.stdout_bytes == (tmp_path / "file.png").read_bytes()
    result = run(["sobel", rgb, "-", "--format", "npy", "--result", "gx"])
    assert np.load(io.BytesIO(result.stdout_bytes)).dtype == np.float32
    run(["sobel", "-", tmp_path / "from_stdin.png"], stdin=rgb.read_bytes())
    assert np.array_equal(read(tmp_path / "from_stdin.png"), read(tmp_path / "file.png"))


def test_output_directory_for_a_file(rgb: Path, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    run(["sobel", rgb, tmp_path / "dir"])
    assert (tmp_path / "dir" / "rgb.png").exists()
    assert "stdin has no name" in run(["sobel", "-", tmp_path / "dir"], code=2, stdin=b"").output


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, message",
    [
        (["sobel", "missing.png", "out.png"], "does not exist"),
        (["sobel", "{rgb}", "out.gif"], "unsupported extension '.gif'"),
        (["sobel", "{rgb}", "out"], "unsupported extension '(none)'"),
        (["sobel", "{rgb}", "out.png", "--border", "mirror"], "'mirror' is not one of"),
        (["sobel", "{rgb}", "out.png", "--ksize", "4"], "'4' is not one of"),
        (["scharr", "{rgb}", "out.png", "--ksize", "5"], "No such option"),  # click 8.2: ':'
        (["sobel", "{rgb}", "out.png", "--bits", "12"], "'12' is not one of"),
        (["sobel", "{rgb}", "out.png", "--scale", "-1"], "must be positive"),
        (
            ["sobel", "{rgb}", "out.png", "--threshold-relative", "2"],
            "2 is not in the range 0 to 1",
        ),
        (["sobel", "{rgb}", "out.png", "--threshold", "nan"], "'nan' is not a finite number"),
        (["sobel", "{rgb}", "out.png", "--hysteresis", "5", "nan"], "--hysteresis"),
        (["sobel", "{rgb}", "out.png", "--scale", "inf"], "'inf' is not a finite number"),
        (["sobel", "{rgb}", "out.png", "--threshold", "abc"], "'abc' is not a number"),
        (["canny", "{rgb}", "out.png", "--sigma", "nan"], "'nan' is not a finite number"),
        (["sobel", "{rgb}", "out.png", "--otsu", "--threshold", "3"], "choose one threshold"),
        (["sobel", "{rgb}", "out.png", "--result", "gx", "--otsu"], "makes a mask"),
        (["sobel", "{rgb}", "out.png", "--mapping", "raw"], "needs .tif, .npy or .zarr"),
        (
            ["sobel", "{rgb}", "out.png", "--result", "picture", "--color", "channels"],
            "one channel",
        ),
        (["laplacian", "{rgb}", "out.png", "--color", "max"], "'max' is not one of"),
        (["sobel", "{rgb}", "out.png", "--glob", "*.png"], "directory INPUT only"),
        (["sobel", "{rgb}", "out.png", "--json"], "directory INPUT only"),
        (["sobel", "{rgb}", "{rgb}"], "onto the input"),
        (["sobel", "{tree}", "edges.png"], "INPUT '{tree}' is a directory, so OUTPUT must be one"),
        (["sobel", "{tree}", "-"], "INPUT '{tree}' is a directory, so OUTPUT must be a directory"),
        (["sobel", "{tree}", "{tree}/edges"], "inside the input directory"),
        (["sobel", "{tree}", "{rgb}"], "is not a directory"),
        (
            ["sobel", "{tree}", "out", "--format", "png", "--mapping", "raw"],
            "needs .tif, .npy or .zarr",
        ),
        (["sobel", "{tree}", "out", "--jobs", "0"], "x>=1"),
        (["sobel", "{rgb}", "out.png", "--max-pixels", "-1"], "x>=0"),
        (["sobel"], "Missing argument 'INPUT'"),
        (["roberts", "a", "b"], "No such command"),
    ],
)
def test_usage_errors_exit_2(
    args: list, message: str, rgb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tree").mkdir()
    filled = [a.format(rgb=rgb, tree=tmp_path / "tree") for a in args]
    monkeypatch.chdir(tmp_path)
    result = run(filled, code=2)
    # click folds long messages over lines: compare with single spaces
    assert message.format(tree=tmp_path / "tree") in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_usage_error(rgb: Path, tmp_path: Path) -> None:
    result = run(["sobel", rgb, tmp_path / "o.png", "--device", "cuda"], code=2)
    assert "CUDA is not available" in result.output


def test_data_errors_exit_1_with_one_line(rgb: Path, tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("hello")
    data = rgb.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    cases = {
        "text.png": "not an image",
        "truncated.png": "truncated",
        "zero.png": "not an image",
    }
    for name, reason in cases.items():
        result = run(["sobel", tmp_path / name, tmp_path / "out.png"], code=1)
        assert result.stderr.count("\n") == 1 and name in result.stderr and reason in result.stderr
    result = run(["sobel", rgb, tmp_path / "out.png", "--max-pixels", "100"], code=1)
    assert "480 pixels is more than the limit of 100" in result.stderr
    assert "--max-pixels" in result.stderr
    run(["sobel", rgb, tmp_path / "big.png", "--max-pixels", "0"])  # 0 lifts the limit
    result = run(["sobel", rgb, tmp_path / "rgb.png" / "out.png"], code=1)  # parent is a file
    assert "cannot write" in result.stderr and "Not a directory" in result.stderr
    result = run(["sobel", rgb, tmp_path / "no" / "such" / "dir.png"], code=1)
    assert "No such file or directory" in result.stderr
    assert not list(tmp_path.glob("*.imgrad-tmp"))


def test_processing_errors_name_the_file(rgb: Path, tmp_path: Path) -> None:
    """Data the library refuses: one line naming INPUT, exit 1, no traceback."""
    tiny = save(tmp_path / "tiny.png", np.zeros((1, 1, 1), np.uint8))
    run(["sobel", tiny, tmp_path / "o.png"])  # smaller than the stencil works, as in OpenCV
    result = run(["canny", rgb, tmp_path / "o.png", "--sigma", "1e6"], code=1)
    assert (
        f"cannot process '{rgb}': sigma=1e+06 needs a Gaussian of radius 3000000" in result.stderr
    )
    assert "use sigma <= 8" in result.stderr  # 24 x 20 pixels
    inf = np.zeros((1, 8, 8), np.float32)
    inf[0, 3, 3] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", inf[0])
    result = run(["sobel", tmp_path / "inf.tif", tmp_path / "o.png", "--otsu"], code=1)
    assert "inf.tif': x contains infinite values" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("signum", [None, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_single_file_interrupt_exits_130_and_writes_nothing(
    signum, rgb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or SIGTERM, turned into the same) while a file is processed: 130, no output and no
    temporary file (the atomic write removes it)."""

    def interrupted(src, dest, *args, **kwargs):
        with imgrad_io.atomic_file(dest) as stream:
            stream.write(b"half an image")
            if signum is None:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(batch, "process_file", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    result = run(["sobel", rgb, tmp_path / "o.png"], code=130)
    assert f"interrupted; '{tmp_path / 'o.png'}' was not written" in result.stderr
    assert os.listdir(tmp_path) == ["rgb.png"]
    assert signal.getsignal(signal.SIGTERM) is before  # restored


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_while_torch_is_imported_exits_130(
    signum, rgb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM in the second the library takes to import: 130 and a message, not a
    death by the signal (SIGTERM's default) or click's "Aborted!"."""
    from imgrad_cli import main as cli_main

    real = cli_main._import_library

    def import_library():
        os.kill(os.getpid(), signum)
        return real()

    def unhandled(signum, frame):  # stands for the default action, which would end pytest too
        raise RuntimeError("SIGTERM was not handled by the command")

    monkeypatch.setattr(cli_main, "_import_library", import_library)
    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        result = run(["sobel", rgb, tmp_path / "o.png"], code=130)
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored
    finally:
        signal.signal(signal.SIGTERM, before)
    assert result.stderr == "imgrad: interrupted before any file was read\n"
    assert os.listdir(tmp_path) == ["rgb.png"]


def test_a_file_named_dash_is_a_file(rgb: Path, tmp_path: Path, monkeypatch) -> None:
    """Only a bare - means stdin/stdout; ./- is the file of that name."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(rgb, tmp_path / "-")
    run(["sobel", "./-", "o.png"])
    assert np.array_equal(read(tmp_path / "o.png"), read_sobel(rgb))
    result = run(["sobel", rgb, "./-"], code=2)
    assert "unsupported extension '(none)'" in result.output


def test_tiff_to_a_pipe(rgb: Path) -> None:
    """TIFF writers seek; standard output may be a pipe, which cannot."""
    done = subprocess.run(
        f"'{shutil.which('imgrad')}' sobel '{rgb}' - --format tiff | cat",
        shell=True,
        capture_output=True,
        check=True,
    )
    tiff = tifffile.imread(io.BytesIO(done.stdout))
    assert np.array_equal(tiff, read_sobel(rgb)[0])


# --------------------------------------------------------------------------- directories


def test_directory_run_with_bad_files(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    result = run(["sobel", tmp_path / "in", tmp_path / "out"], code=1)
    assert result.stdout == ""
    err = result.stderr
    assert err.count("Error: cannot read") == 2 and "text.png" in err and "zero.png" in err
    assert "6/6 [" in err and "files/s" in err  # the final progress line
    assert "4 processed, 0 skipped (up to date), 2 failed" in err
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")
    )
    assert written == [".imgrad-options.json", "a.png", "b.png", "sub/c.png", "sub/d.png"]
    again = run(["sobel", tmp_path / "in", tmp_path / "out", "--quiet"], code=1)
    assert "processed" not in again.stderr and "Error:" in again.stderr  # errors still shown


def test_directory_output_folder_blocked_by_a_file(tmp_path: Path) -> None:
    """A file where an output sub-folder goes: those files fail with a message that says so."""
    make_tree(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("not a folder")
    result = run(["sobel", tmp_path / "in", tmp_path / "out", "--quiet"], code=1)
    blocked = f"a file stands where the folder '{tmp_path / 'out' / 'sub'}' should be"
    assert result.stderr.count(blocked) == 2  # sub/c.png and sub/d.png
    assert (tmp_path / "out" / "a.png").exists()


def test_directory_json_summary_and_resume(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    args = ["canny", tmp_path / "in", tmp_path / "out", "--json", "--quiet"]
    first = json.loads(run(args, code=1).stdout)
    assert (first["processed"], first["skipped"], first["failed"]) == (4, 0, 2)
    assert {Path(f["path"]).name for f in first["failures"]} == {"text.png", "zero.png"}
    assert all("cannot read" in f["reason"] for f in first["failures"])
    assert first["interrupted"] is False and first["seconds"] >= 0
    second = json.loads(run(args, code=1).stdout)
    assert (second["processed"], second["skipped"]) == (0, 4)
    source = tmp_path / "in" / "a.png"
    later = source.stat().st_mtime + 60
    os.utime(source, (later, later))
    third = json.loads(run(args, code=1).stdout)
    assert (third["processed"], third["skipped"]) == (1, 3)
    forced = json.loads(run([*args, "--overwrite"], code=1).stdout)
    assert (forced["processed"], forced["skipped"]) == (4, 0)


def test_directory_resume_notices_changed_options(tmp_path: Path) -> None:
    """Same options: all skipped; other options: all recomputed, and the summary says why."""
    make_tree(tmp_path / "in")
    args = ["sobel", tmp_path / "in", tmp_path / "out", "--glob", "[ab].png"]
    run(args)
    same = run(args)
    assert "0 processed, 2 skipped (up to date)" in same.stderr
    assert "options differ" not in same.stderr
    other = run([*args, "--scale", "1"])
    assert "2 processed, 0 skipped (up to date)" in other.stderr
    assert "the options differ from the last run into this directory" in other.stderr


def test_directory_filters_and_formats(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    run(["sobel", tmp_path / "in", tmp_path / "jpg", "--glob", "*.JPG", "-q"])
    assert [p.name for p in (tmp_path / "jpg").rglob("*.png")] == ["d.png"]
    run(["sobel", tmp_path / "in", tmp_path / "flat", "--no-recursive", "--glob", "[ab].png"])
    flat = sorted(p.name for p in (tmp_path / "flat").rglob("*"))
    assert flat == [".imgrad-options.json", "a.png", "b.png"]
    run(["sobel", tmp_path / "in", tmp_path / "raw", "--mapping", "raw", "--glob", "a.png"])
    assert read(tmp_path / "raw" / "a.tif").dtype == np.float32  # raw defaults to TIFF
    run(["sobel", tmp_path / "in", tmp_path / "npy", "--format", "npy", "--glob", "a.png"])
    assert np.load(tmp_path / "npy" / "a.npy").dtype == np.float32
    run(
        [
            "scharr",
            tmp_path / "in",
            tmp_path / "par",
            "-j",
            "1",
            "--batch-size",
            "1",
            "--glob",
            "*.png",
            "--glob",
            "*.jpg",
            "--result",
            "picture",
        ],
        code=1,
    )
    assert len(list((tmp_path / "par").rglob("*.png"))) == 4


def test_progress_printer() -> None:
    from imgrad.batch import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    printer = ProgressPrinter(stream)
    printer(Progress(done=5, total=20, failed=1, elapsed=2.0, path="x.png"))
    printer.message("Error: something")
    printer(Progress(done=20, total=20, failed=1, elapsed=8.0, path="y.png"))
    printer.close()
    text = stream.getvalue()
    assert " 5/20 [######..................]  25%  2.5 files/s  ETA 6s  1 failed" in text
    assert "\r\x1b[KError: something\n" in text and text.endswith("\n")
    quiet = io.StringIO()
    ProgressPrinter(quiet, enabled=False)(Progress(1, 1, 0, 1.0, "x"))
    assert quiet.getvalue() == ""
    assert (duration(42), duration(187), duration(3723)) == ("42s", "3:07", "1:02:03")


# --------------------------------------------------------------------------- real processes


def console(*args: str, **kwargs) -> subprocess.CompletedProcess:
    executable = shutil.which("imgrad")
    assert executable, "install with: pip install -e . --no-deps"
    return subprocess.run([executable, *args], capture_output=True, timeout=120, **kwargs)


def test_stdout_closed_by_its_reader_stops_quietly(rgb: Path) -> None:
    """`imgrad sobel in.png - | head -c 8`: the reader is gone, so exit 1 without a message."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader stops before anything is written
    process = subprocess.Popen(
        [shutil.which("imgrad"), "sobel", str(rgb), "-"], stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and stderr == b""


def test_stdout_reader_stopping_mid_stream_is_no_success(tmp_path: Path) -> None:
    """`imgrad sobel noise.png - | head -c 100`: the reader takes 100 bytes of a PNG larger
    than a pipe's buffer and goes; the output is cut short, so the exit code is 1, quietly."""
    noise = np.random.default_rng(0).integers(0, 256, (700, 700), np.uint8)
    source = tmp_path / "noise.png"
    Image.fromarray(noise).save(source)
    whole = console("sobel", str(source), "-")
    assert whole.returncode == 0 and len(whole.stdout) > 4 * 65536  # more than a pipe holds
    process = subprocess.Popen(
        [shutil.which("imgrad"), "sobel", str(source), "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdout.read(100) == whole.stdout[:100]
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and stderr == b""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_write_error_is_named(rgb: Path) -> None:
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [shutil.which("imgrad"), "sobel", str(rgb), "-"], stdout=full, stderr=subprocess.PIPE
        )
    assert done.returncode == 1
    assert done.stderr == b"Error: cannot write to standard output: No space left on device\n"


def test_help_and_argument_errors_do_not_import_torch() -> None:
    script = (
        "import sys\n"
        "from imgrad_cli.main import cli\n"
        "codes = []\n"
        "for args in (['--help'], ['sobel', '--help'], ['--version'], ['sobel', '--ksize', '4'],"
        " ['canny', 'missing.png', 'x.png'], ['sobel', sys.executable, 'out.gif']):\n"
        "    try:\n"
        "        cli.main(args, prog_name='imgrad')\n"
        "    except SystemExit as exit:\n"
        "        codes.append(exit.code)\n"
        "print(codes, 'torch' in sys.modules, 'imgrad' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[0, 0, 0, 2, 2, 2] False False"


def test_console_script_file_and_pipe(rgb: Path, tmp_path: Path) -> None:
    done = console("sobel", str(rgb), str(tmp_path / "out.png"))
    assert done.returncode == 0 and done.stderr == b""
    expected = (tmp_path / "out.png").read_bytes()
    piped = console("sobel", "-", "-", input=rgb.read_bytes())
    assert piped.returncode == 0 and piped.stdout == expected
    bad = console("sobel", str(tmp_path / "nothing.png"), "x.png")
    assert (
        bad.returncode == 2 and b"does not exist" in bad.stderr and b"Traceback" not in bad.stderr
    )


def test_console_script_directory_json(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    done = console("prewitt", str(tmp_path / "in"), str(tmp_path / "out"), "--json")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert (summary["processed"], summary["failed"]) == (4, 2)
    assert b"4 processed, 0 skipped (up to date), 2 failed" in done.stderr


def test_console_script_killed_midway_leaves_complete_images(tmp_path: Path) -> None:
    """SIGKILL at a random moment: every output present is complete, the rerun finishes."""
    rng = np.random.default_rng(5)
    for i in range(600):
        save(
            tmp_path / "in" / f"{i // 100}" / f"{i:03}.png",
            rng.integers(0, 256, (1, 32, 32), dtype=np.uint8),
        )
    out = tmp_path / "out"
    args = ["sobel", str(tmp_path / "in"), str(out), "--quiet", "-j", "1", "--batch-size", "1"]
    process = subprocess.Popen([shutil.which("imgrad"), *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.rglob("*.png"))) < 20:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    written = list(out.rglob("*.png"))
    assert 20 <= len(written) < 600, "the run finished before the kill"
    for path in written:
        assert read(path).shape == (1, 32, 32)
    rerun = console(*args[:-5], "--json")
    summary = json.loads(rerun.stdout)
    assert rerun.returncode == 0
    assert summary["skipped"] == len(written) and summary["processed"] == 600 - len(written)
    assert not [p for p in out.rglob("*") if ".imgrad-tmp" in p.name]


def test_console_script_sigterm_stops_cleanly(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for i in range(600):
        save(tmp_path / "in" / f"{i:03}.png", rng.integers(0, 256, (1, 32, 32), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["sobel", str(tmp_path / "in"), str(out), "-j", "1", "--batch-size", "1", "--json"]
    process = subprocess.Popen(
        [shutil.which("imgrad"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.rglob("*.png"))) < 20:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["processed"] == len(list(out.rglob("*.png")))
    assert b"run the same command again" in stderr
    assert not [p for p in out.rglob("*") if ".imgrad-tmp" in p.name]


# --------------------------------------------------------------------------- huge images, clusters

tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")
dask_distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> str:
    """One LocalCluster for the module: a worker process on free loopback ports."""
    with dask_distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as local:
        yield local.scheduler_address


def task_prefixes(address: str) -> set[str]:
    """The names of the functions the scheduler at ``address`` has run tasks of."""
    with dask_distributed.Client(address) as client:
        return set(
            client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
        )


@pytest.fixture
def large(tmp_path: Path) -> dict[str, Path]:
    """The same 300x200 data as a PNG and as a TIFF of 64x64 tiles, grey and RGB."""
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 200, (200, 300), dtype=np.uint8)
    grey[60:140, 90:210] += 55
    colour = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", grey, tile=(64, 64))
    tifffile.imwrite(tmp_path / "rgb.tif", colour, tile=(64, 64), photometric="rgb")
    return {
        "grey.tif": tmp_path / "grey.tif",
        "grey.png": save(tmp_path / "grey.png", grey[None]),
        "rgb.tif": tmp_path / "rgb.tif",
        "rgb.png": save(tmp_path / "rgb.png", np.moveaxis(colour, -1, 0)),
    }


@pytest.mark.parametrize(
    "name, args",
    [
        ("grey", ["sobel"]),
        ("rgb", ["scharr", "--result", "gx", "--bits", "16"]),
        ("rgb", ["sobel", "--result", "orientation", "--color", "max"]),
        ("grey", ["prewitt", "--otsu", "--border", "replicate"]),
        ("rgb", ["laplacian", "--ksize", "3", "--color", "channels"]),
    ],
)
def test_tiled_tiff_equals_the_whole_image(
    name: str, args: list[str], large: dict[str, Path], tmp_path: Path
) -> None:
    """A tiled TIFF in -> a tiled TIFF out, 64x64 tiles: the samples of the whole-image run."""
    command, *rest = args
    done = run([command, large[f"{name}.tif"], tmp_path / "tiles.tif", "--tile", "64", *rest])
    passes = 3 if "--otsu" in rest else 1  # Otsu: extremes, histogram, mask
    assert f"{20 * passes}/{20 * passes} [" in done.stderr and "tiles/s" in done.stderr
    run([command, large[f"{name}.png"], tmp_path / "whole.tif", *rest])
    tiles, whole = tifffile.imread(tmp_path / "tiles.tif"), tifffile.imread(tmp_path / "whole.tif")
    assert tiles.dtype == whole.dtype and np.array_equal(tiles, whole)
    with tifffile.TiffFile(tmp_path / "tiles.tif") as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].tilewidth == 64


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiled_tiff_follows_the_orientation_tag(orientation: int, tmp_path: Path) -> None:
    """Tiles are cut from the picture as viewed (as the whole-image reader turns it)."""
    stored = rgb_image(37, 52, seed=orientation)[0]
    tifffile.imwrite(
        tmp_path / "in.tif", stored, tile=(16, 16), extratags=[(274, 3, 1, orientation, True)]
    )
    run(["sobel", tmp_path / "in.tif", tmp_path / "tiles.png", "--tile", "16", "-q"])
    run(["sobel", tmp_path / "in.tif", tmp_path / "whole.png"])
    whole = read(tmp_path / "whole.png")
    assert whole.shape[1:] == ((52, 37) if orientation >= 5 else (37, 52))
    assert np.array_equal(read(tmp_path / "tiles.png"), whole)


def test_tiled_bilevel_and_unsupported_samples(tmp_path: Path) -> None:
    """A bool TIFF is 0/255 as in the whole-image run; complex samples are one clean line."""
    mask = rgb_image(30, 40)[0] > 128
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    run(["sobel", tmp_path / "mask.tif", tmp_path / "tiles.png", "--tile", "16", "-q"])
    run(["sobel", tmp_path / "mask.tif", tmp_path / "whole.png"])
    assert np.array_equal(read(tmp_path / "tiles.png"), read(tmp_path / "whole.png"))
    tifffile.imwrite(tmp_path / "c.tif", mask.astype(np.complex64))
    result = run(["sobel", tmp_path / "c.tif", tmp_path / "o.png", "--tile", "16"], code=1)
    assert "c.tif': complex images are not supported" in result.stderr
    assert "Traceback" not in result.output


def test_tiled_outputs_never_replace_the_input_and_name_the_missing_folder(
    tmp_path: Path,
) -> None:
    """A .zarr OUTPUT that is the folder holding INPUT was deleted with it; now exit 1, nothing
    touched. A missing output folder is named, not the temporary file beside the output."""
    folder = tmp_path / "res.zarr"
    folder.mkdir()
    tifffile.imwrite(folder / "g.tif", rgb_image(40, 30)[0])
    (folder / "notes.txt").write_text("keep me")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = run(["sobel", folder / "g.tif", folder], code=1)
    assert result.stderr.count("\n") == 1 and "holds or lies in the input" in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    result = run(["sobel", folder / "g.tif", tmp_path / "nodir" / "o.tif", "--tile", "16"], code=1)
    assert f"no folder '{tmp_path / 'nodir'}' to write into" in result.stderr
    assert ".imgrad-tmp" not in result.stderr and not (tmp_path / "nodir").exists()


def test_tiled_int16_tiff_equals_the_whole_image_run(tmp_path: Path) -> None:
    """Signed 16-bit samples are read as uint16 by tiles too (they were scaled as floats)."""
    tifffile.imwrite(tmp_path / "i16.tif", (rgb_image(40, 30)[0].astype(np.int16) * 4))
    run(["sobel", tmp_path / "i16.tif", tmp_path / "whole.png"])
    run(["sobel", tmp_path / "i16.tif", tmp_path / "tiles.png", "--tile", "16", "-q"])
    whole = read(tmp_path / "whole.png")
    assert whole.dtype == np.uint16 and whole.max() > 0
    assert np.array_equal(read(tmp_path / "tiles.png"), whole)


@pytest.mark.parametrize("alpha", ["composite", "drop"])
def test_tiled_rgba_tiff_equals_the_whole_image_run(alpha: str, tmp_path: Path) -> None:
    """An RGBA TIFF by tiles (it exited 2: alpha was not composited in tiles): --alpha as in
    the whole-image run; composited, colour under transparent pixels makes no edges."""
    rgba = np.concatenate([rgb_image(40, 30, seed=3), np.full((1, 40, 30), 255, np.uint8)])
    rgba[3, :, 15:] = 0  # the right half transparent
    tifffile.imwrite(tmp_path / "a.tif", np.moveaxis(rgba, 0, -1), photometric="rgb",
                     extrasamples=["unassalpha"], tile=(16, 16))  # fmt: skip
    args = ["--alpha", alpha, "-q"]
    run(["sobel", tmp_path / "a.tif", tmp_path / "whole.png", *args])
    run(["sobel", tmp_path / "a.tif", tmp_path / "tiles.png", "--tile", "16", *args])
    whole = read(tmp_path / "whole.png")
    assert np.array_equal(read(tmp_path / "tiles.png"), whole)
    assert (whole[:, :, 17:].max() == 0) == (alpha == "composite")


def test_interrupted_zarr_output_leaves_nothing(
    large: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while tiles are written on threads: the temporary array is removed after the
    threads stop (tiles still being computed would otherwise write into it again)."""
    compute = tiled.compute_block

    def slow_then_interrupted(job, source, block, raw, sink):
        if block[:2] == (0, 64) and block[2] == 64:
            raise KeyboardInterrupt
        time.sleep(0.05)
        return compute(job, source, block, raw, sink)

    monkeypatch.setattr(tiled, "compute_block", slow_then_interrupted)
    out = tmp_path / "out"
    out.mkdir()
    result = run(["sobel", large["grey.png"], out / "o.zarr", "--tile", "64", "-q"], code=130)
    assert f"interrupted; '{out / 'o.zarr'}' was not written" in result.stderr
    assert os.listdir(out) == []


def test_zarr_in_and_out(large: dict[str, Path], tmp_path: Path) -> None:
    """Zarr arrays are read and written tile by tile; they hold float values by default."""
    grey = read(large["grey.png"])[0]
    zarr.create_array(str(tmp_path / "in.zarr"), data=grey, chunks=(50, 70))
    run(["sobel", tmp_path / "in.zarr", tmp_path / "gx.zarr", "--result", "gx", "-q"])
    run(["sobel", large["grey.png"], tmp_path / "gx.npy", "--result", "gx"])
    gx = zarr.open_array(str(tmp_path / "gx.zarr"))
    assert gx.dtype == np.float32 and gx.chunks == (1024, 1024)
    assert np.array_equal(gx[:], np.load(tmp_path / "gx.npy")[0])
    run(["sobel", tmp_path / "in.zarr", tmp_path / "mag.png", "--tile", "48", "-q"])
    run(["sobel", large["grey.png"], tmp_path / "whole.png"])
    assert np.array_equal(read(tmp_path / "mag.png"), read(tmp_path / "whole.png"))
    run(["sobel", tmp_path / "in.zarr", tmp_path / "mag.zarr", "--bits", "8", "-q"])  # samples
    assert np.array_equal(
        zarr.open_array(str(tmp_path / "mag.zarr"))[:], read(tmp_path / "whole.png")[0]
    )
    run(["sobel", tmp_path / "in.zarr", tmp_path / "mag.zarr", "--bits", "8", "-q"])  # replaced
    assert not list(tmp_path.glob(".*imgrad-tmp"))


def test_tiff_above_the_pixel_limit_is_streamed(large: dict[str, Path], tmp_path: Path) -> None:
    """No option needed: a TIFF above --max-pixels is computed tile by tile, not refused."""
    done = run(["sobel", large["rgb.tif"], tmp_path / "tiles.png", "--max-pixels", "1000"])
    assert "tiles/s" in done.stderr
    run(["sobel", large["rgb.png"], tmp_path / "whole.png"])
    assert np.array_equal(read(tmp_path / "tiles.png"), read(tmp_path / "whole.png"))


def test_png_above_the_pixel_limit_says_what_to_use(large: dict[str, Path], tmp_path: Path) -> None:
    result = run(["sobel", large["grey.png"], tmp_path / "out.png", "--max-pixels", "1000"], code=1)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "more than the limit of 1,000" in result.stderr
    assert "tiled TIFF or Zarr" in result.stderr and "--max-pixels" in result.stderr
    result = run(["canny", large["grey.png"], tmp_path / "out.png", "--max-pixels", "1000"], code=1)
    assert (
        result.stderr.count("\n") == 1 and "canny cannot be computed tile by tile" in result.stderr
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["sobel", "{tif}", "o.tif", "--tile", "64", "--hysteresis", "9", "99"],
            "hysteresis cannot",
        ),
        (["sobel", "{zarr}", "o.zarr", "--hysteresis", "9", "99"], "--otsu"),
        (["canny", "{zarr}", "o.png"], "canny cannot be computed tile by tile"),
        (["canny", "{tif}", "o.png", "--max-pixels", "100"], "'imgrad sobel' with --threshold"),
        (["canny", "{tif}", "o.png", "--scheduler-address", "threads"], "canny cannot"),
        (["sobel", "{tif}", "o.tif", "--tile", "64", "--mapping", "stretch"], "stretch mapping"),
        (["sobel", "{zarr}", "o.png", "--result", "picture"], "picture is not available"),
        (["sobel", "{tif}", "o.tif", "--tile", "50"], "multiples of 16"),
        (["sobel", "{tif}", "o.tif", "--scheduler-address", "host"], "local:N"),
        (["sobel", "{tif}", "o.tif", "--scheduler-address", "local:0"], "N >= 1"),
        (["sobel", "{tif}", "-", "--tile", "64"], "not stdin/stdout"),
        (["sobel", "{dir}", "out", "--tile", "64"], "applies to a file INPUT only"),
        (["sobel", "{tif}", "o.zarr", "--format", "png"], "contradicts"),
    ],
)
def test_what_tiles_cannot_do_exits_2(
    args: list[str], message: str, large: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    zarr.create_array(str(tmp_path / "in.zarr"), data=np.zeros((40, 40), np.uint8))
    names = {"tif": large["grey.tif"], "zarr": tmp_path / "in.zarr", "dir": tmp_path / "none"}
    (tmp_path / "none").mkdir()
    monkeypatch.chdir(tmp_path)
    result = run([a.format(**names) for a in args], code=2)
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.zarr").exists()


def small_tree(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for i in range(4):
        shape = (3, 30, 40) if i % 2 else (1, 36, 28)
        save(root / ("sub" if i > 1 else "") / f"img{i}.png", rng.integers(0, 256, shape, np.uint8))
    (root / "broken.png").write_bytes(b"not a png")
    return root


def same_tree(a: Path, b: Path) -> int:
    """Assert the same files with the same bytes under ``a`` and ``b``; return how many."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for relative in files:
        assert (a / relative).read_bytes() == (b / relative).read_bytes(), relative
    return len(files)


def test_dask_scheduler_address_is_honoured(
    cluster: str, large: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DASK_SCHEDULER_ADDRESS runs directories (a task per file) and huge files (a task per
    tile) on that cluster, with the same files, progress and failures as the threads run."""
    source = small_tree(tmp_path / "in")
    local = run(["sobel", source, tmp_path / "local", "--scheduler-address", "threads"], code=1)
    monkeypatch.setenv(imgrad_distributed.SCHEDULER_ENV, cluster)
    remote = run(["sobel", source, tmp_path / "remote"], code=1)
    assert same_tree(tmp_path / "local", tmp_path / "remote") == 5  # 4 images, the options
    for result in (local, remote):
        assert "Error: cannot read" in result.stderr and "broken.png" in result.stderr
        assert "5/5 [" in result.stderr
        assert "4 processed, 0 skipped (up to date), 1 failed" in result.stderr
    run(["sobel", large["grey.tif"], tmp_path / "tiles.zarr", "--bits", "8", "-q"])
    assert {"guarded", "compute_block"} <= task_prefixes(cluster)
    run(["sobel", large["grey.png"], tmp_path / "whole.png"])
    assert np.array_equal(
        zarr.open_array(str(tmp_path / "tiles.zarr"))[:], read(tmp_path / "whole.png")[0]
    )


def test_cluster_output_folder_blocked_by_a_file(cluster: str, tmp_path: Path) -> None:
    """On the workers too, a file where an output sub-folder goes is named as such."""
    make_tree(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("not a folder")
    args = ["sobel", tmp_path / "in", tmp_path / "out", "-q", "--scheduler-address", cluster]
    result = run(args, code=1)
    blocked = f"a file stands where the folder '{tmp_path / 'out' / 'sub'}' should be"
    assert result.stderr.count(blocked) == 3  # a worker makes the folder first, then reads


def test_scheduler_address_option_for_a_file(cluster: str, large: dict[str, Path], tmp_path: Path):
    """--scheduler-address with a single file computes it tile by tile on that cluster."""
    args = ["--otsu", "--scheduler-address", cluster, "-q"]
    run(["sobel", large["rgb.tif"], tmp_path / "mask.tif", *args])
    run(["sobel", large["rgb.png"], tmp_path / "whole.tif", "--otsu"])
    assert np.array_equal(
        tifffile.imread(tmp_path / "mask.tif"), tifffile.imread(tmp_path / "whole.tif")
    )


def test_console_script_local_cluster_directory(tmp_path: Path) -> None:
    """A real run: --scheduler-address local:2 starts two worker processes; same bytes."""
    source = small_tree(tmp_path / "in")
    run(["scharr", source, tmp_path / "threads", "--result", "gy", "--quiet"], code=1)
    done = console(
        "scharr",
        str(source),
        str(tmp_path / "dask"),
        "--result",
        "gy",
        "--json",
        "--scheduler-address",
        "local:2",
    )
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["processed"], summary["failed"]) == (4, 1)
    assert b"4 processed, 0 skipped (up to date), 1 failed" in done.stderr
    assert b"Traceback" not in done.stderr
    assert same_tree(tmp_path / "threads", tmp_path / "dask") == 5  # 4 images, the options


def test_missing_extra_exits_1_with_the_install_command(
    large: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    real_import = importlib.import_module

    def without_extra(name: str, *args: object) -> object:
        if name in ("zarr", "distributed"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_extra)
    for args in (
        ["sobel", large["grey.png"], tmp_path / "out.zarr"],
        ["sobel", small_tree(tmp_path / "in"), tmp_path / "out", "--scheduler-address", "local:1"],
    ):
        result = run(args, code=1)
        assert "pip install 'imgrad[dask]'" in result.stderr and "Traceback" not in result.output
        assert result.stderr.count("\n") == 1
