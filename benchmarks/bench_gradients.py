"""Time imgrad's gradient maps against OpenCV, kornia, scikit-image and plain PyTorch (a script).

Run: ``python benchmarks/bench_gradients.py [--repeats 7] [--threads N] [--quick]``. Every case
runs all libraries in this one process, on the same data, with a fixed thread count
(``torch.set_num_threads``, ``cv2.setNumThreads``), and reports the median of ``--repeats`` runs
after one warm-up run, with ``IMGRAD_COMPILE=1`` (imgrad's one-off compile cost is measured
separately, in fresh processes; the command-line case runs with the default policy).

Columns are milliseconds; ratios below 1 mean imgrad is faster. The copy floor is the fastest
plain copy that makes a new array of the output from the input (``numpy.copy`` / ``clone`` /
``astype(float32)``): the time to read the input and write the output once. Peers that are not
installed are skipped with a note. Also printed: peak memory of a 16384² magnitude (measured in a
subprocess), the compile cost, a CUDA case when a GPU is present, Canny (``bench_canny.py``) and
the command line over a folder of JPEGs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import imgrad

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "sample_images"
Timing = dict[str, float | None]


def optional(name: str) -> Any:
    """Import a peer, or ``None`` with a note if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"note: {name} is not installed; its column is skipped")
        return None


cv2 = optional("cv2")
kornia = optional("kornia")
skimage_filters = optional("skimage.filters")


class Ms(float):
    """A median time in ms that also carries the fastest run (``best``)."""

    best: float


def measure(fn: Callable[[], Any], repeats: int) -> Ms:
    """Median wall time in ms of ``repeats`` calls after one warm-up call (and the fastest)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    result = Ms(1e3 * statistics.median(times))
    result.best = 1e3 * min(times)
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = f"torch {torch.__version__}, numpy {np.__version__}"
    if cv2 is not None:
        versions += f", opencv {cv2.__version__}"
    if kornia is not None:
        versions += f", kornia {kornia.__version__}"
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; python "
        f"{platform.python_version()}; {versions}; threads {torch.get_num_threads()}"
    )


# --------------------------------------------------------------------------- peers


def cv_magnitude(a: np.ndarray, scharr: bool = False) -> np.ndarray:
    """cv2.Sobel (or Scharr) dx and dy to float32, then cv2.magnitude."""
    if scharr:
        gx, gy = cv2.Scharr(a, cv2.CV_32F, 1, 0), cv2.Scharr(a, cv2.CV_32F, 0, 1)
    else:
        gx, gy = cv2.Sobel(a, cv2.CV_32F, 1, 0), cv2.Sobel(a, cv2.CV_32F, 0, 1)
    return cv2.magnitude(gx, gy)


SOBEL = torch.tensor([[[[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]]])
SOBEL2 = torch.cat([SOBEL, SOBEL.mT])


def conv2d_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: reflect pad, one conv2d with the two 3x3 Sobel kernels, sqrt of squares."""
    g = F.conv2d(F.pad(x.float(), (1, 1, 1, 1), mode="reflect"), SOBEL2)
    return g.square().sum(1, keepdim=True).sqrt()


def kornia_magnitude(x: torch.Tensor) -> torch.Tensor:
    return kornia.filters.sobel(x.float(), normalized=False)


def plane_loop(fn: Callable[[np.ndarray], Any], stack: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        for plane in stack:
            fn(plane)

    return run


def copy_floor(x: torch.Tensor, out_dtype: torch.dtype, repeats: int) -> Ms:
    """The fastest plain copy of the input into a new array of the output dtype."""
    a = x.numpy()
    np_dtype = torch.empty(0, dtype=out_dtype).numpy().dtype
    copies = [
        measure(lambda: a.astype(np_dtype, copy=True), repeats),
        measure(lambda: x.to(out_dtype, copy=True), repeats),
    ]
    fastest = Ms(min(copies))
    fastest.best = min(c.best for c in copies)
    return fastest


def twice(t: Ms) -> Ms:
    result = Ms(2 * t)
    result.best = 2 * t.best
    return result


# --------------------------------------------------------------------------- cases


def magnitude_case(x: torch.Tensor, repeats: int, scharr: bool = False) -> Timing:
    """Sobel (or Scharr) L2 magnitude of (N, 1, H, W) or (H, W) ``x`` by every library."""
    operator = "scharr" if scharr else "sobel"
    a = x.numpy()
    batch = a.reshape(-1, *a.shape[-2:])
    t4 = x.reshape(-1, 1, *x.shape[-2:])
    row: Timing = {"imgrad": measure(lambda: imgrad.gradient_magnitude(x, operator), repeats)}
    row["OpenCV"] = (
        measure(plane_loop(lambda p: cv_magnitude(p, scharr), batch), repeats) if cv2 else None
    )
    row["kornia"] = (
        measure(lambda: kornia_magnitude(t4), repeats)
        if kornia is not None and not scharr
        else None
    )
    if skimage_filters is not None:
        fn = skimage_filters.scharr if scharr else skimage_filters.sobel
        row["scikit-image"] = measure(plane_loop(fn, batch), repeats)
    row["conv2d"] = None if scharr else measure(lambda: conv2d_magnitude(t4), repeats)
    row["floor"] = copy_floor(x, torch.float32, repeats)
    return row


def gradient_case(x: torch.Tensor, repeats: int) -> Timing:
    """torch.gradient semantics: imgrad.gradient vs torch.gradient (and numpy.gradient)."""
    return {
        "imgrad": measure(lambda: imgrad.gradient(x), repeats),
        "torch.gradient": measure(lambda: torch.gradient(x), repeats),
        "numpy.gradient": measure(lambda: np.gradient(x.numpy()), repeats),
        "floor": twice(copy_floor(x, torch.float32, repeats)),
    }


COLUMNS = ["imgrad", "OpenCV", "kornia", "scikit-image", "conv2d", "torch.gradient", "floor"]
RATIOS = ["OpenCV", "kornia", "scikit-image", "torch.gradient", "floor"]


def print_table(rows: dict[str, Timing], best: bool = False) -> None:
    def value(row: Timing, column: str) -> float | None:
        v = row.get(column)
        return v.best if best and isinstance(v, Ms) else v

    kind = "fastest run" if best else "median"
    head = f"{'case':<32}" + "".join(f"{c:>15}" for c in COLUMNS)
    head += "".join(f"{'/' + c:>16}" for c in RATIOS)
    print(f"\nmilliseconds ({kind}) and ratios imgrad/peer (< 1: imgrad faster)")
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        line = f"{name:<32}"
        for c in COLUMNS:
            v = value(row, c)
            line += f"{v:>15.2f}" if v is not None else f"{'-':>15}"
        for c in RATIOS:
            v = value(row, c)
            line += f"{value(row, 'imgrad') / v:>16.2f}" if v else f"{'-':>16}"
        print(line)


# --------------------------------------------------------------------------- subprocess cases

MEMORY_CHILD = """
import gc, resource, torch, imgrad
torch.set_num_threads({threads})
imgrad.gradient_magnitude(torch.rand(64, 64))  # compile (or load) the kernel first
gc.collect()
n = {size}
x = torch.empty(n, n).uniform_()
# the baseline is the resident size now (Linux), not the high-water mark: compiling may have
# peaked higher and freed it, which would hide the call's own growth
rss = next(line for line in open("/proc/self/status") if line.startswith("VmRSS:"))
base = int(rss.split()[1]) * 1024
out = imgrad.gradient_magnitude(x)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak - base, x.nbytes, out.nbytes)
"""

COMPILE_CHILD = """
import time, torch
torch.set_num_threads({threads})
import imgrad
x = torch.rand(1024, 1024)
t0 = time.perf_counter(); imgrad.gradient_magnitude(x); t1 = time.perf_counter()
imgrad.gradient_magnitude(x); t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def child(code: str, env: dict[str, str] | None = None) -> list[float]:
    """Run ``code`` in a fresh interpreter; the numbers it prints (empty if it failed)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        print(f"note: a measuring subprocess failed: {done.stderr.strip()[-300:]}")
        return []
    return [float(v) for v in done.stdout.split()]


def memory_case(threads: int, size: int) -> None:
    numbers = child(MEMORY_CHILD.format(threads=threads, size=size))
    if not numbers:
        return
    extra, nin, nout = numbers
    ratio = (nin + extra) / (nin + nout)
    print(
        f"\npeak memory, Sobel magnitude of a {size}² float32 image (subprocess): ru_maxrss "
        f"grew by {extra / 2**20:.0f} MiB over the resident size after allocating the "
        f"{nin / 2**20:.0f} MiB input (output {nout / 2**20:.0f} MiB): input + growth = "
        f"{ratio:.3f} x (input + output), target <= 1.10"
    )


def compile_case(threads: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {"TORCHINDUCTOR_CACHE_DIR": cache}
        first = child(COMPILE_CHILD.format(threads=threads), env)
        second = child(COMPILE_CHILD.format(threads=threads), env)
    if not (first and second):
        return
    (cold, cold_next), (warm, warm_next) = first, second
    print(
        f"\ncompile cost (1024² Sobel magnitude, fresh processes): first call with an empty "
        f"inductor cache {cold:.1f} s, first call of the next process (on-disk FX graph cache) "
        f"{warm:.1f} s, then {1e3 * min(cold_next, warm_next):.2f} ms per call"
    )


def cuda_case(repeats: int) -> None:
    if not torch.cuda.is_available():
        print("\nCUDA: no GPU here; the 8 x 4096² case runs where one is present")
        return
    x = torch.rand(8, 1, 4096, 4096, device="cuda")
    y = torch.empty_like(x)

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    t = timed(lambda: imgrad.gradient_magnitude(x))
    copy = timed(lambda: y.copy_(x))
    moved = 2 * x.nbytes
    print(
        f"\nCUDA {torch.cuda.get_device_name()}: Sobel magnitude of 8 x 4096² float32 in "
        f"{1e3 * t:.2f} ms = {moved / t / 1e9:.0f} GB/s; device copy {moved / copy / 1e9:.0f} "
        f"GB/s; imgrad reaches {copy / t:.0%} of the copy bandwidth (target >= 60%)"
    )


def canny_case() -> None:
    script = HERE / "bench_canny.py"
    if not script.exists():
        print("\nCanny: benchmarks/bench_canny.py is not there yet (written separately)")
        return
    print("\nCanny (benchmarks/bench_canny.py --sizes 2048 --repeats 3 --limit 2 --no-kornia):")
    args = ["--sizes", "2048", "--repeats", "3", "--limit", "2", "--no-kornia"]
    subprocess.run([sys.executable, str(script), *args], check=False)


OPENCV_LOOP = """
import sys, time
from pathlib import Path
import cv2
cv2.setNumThreads({threads})
start = time.perf_counter()
src, out = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(src.iterdir()):
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    edges = cv2.convertScaleAbs(cv2.magnitude(gx, gy), alpha=0.25)
    cv2.imwrite(str(out / (path.stem + ".png")), edges)
print(time.perf_counter() - start)
"""


def cli_case(count: int, size: int, threads: int) -> None:
    """``imgrad sobel DIR OUT`` over ``count`` JPEGs vs a plain OpenCV read/Sobel/write loop,
    both run as commands (interpreter start and imports included), and their steady rates."""
    exe = shutil.which("imgrad")
    if cv2 is None or not IMAGES.is_dir():
        print("\nCLI: skipped (needs OpenCV and the sample photographs)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        src, out_cli, out_cv = Path(tmp, "in"), Path(tmp, "cli"), Path(tmp, "cv")
        for d in (src, out_cli, out_cv):
            d.mkdir()
        photos = [cv2.imread(str(p)) for p in sorted(IMAGES.iterdir())]
        photos = [cv2.resize(p, (size, size)) for p in photos if p is not None]
        for i in range(count):
            cv2.imwrite(str(src / f"{i:04d}.jpg"), np.roll(photos[i % len(photos)], i, axis=1))
        script = Path(tmp, "opencv_loop.py")
        script.write_text(OPENCV_LOOP.format(threads=threads))

        def command(args: list[str]) -> tuple[float, str]:
            start = time.perf_counter()
            env = {k: v for k, v in os.environ.items() if k != "IMGRAD_COMPILE"}  # the default
            done = subprocess.run(args, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-300:])
            return time.perf_counter() - start, done.stdout

        label = f"\nCLI over {count} JPEGs of {size}² to PNG (whole commands, start-up included):"
        t_cv, out = command([sys.executable, str(script), str(src), str(out_cv)])
        cv_loop = float(out)
        if exe is None:
            print(f"{label} OpenCV loop {t_cv:.2f} s; `imgrad` is not installed, CLI skipped")
            return
        try:
            t_cli, out = command([exe, "sobel", str(src), str(out_cli), "--json"])
        except RuntimeError as error:
            print(f"{label} `imgrad sobel` failed: {error}; skipped")
            return
        cli_loop = float(json.loads(out)["seconds"])
        print(
            f"{label} imgrad sobel {t_cli:.2f} s, OpenCV loop script {t_cv:.2f} s: ratio "
            f"{t_cli / t_cv:.2f}\n  steady rate (start-up and imports excluded): imgrad "
            f"{count / cli_loop:.0f} files/s, OpenCV {count / cv_loop:.0f} files/s; start-up: "
            f"imgrad {t_cli - cli_loop:.2f} s (Python + import torch), "
            f"OpenCV {t_cv - cv_loop:.2f} s"
        )
        scratch = Path(tmp, "scratch")
        scratch.mkdir()
        print(per_file_costs(src, out_cli, scratch))


def per_file_costs(src: Path, edges: Path, scratch: Path) -> str:
    """What each side spends per file on one thread, one file at a time (the CLI overlaps
    these on threads; the OpenCV loop runs them in turn): read, compute, write."""
    from imgrad import io as image_io

    sources = sorted(src.iterdir())
    outputs = [image_io.read_image(p) for p in sorted(edges.glob("*.png"))]
    pictures = [image_io.read_image(p) for p in sources]
    greys = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sources]
    batches = [pictures[i : i + 16] for i in range(0, len(pictures), 16)]  # the CLI's default
    recipe = imgrad.Recipe()

    def per_file(fn: Callable[[int, Any], Any], items: list[Any]) -> float:
        start = time.perf_counter()
        for i, item in enumerate(items):
            fn(i, item)
        return 1e3 * (time.perf_counter() - start) / len(sources)

    def opencv_compute(grey: np.ndarray) -> np.ndarray:
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        return cv2.convertScaleAbs(cv2.magnitude(gx, gy), alpha=0.25)

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        mine = (
            per_file(lambda i, p: image_io.read_image(p), sources),
            per_file(lambda i, batch: recipe.apply(np.stack(batch)), batches),
            per_file(lambda i, a: image_io.write_image(scratch / f"i{i}.png", a), outputs),
        )
        theirs = (
            per_file(lambda i, p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), sources),
            per_file(lambda i, grey: opencv_compute(grey), greys),
            per_file(lambda i, a: cv2.imwrite(str(scratch / f"c{i}.png"), a[0]), outputs),
        )
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    parts = " + ".join
    return (
        "  per file on one thread (read + compute + write = ms): imgrad "
        f"{parts(f'{t:.2f}' for t in mine)} = {sum(mine):.2f} (RGB decode, batches of 16, "
        f"atomic write with fsync); OpenCV {parts(f'{t:.2f}' for t in theirs)} = "
        f"{sum(theirs):.2f} (grey decode, plain write)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="only the in-process cases")
    parser.add_argument("--jpegs", type=int, default=500, help="images for the CLI case")
    args = parser.parse_args()
    # steady-state figures: compile at the first call (the default, auto, waits until enough
    # work has gone through; the CLI case below runs with the default)
    os.environ.setdefault("IMGRAD_COMPILE", "1")
    torch.set_num_threads(args.threads)
    if cv2 is not None:
        cv2.setNumThreads(args.threads)
    print(machine())
    gen = torch.Generator().manual_seed(0)
    big = torch.rand(4096, 4096, generator=gen)
    rows = {
        "sobel magnitude f32 1024²": magnitude_case(big[:1024, :1024].clone(), args.repeats),
        "sobel magnitude f32 4096²": magnitude_case(big, args.repeats),
        "sobel magnitude u8 4096²": magnitude_case((big * 255).to(torch.uint8), args.repeats),
        "sobel magnitude f32 64x512²": magnitude_case(
            big.reshape(64, 1, 512, 512).clone(), args.repeats
        ),
        "scharr magnitude f32 4096²": magnitude_case(big, args.repeats, scharr=True),
        "gradient (torch.gradient) 4096²": gradient_case(big, args.repeats),
    }
    print_table(rows)
    print_table(rows, best=True)
    print("conv2d = plain PyTorch (reflect pad + one conv2d with both kernels + sqrt)")
    print("gradient row: floor = two copies (two outputs); peers: torch.gradient, numpy.gradient")
    cuda_case(args.repeats)
    if args.quick:
        return
    memory_case(args.threads, 16384)
    compile_case(args.threads)
    canny_case()
    cli_case(args.jpegs, 256, args.threads)


if __name__ == "__main__":
    main()
