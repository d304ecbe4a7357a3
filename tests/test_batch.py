"""Tests of imgrad.batch: recipes (values to samples) and directory processing."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imgrad import batch
from imgrad import io as imgrad_io
from imgrad.batch import Recipe, Threshold, plan_tree, process_file, process_tree

U8 = np.dtype(np.uint8)
U16 = np.dtype(np.uint16)


def step_image(height: int = 8, width: int = 8, high: int = 255, dtype=np.uint8) -> np.ndarray:
    """(1, H, W): 0 on the left half, ``high`` on the right half."""
    image = np.zeros((1, height, width), dtype)
    image[:, :, width // 2 :] = high
    return image


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    imgrad_io.write_image(path, array)
    return path


def make_tree(root: Path, count: int = 4) -> list[Path]:
    """``count`` small images in ``root`` and ``root/sub``, two sizes."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        size = (1, 12, 10) if i % 2 else (3, 9, 11)
        folder = root / "sub" if i >= count // 2 else root
        array = rng.integers(0, 256, size, dtype=np.uint8)
        paths.append(write(folder / f"img{i}.png", array))
    return paths


def leftovers(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if ".imgrad-tmp" in name]


# --------------------------------------------------------------------------- full scale


def test_full_scale_values() -> None:
    """The documented full scales: Sobel 3 magnitude sqrt(20)·peak, gx 4·peak, and friends."""
    assert Recipe().full_scale(U8) == pytest.approx(math.sqrt(20) * 255, rel=1e-12)
    assert Recipe(result="gx").full_scale(U8) == 4 * 255
    assert Recipe(result="gy").full_scale(U16) == 4 * 65535
    assert Recipe(result="gx", normalized=True).full_scale(U8) == 255 / 2
    assert Recipe(operator="central", result="gx").full_scale(np.dtype(np.float32)) == 0.5
    assert Recipe(operator="laplacian", ksize=1).full_scale(U8) == 4 * 255
    assert Recipe(operator="laplacian", ksize=3).full_scale(U8) == 8 * 255
    assert Recipe(result="orientation").full_scale(U8) == 2 * math.pi


@pytest.mark.parametrize("operator", ["sobel", "scharr", "prewitt", "central"])
def test_full_scale_is_reached_and_never_exceeded(operator: str) -> None:
    """The full scale is the largest magnitude: one 3x3 image reaches it, noise stays below."""
    recipe = Recipe(operator=operator, mapping="raw")
    full = recipe.full_scale(U8)
    images = np.random.default_rng(1).integers(0, 2, (32, 1, 7, 7), dtype=np.uint8) * 255
    assert max(out.max() for out in recipe.apply(images)) <= full * (1 + 1e-6)
    # the extreme 3x3 images: 255 where the response to a direction (cos t, sin t) is positive
    op = batch.get_operator(operator)
    kx, ky = batch._kernel(op.smoothing, op.derivative), batch._kernel(op.derivative, op.smoothing)
    peak = 0.0
    for t in np.linspace(0, 2 * np.pi, 720, endpoint=False):
        image = ((np.cos(t) * kx + np.sin(t) * ky) > 0).astype(np.uint8)[None, None] * 255
        peak = max(peak, float(recipe.apply(image)[0][0, 1, 1]))
    assert peak == pytest.approx(full, rel=1e-6)


# --------------------------------------------------------------------------- values to samples


def test_fixed_mapping_of_a_step_edge() -> None:
    """Fixed scale: the value is rint(response × top / full scale); signed 0 is mid-grey."""
    image = step_image()[None]
    (magnitude,) = Recipe().apply(image)
    assert magnitude.dtype == np.uint8 and magnitude.shape == (1, 8, 8)
    assert magnitude[0, 3, 3] == round(1020 * 255 / (math.sqrt(20) * 255))  # 228
    assert magnitude[0, 3, 0] == 0
    (gx,) = Recipe(result="gx").apply(image)
    assert gx[0, 3, 3] == 255 and gx[0, 3, 0] == 128  # +full -> 128 + 127, 0 -> 128
    (gy,) = Recipe(result="gy").apply(image)
    assert (gy == 128).all()


def test_scale_overrides_the_fixed_gain() -> None:
    (out,) = Recipe(scale=0.1).apply(step_image()[None])
    assert out[0, 3, 3] == 102  # 1020 × 0.1


def test_stretch_and_raw() -> None:
    image = step_image(high=10)[None]
    (stretched,) = Recipe(mapping="stretch").apply(image)
    assert stretched.max() == 255
    (raw,) = Recipe(mapping="raw").apply(image)
    assert raw.dtype == np.float32 and raw.max() == 40.0


def test_default_bits_follow_the_input() -> None:
    """8-bit in -> 8-bit out, 16-bit in -> 16-bit out; masks and pictures 8; JPEG always 8."""
    recipe = Recipe()
    assert recipe.bits_for(U8, ".png") == 8
    assert recipe.bits_for(U16, ".png") == 16
    assert recipe.bits_for(np.dtype(np.float32), ".tif") == 16
    assert recipe.bits_for(U16, ".jpg") == 8
    assert Recipe(result="mask").bits_for(U16, ".png") == 8
    assert Recipe(result="picture").bits_for(U16, ".png") == 8
    assert Recipe(bits=16).bits_for(U8, ".png") == 16


def test_sixteen_bit_precision_is_kept() -> None:
    """A ramp of step 1 in 16-bit data: gx = 8 survives exactly with --scale 1."""
    ramp = np.tile(np.arange(10, dtype=np.uint16) + 1000, (1, 6, 1))
    (gx,) = Recipe(result="gx", scale=1.0).apply(ramp[None])
    assert gx.dtype == np.uint16
    assert (gx[0, :, 1:-1] == 32768 + 8).all() and (gx[0, :, [0, -1]] == 32768).all()


def test_results_shapes_and_types() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (2, 3, 9, 10), dtype=np.uint8)
    expect = {
        "magnitude": ((1, 9, 10), np.uint8),
        "orientation": ((1, 9, 10), np.uint8),
        "picture": ((3, 9, 10), np.uint8),
        "mask": ((1, 9, 10), np.uint8),
    }
    for result, (shape, dtype) in expect.items():
        outs = Recipe(result=result).apply(rgb)
        assert len(outs) == 2
        assert all(o.shape == shape and o.dtype == dtype for o in outs), result
    (channels,) = Recipe(color="channels").apply(rgb[:1])
    assert channels.shape == (3, 9, 10)
    (mask,) = Recipe(result="mask").apply(rgb[:1])
    assert set(np.unique(mask)) <= {0, 255}
    (edges,) = Recipe(operator="canny", low=50.0, high=100.0, color="max", bits=16).apply(rgb[:1])
    assert edges.dtype == np.uint16 and set(np.unique(edges)) <= {0, 65535}


def test_canny_recipe_equals_the_library() -> None:
    image = np.random.default_rng(3).integers(0, 256, (1, 1, 20, 20), dtype=np.uint8)
    from imgrad.canny import canny

    (edges,) = Recipe(operator="canny", low=100.0, high=200.0).apply(image)
    expected = canny(torch.from_numpy(image), 100.0, 200.0).numpy()[0]
    assert np.array_equal(edges, expected.astype(np.uint8) * 255)


def test_thresholds() -> None:
    magnitude = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]])
    assert Threshold("value", value=1.0).apply(magnitude).tolist() == [
        [[[False, False, True, True]]]
    ]
    assert Threshold("relative", value=0.5).apply(magnitude)[0, 0, 0, 2]
    assert Threshold("hysteresis", low=0.5, high=2.5).apply(magnitude).all(-1).logical_not().all()
    assert Threshold("otsu").apply(magnitude).any()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"operator": "roberts"}, "operator must be one of"),
        ({"result": "edges"}, "result must be one of"),
        ({"operator": "laplacian", "result": "magnitude"}, "has one result"),
        ({"threshold": Threshold("otsu")}, "makes a mask"),
        ({"mapping": "stretch", "scale": 2.0}, "fixed mapping only"),
        ({"bits": 12}, "bits must be 8 or 16"),
        ({"result": "mask", "mapping": "stretch"}, "do not apply"),
        ({"mapping": "raw", "bits": 16}, "bits do not apply"),
        ({"result": "orientation", "mapping": "stretch"}, "full circle"),
        ({"result": "picture", "color": "channels"}, "one channel"),
        ({"operator": "laplacian", "color": "max"}, "not max"),
        ({"operator": "scharr", "ksize": 5}, "ksize applies to sobel only"),
        ({"operator": "canny", "low": 1.0}, "give both low and high"),
        ({"border": "mirror"}, "unknown border"),
    ],
)
def test_recipe_refuses_bad_combinations(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Recipe(**options)


def test_threshold_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="required"):
        Threshold("value")
    with pytest.raises(ValueError, match="must not exceed"):
        Threshold("hysteresis", low=3.0, high=1.0)


def test_check_extension() -> None:
    with pytest.raises(ValueError, match=r"needs .tif, .npy or .zarr"):
        Recipe(mapping="raw").check_extension(".png")
    with pytest.raises(ValueError, match="needs .npy"):
        Recipe(mapping="raw", color="channels").check_extension(".tif")
    with pytest.raises(ValueError, match="8-bit samples only"):
        Recipe(bits=16).check_extension(".jpg")
    Recipe(mapping="raw").check_extension(".TIF")


# --------------------------------------------------------------------------- one file


def test_process_file_and_refusal_to_overwrite_the_input(tmp_path: Path) -> None:
    source = write(tmp_path / "in.png", step_image())
    process_file(source, tmp_path / "out.tif", Recipe(mapping="raw"))
    assert imgrad_io.read_image(tmp_path / "out.tif").dtype == np.float32
    with pytest.raises(ValueError, match="onto the input"):
        process_file(source, source, Recipe())
    with pytest.raises(imgrad_io.ImageReadError, match="no such file"):
        process_file(tmp_path / "missing.png", tmp_path / "x.png", Recipe())


# --------------------------------------------------------------------------- planning


def test_plan_mirrors_filters_and_skips_hidden(tmp_path: Path) -> None:
    source = tmp_path / "in"
    make_tree(source)
    write(source / ".hidden" / "x.png", step_image())
    write(source / ".dot.png", step_image())
    (source / "notes.txt").write_text("not an image")
    plan = plan_tree(source, tmp_path / "out")
    rel = sorted(t.dest.relative_to(tmp_path / "out").as_posix() for t in plan.tasks)
    assert rel == ["img0.png", "img1.png", "sub/img2.png", "sub/img3.png"]
    flat = plan_tree(source, tmp_path / "out", recursive=False)
    assert len(flat.tasks) == 2
    globbed = plan_tree(source, tmp_path / "out", patterns=["*3.PNG", "*.txt"], extension=".npy")
    assert sorted(t.dest.name for t in globbed.tasks) == ["img3.npy", "notes.npy"]
    by_path = plan_tree(source, tmp_path / "out", patterns=["sub/*"])
    assert len(by_path.tasks) == 2


def test_plan_reports_name_collisions(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write(source / "a.png", step_image())
    write(source / "a.bmp", step_image())
    plan = plan_tree(source, tmp_path / "out")
    assert len(plan.tasks) == 1
    (failure,) = plan.failures
    assert failure.path.endswith("a.png") and "rename one of them" in failure.reason


@pytest.mark.parametrize("inner", [".", "edges", "sub/edges"])
def test_output_inside_input_is_refused(tmp_path: Path, inner: str) -> None:
    make_tree(tmp_path)
    with pytest.raises(ValueError, match="inside the input directory"):
        plan_tree(tmp_path, tmp_path / inner)


def test_plan_refuses_file_arguments(tmp_path: Path) -> None:
    image = write(tmp_path / "a.png", step_image())
    with pytest.raises(ValueError, match="not a directory"):
        plan_tree(image, tmp_path / "out")
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="not a directory"):
        plan_tree(tmp_path / "in", image)


def test_never_writes_onto_an_input(tmp_path: Path) -> None:
    """Output containing the input: a mirrored name that is an input is refused."""
    write(tmp_path / "in" / "a.png", step_image())
    write(tmp_path / "in" / "in" / "a.png", step_image())
    plan = plan_tree(tmp_path / "in", tmp_path)
    (failure,) = plan.failures
    assert "is an input" in failure.reason


def test_an_output_linked_to_an_input_is_refused(tmp_path: Path) -> None:
    """An existing output that is a symbolic link to an input is never written through."""
    write(tmp_path / "in" / "a.png", step_image())
    write(tmp_path / "in" / "b.png", step_image())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to(tmp_path / "in" / "a.png")
    plan = plan_tree(tmp_path / "in", tmp_path / "out")
    (failure,) = plan.failures
    assert failure.path.endswith("a.png") and "is an input" in failure.reason
    assert [task.source.name for task in plan.tasks] == ["b.png"]


# --------------------------------------------------------------------------- processing trees


def test_tree_with_bad_files(tmp_path: Path) -> None:
    """Corrupt, truncated, text and empty files fail one by one; the rest is written."""
    source = tmp_path / "in"
    good = make_tree(source)
    data = (source / "img0.png").read_bytes()
    (source / "sub" / "truncated.png").write_bytes(data[: len(data) // 2])
    (source / "corrupt.png").write_bytes(data[:40] + bytes(200) + data[240:])
    (source / "text.png").write_text("this is not a picture")
    (source / "empty.png").write_bytes(b"")
    write(source / "tiny.png", np.zeros((1, 1, 1), np.uint8))  # smaller than the stencil: fine
    events, failures = [], []
    summary = process_tree(
        source, tmp_path / "out", Recipe(), on_progress=events.append, on_failure=failures.append
    )
    assert summary.processed == len(good) + 1
    assert summary.failed == 4 == len(failures)
    reasons = {Path(f.path).name: f.reason for f in summary.failures}
    assert "truncated" in reasons["truncated.png"]
    assert "not an image" in reasons["text.png"] and "not an image" in reasons["empty.png"]
    assert "cannot read" in reasons["corrupt.png"]
    assert all(Path(f.path).name in f.reason for f in summary.failures)
    assert [e.done for e in events] == list(range(1, 10)) and events[-1].total == 9
    assert events[-1].failed == 4
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == [
        "img0.png",
        "img1.png",
        "img2.png",
        "img3.png",
        "tiny.png",
    ]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "recipe", [Recipe(mapping="stretch"), Recipe(), Recipe(result="gx")], ids=repr
)
def test_batched_equals_one_by_one(recipe: Recipe, tmp_path: Path) -> None:
    source = tmp_path / "in"
    paths = make_tree(source, count=6)
    process_tree(source, tmp_path / "out", recipe, batch_size=3, workers=2)
    for path in paths:
        relative = path.relative_to(source)
        process_file(path, tmp_path / "one.png", recipe)
        assert np.array_equal(
            imgrad_io.read_image(tmp_path / "out" / relative),
            imgrad_io.read_image(tmp_path / "one.png"),
        )


def test_files_get_a_core_while_a_run_computes_then_threads_are_restored(tmp_path: Path):
    source = tmp_path / "in"
    make_tree(source)
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        summary = process_tree(
            source,
            tmp_path / "out",
            Recipe(),
            on_progress=lambda _: seen.append(torch.get_num_threads()),
        )
        assert summary.processed == 4 and seen == [2, 2, 2, 2]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_resume_skips_up_to_date_outputs(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    paths = make_tree(source)
    assert process_tree(source, out, Recipe()).processed == 4
    second = process_tree(source, out, Recipe())
    assert (second.processed, second.skipped) == (0, 4)
    future = paths[0].stat().st_mtime + 100  # the input changed after its output
    os.utime(paths[0], (future, future))
    third = process_tree(source, out, Recipe())
    assert (third.processed, third.skipped) == (1, 3)
    forced = process_tree(source, out, Recipe(), overwrite=True)
    assert (forced.processed, forced.skipped) == (4, 0)
    # an output no later than its input (coarse timestamps, a copy keeping them) is redone
    stamp = paths[1].stat().st_mtime_ns
    os.utime(paths[0], ns=(stamp, stamp))  # back in the past: its output is later again
    same = time.time_ns() + 50 * 10**9  # input and output stamped alike, after the options
    output = next(p for p in out.rglob("*") if p.stem == paths[1].stem)
    for path in (paths[1], output):
        os.utime(path, ns=(same, same))
    fourth = process_tree(source, out, Recipe())
    assert (fourth.processed, fourth.skipped) == (1, 3)


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    """An encoder dying half-way (as in a kill) leaves neither a partial output nor a temp file."""
    source = tmp_path / "in"
    make_tree(source)
    encode = imgrad_io._encode

    def dying(stream, array, fmt):
        if array.shape[0] == 3:  # the colour images die half-way through
            stream.write(b"\x89PNG partial")
            raise OSError(28, "No space left on device")
        encode(stream, array, fmt)

    monkeypatch.setattr(imgrad_io, "_encode", dying)
    summary = process_tree(source, tmp_path / "out", Recipe(color="channels"))
    assert summary.processed == 2 and summary.failed == 2
    assert all("No space left on device" in f.reason for f in summary.failures)
    assert all("cannot write" in f.reason for f in summary.failures)
    written = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == [".imgrad-options.json", "img1.png", "img3.png"]  # the grey ones, complete
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(imgrad_io, "_encode", encode)
    again = process_tree(source, tmp_path / "out", Recipe(color="channels"))
    assert (again.processed, again.skipped) == (2, 2)  # the next run finishes the job


def interrupt_third_batch(monkeypatch, out: Path | None = None) -> Any:
    """Make the third ``Recipe.apply`` call raise KeyboardInterrupt (Ctrl-C mid-run); return the
    real ``apply`` to put back. Given ``out``, the interrupt waits until the first output is
    there (on a loaded machine the writer thread may not have started the first write yet,
    and a write that has not started is dropped by design)."""
    apply = Recipe.apply
    calls = []

    def interrupted(self, images, extension=".png"):
        calls.append(1)
        if len(calls) == 3:
            deadline = time.monotonic() + 60
            while out is not None and not any(out.rglob("*.png")) and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt
        return apply(self, images, extension)

    monkeypatch.setattr(Recipe, "apply", interrupted)
    return apply


def test_interrupt_keeps_finished_outputs_only(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C during the run: the summary says interrupted, only complete files exist."""
    source = tmp_path / "in"
    make_tree(source, count=6)
    apply = interrupt_third_batch(monkeypatch, tmp_path / "out")
    summary = process_tree(source, tmp_path / "out", Recipe(), batch_size=1, workers=1)
    # two images were computed; the second write may have been dropped before it started
    assert summary.interrupted and 1 <= summary.processed <= 2 and summary.failed == 0
    written = list((tmp_path / "out").rglob("*.png"))
    assert len(written) == summary.processed
    for path in written:
        assert imgrad_io.read_image(path).shape[0] == 1  # complete, readable
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(Recipe, "apply", apply)
    rest = process_tree(source, tmp_path / "out", Recipe())
    assert (rest.processed, rest.skipped) == (6 - summary.processed, summary.processed)


def test_changed_options_make_earlier_outputs_stale(tmp_path: Path, monkeypatch) -> None:
    """Resume skips only outputs made with the current options; after a change of options,
    even an interrupted run leaves the outputs of the earlier options to be recomputed."""
    source, out = tmp_path / "in", tmp_path / "out"
    make_tree(source, count=6)
    assert process_tree(source, out, Recipe()).processed == 6
    again = process_tree(source, out, Recipe())
    assert again.skipped == 6 and not again.options_changed
    record = json.loads((out / ".imgrad-options.json").read_text())
    assert record["scale"] is None and record["format"] == "png" and "device" not in record
    before = imgrad_io.read_image(out / "img0.png")
    brighter = Recipe(scale=1.0)
    changed = process_tree(source, out, brighter)
    assert (changed.processed, changed.skipped, changed.options_changed) == (6, 0, True)
    assert not np.array_equal(imgrad_io.read_image(out / "img0.png"), before)
    assert process_tree(source, out, brighter, overwrite=True).processed == 6
    # back to the first options, interrupted after a few images: the rest stay stale
    apply = interrupt_third_batch(monkeypatch)
    cut = process_tree(source, out, Recipe(), batch_size=1, workers=1)
    assert cut.interrupted and cut.processed <= 2  # 0 where the first write had not started
    monkeypatch.setattr(Recipe, "apply", apply)
    rest = process_tree(source, out, Recipe())
    assert (rest.processed, rest.skipped) == (6 - cut.processed, cut.processed)
    assert np.array_equal(imgrad_io.read_image(out / "img0.png"), before)


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    make_tree(source)
    (out / "sub").mkdir(parents=True)
    (out / "sub" / ".img2.png.1a2b3c4d.imgrad-tmp").write_bytes(b"half an image")
    (out / "keep.txt").write_text("not ours")
    summary = process_tree(source, out, Recipe())
    assert summary.removed_temporary == 1
    assert leftovers(out) == [] and (out / "keep.txt").exists()


def test_symlink_out_of_the_output_directory_is_refused(tmp_path: Path) -> None:
    source, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    make_tree(source)
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    summary = process_tree(source, out, Recipe())
    assert summary.processed == 2 and summary.failed == 2
    assert all("outside the output directory" in f.reason for f in summary.failures)
    assert list(elsewhere.iterdir()) == []


def test_summary_dict(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    (tmp_path / "in" / "bad.png").write_text("x")
    content = process_tree(tmp_path / "in", tmp_path / "out", Recipe(), format="npy").to_dict()
    assert content["processed"] == 4 and content["failed"] == 1 and content["skipped"] == 0
    assert content["failures"][0]["path"].endswith("bad.png")
    assert set(content) >= {"input", "output", "seconds", "interrupted", "removed_temporary"}
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 4


def test_process_tree_argument_errors(tmp_path: Path) -> None:
    make_tree(tmp_path / "in")
    with pytest.raises(ValueError, match="format must be one of"):
        process_tree(tmp_path / "in", tmp_path / "out", Recipe(), format="gif")
    with pytest.raises(ValueError, match="at least 1"):
        process_tree(tmp_path / "in", tmp_path / "out", Recipe(), workers=0)
    with pytest.raises(ValueError, match=r"needs .tif, .npy or .zarr"):
        process_tree(tmp_path / "in", tmp_path / "out", Recipe(mapping="raw"))


# --------------------------------------------------------------------------- tile by tile


@pytest.mark.parametrize(
    "recipe",
    [
        Recipe(),
        Recipe("scharr", "gy"),
        Recipe("sobel", "orientation", bits=8),
        Recipe("central", "mask", threshold=Threshold("relative", 0.25)),
        Recipe("laplacian", ksize=5, normalized=True),
        Recipe("prewitt", "gx", mapping="raw"),
    ],
)
def test_process_huge_file_writes_the_samples_of_process_file(recipe: Recipe, tmp_path: Path):
    """16-bit TIFF tiles in, tiled TIFF out: the same samples as the whole-image process_file."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(2)
    image = rng.integers(0, 60000, (90, 70), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(32, 32))
    calls: list[tuple[int, int]] = []
    batch.process_huge_file(
        tmp_path / "in.tif",
        tmp_path / "tiles.tif",
        recipe,
        tile=32,
        progress=lambda *a: calls.append(a),
    )
    process_file(tmp_path / "in.tif", tmp_path / "whole.tif", recipe)
    tiles, whole = tifffile.imread(tmp_path / "tiles.tif"), tifffile.imread(tmp_path / "whole.tif")
    assert tiles.dtype == whole.dtype and np.array_equal(tiles, whole)
    assert calls[-1][0] == calls[-1][1] >= 9


def test_what_tiles_cannot_compute_is_refused(tmp_path: Path) -> None:
    from imgrad.tiled import NonLocalStageError

    for recipe in (
        Recipe("canny"),
        Recipe(result="mask", threshold=Threshold("hysteresis", low=1, high=2)),
    ):
        with pytest.raises(NonLocalStageError, match="cannot be computed tile by tile"):
            recipe.check_tiled()
    with pytest.raises(ValueError, match="stretch"):
        Recipe(mapping="stretch").check_tiled()
    with pytest.raises(ValueError, match="picture"):
        Recipe(result="picture").check_tiled()
    with pytest.raises(ValueError, match="0/255"):
        Recipe(result="mask", bits=16).check_tiled()
    with pytest.raises(ValueError, match="4 channels"):
        Recipe().huge_options(4, np.dtype(np.uint8), ".tif")
    assert Recipe("laplacian").huge_options(1, np.dtype(np.uint8), ".zarr")["stage"] == "laplacian"


def test_public_helpers_of_trees(tmp_path: Path) -> None:
    """failure_reason, is_inside and remove_temporary (used by imgrad.distributed too)."""
    assert batch.is_inside(tmp_path / "a" / "b", tmp_path) and batch.is_inside(tmp_path, tmp_path)
    assert not batch.is_inside(tmp_path.parent, tmp_path)
    error = FileNotFoundError(2, "No such file or directory")
    assert (
        batch.failure_reason("write", "x.png", error)
        == "cannot write 'x.png': No such file or directory"
    )
    assert (
        batch.failure_reason("process", "x.png", ValueError("bad")) == "cannot process 'x.png': bad"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".a.png.1234.imgrad-tmp").write_bytes(b"")
    (tmp_path / "keep.png").write_bytes(b"")
    assert batch.remove_temporary(tmp_path) == 1 and (tmp_path / "keep.png").exists()
