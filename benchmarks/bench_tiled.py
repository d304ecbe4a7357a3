"""Huge images and directory batches: time, throughput and peak memory.

1. A SIZE x SIZE uint8 tiled TIFF (default 40000², 1.6 GB, written tile by tile from a generator)
   goes through the Sobel magnitude with :func:`imgrad.tiled.process_huge`, to a uint8 tiled
   TIFF (fixed scale) and to a float32 Zarr. Each job runs in a fresh subprocess that reports its
   own peak resident memory (``ru_maxrss``), so the parent's memory does not count.
2. A directory of PNG images on a local Dask cluster of 1 and of 2 worker processes, against
   the in-process threads of :func:`imgrad.batch.process_tree`.

Everything is written under ``--workdir`` (default: a new directory in /tmp) and deleted at
the end unless ``--keep``. Check the free space first: the inputs and outputs of the default size
take about 1.6 + 1.6 + up to 6.4 GB.

    python benchmarks/bench_tiled.py [--size 40000] [--tile 1024] [--files 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SOBEL3_FULL_SCALE = 20**0.5 * 255  # the largest Sobel 3 magnitude of 8-bit data


def _tiles(size: int, tile: int) -> Iterator[np.ndarray]:
    """A smooth pattern plus noise, tile by tile in row-major order (never the whole image)."""
    rng = np.random.default_rng(0)
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            h, w = min(tile, size - y), min(tile, size - x)
            yy, xx = np.mgrid[y : y + h, x : x + w].astype(np.float32)
            wave = 100 + 80 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
            yield (wave + rng.integers(0, 40, (h, w))).astype(np.uint8)


def make_input(path: Path, size: int, tile: int) -> float:
    import tifffile

    start = time.perf_counter()
    tifffile.imwrite(
        path, data=_tiles(size, tile), shape=(size, size), dtype=np.uint8, tile=(tile, tile)
    )
    return time.perf_counter() - start


def job(src: str, dst: str, output: str, tile: int, scheduler: str) -> None:
    """Run in the subprocess: one process_huge call; print seconds and peak memory as JSON."""
    from imgrad.tiled import process_huge

    scale = 255 / SOBEL3_FULL_SCALE if output == "uint8" else None
    start = time.perf_counter()
    process_huge(src, dst, output=output, scale=scale, tile=tile, scheduler=scheduler)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))


def run_job(src: Path, dst: Path, output: str, tile: int, scheduler: str, pixels: int) -> None:
    command = [sys.executable, __file__, "--job", str(src), str(dst), output, str(tile), scheduler]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    on_disk = _size(dst) / 2**30
    print(
        f"  -> {dst.name:<14} {output:<6} {scheduler:<8} {report['seconds']:7.1f} s  "
        f"{pixels / 1e6 / report['seconds']:7.1f} Mpx/s  peak RSS {report['peak_mib']:7.0f} MiB  "
        f"output {on_disk:.2f} GiB"
    )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def directory(workdir: Path, files: int, side: int) -> None:
    from imgrad import batch
    from imgrad import io as image_io
    from imgrad.distributed import client_for, process_tree

    source = workdir / "pngs"
    source.mkdir()
    rng = np.random.default_rng(1)
    for i in range(files):
        image_io.write_image(source / f"{i:04d}.png", rng.integers(0, 256, (side, side), np.uint8))
    recipe = batch.Recipe("sobel", "magnitude")
    print(f"directory: {files} PNG files of {side}x{side} uint8, Sobel magnitude to PNG")
    start = time.perf_counter()
    summary = process_tree(source, workdir / "out-threads", recipe, scheduler="threads")
    baseline = time.perf_counter() - start
    _report("threads", baseline, baseline, files, side, summary, 0.0)
    for workers in (1, 2):
        start = time.perf_counter()
        with client_for(f"local:{workers}") as client:
            started = time.perf_counter() - start
            start = time.perf_counter()
            summary = process_tree(source, workdir / f"out-{workers}", recipe, scheduler=client)
            seconds = time.perf_counter() - start
        _report(f"local:{workers}", seconds, baseline, files, side, summary, started)


def _report(
    name: str, seconds: float, baseline: float, files: int, side: int, summary, started: float
) -> None:
    assert summary.processed == files and not summary.failures, summary
    print(
        f"  {name:<8} {seconds:6.2f} s  {files / seconds:6.1f} files/s  "
        f"{files * side * side / 1e6 / seconds:6.1f} Mpx/s  (threads / this = "
        f"{baseline / seconds:.2f}; cluster start {started:.1f} s not counted)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=40000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--file-side", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-zarr", action="store_true", help="no float32 Zarr output")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imgrad-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        src = workdir / "input.tif"
        pixels = args.size * args.size
        seconds = make_input(src, args.size, args.tile)
        print(
            f"input: {args.size}x{args.size} uint8 tiled TIFF ({args.tile}² tiles), "
            f"{src.stat().st_size / 2**30:.2f} GiB, generated in {seconds:.1f} s"
        )
        print(f"Sobel 3 magnitude, tiles of {args.tile}², reflect101:")
        run_job(src, workdir / "mag.tif", "uint8", args.tile, "threads", pixels)
        (workdir / "mag.tif").unlink()
        if not args.skip_zarr:
            run_job(src, workdir / "mag.zarr", "float", args.tile, "threads", pixels)
            shutil.rmtree(workdir / "mag.zarr")
        src.unlink()
        directory(workdir, args.files, args.file_side)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--job":
        src, dst, output, tile, scheduler = sys.argv[2:7]
        job(src, dst, output, int(tile), scheduler)
    else:
        main()
