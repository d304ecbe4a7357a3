"""Time imgrad.canny against cv2.Canny and kornia.filters.canny (a script, not a test).

Run: ``python benchmarks/bench_canny.py [--sizes 2048 4096] [--repeats 5]``. Prints one row per
photograph and size with the median time of each library after a warm-up (cv2 and imgrad called
in turn), the median of the round-by-round ratios imgrad/cv2, and kornia/imgrad (kornia is timed
once per image, it takes seconds; a size where it would take over 60 s, judged from the previous
size, is skipped and marked so), then the hysteresis worst case (a 1-pixel spiral), with the
native kernel and on the torch path (``IMGRAD_NATIVE=0``), then images/s for a CUDA batch when a
GPU is present. Both libraries run with 2 threads, interleaved in the same process: compare the
ratios, the absolute times depend on the machine's load. The first imgrad call per image size
compiles its strip kernel (``torch.compile``); its cost is printed once per size ("compile s").
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import imgrad
from imgrad import _native
from imgrad.thresholds import hysteresis_threshold

IMAGES = Path(__file__).resolve().parents[1] / "sample_images"


def spiral(n: int) -> np.ndarray:
    """A 1-pixel-thick square spiral filling an n x n image: one path of about n²/2 pixels."""
    img = np.zeros((n, n), bool)
    k = 0
    while 2 * k <= n - 1 - 2 * k:
        top, bottom, right = 2 * k, n - 1 - 2 * k, n - 1 - 2 * k
        img[top, max(2 * k - 2, 0) : right + 1] = True
        img[top : bottom + 1, right] = True
        img[bottom, 2 * k : right + 1] = True
        img[top + 2 : bottom + 1, 2 * k] = True
        k += 1
    return img


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns, repeats: int) -> list[list[float]]:
    """Times of each function, called in turn ``repeats`` times after one warm-up round: the
    machine's load drifts alike for all of them, so compare ratios taken round by round."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, row in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            row.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(IMAGES), help="folder of photographs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photographs")
    parser.add_argument("--no-kornia", action="store_true", help="skip kornia (slow)")
    args = parser.parse_args()
    os.environ.setdefault("IMGRAD_COMPILE", "1")  # steady state: compile at the first call

    import cv2

    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    print(
        f"torch {torch.__version__} threads={torch.get_num_threads()} "
        f"({torch.backends.cpu.get_cpu_capability()}), "
        f"cv2 {cv2.__version__} threads={cv2.getNumThreads()}, "
        f"native hysteresis {'on' if _native.enabled() else 'off'}"
    )
    kornia = None
    if not args.no_kornia:
        try:
            import kornia
        except ImportError:
            print("kornia not installed: its column is skipped")

    files = sorted(glob.glob(f"{args.images}/*.png") + glob.glob(f"{args.images}/*.jpg"))[
        : args.limit
    ]
    compiled: set[int] = set()
    kornia_estimate: dict[int, float] = {}
    header = f"{'image':<14}{'size':>6}{'cv2 ms':>10}{'imgrad ms':>11}{'kornia ms':>11}"
    print(header + f"{'imgrad/cv2':>12}{'kornia/imgrad':>15}")
    for path in files:
        gray = np.asarray(Image.open(path).convert("L"))
        for size in args.sizes:
            img = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
            tensor = torch.from_numpy(img)
            if size not in compiled:
                start = time.perf_counter()
                imgrad.canny(tensor, 100, 200)
                print(f"(first call at {size}², compile s: {time.perf_counter() - start:.1f})")
                compiled.add(size)
            cv_times, im_times = interleaved(
                [
                    lambda img=img: cv2.Canny(img, 100, 200),
                    lambda t=tensor: imgrad.canny(t, 100, 200),
                ],
                args.repeats,
            )
            t_cv, t_im = statistics.median(cv_times), statistics.median(im_times)
            ratio = statistics.median(b / a for a, b in zip(cv_times, im_times, strict=True))
            t_ko = float("nan")
            if kornia is not None and kornia_estimate.get(size, 0.0) > 60:
                print(
                    f"  kornia skipped at {size}²: estimated {kornia_estimate[size]:.0f} s > 60 s"
                )
            elif kornia is not None:
                x = tensor.float().div(255)[None, None]
                # kornia's thresholds are on its magnitude of [0, 1] data: 100/255, 200/255.
                with torch.no_grad():
                    t_ko = median_time(
                        lambda x=x: kornia.filters.canny(x, 100 / 255, 200 / 255), 1, warmup=0
                    )
                kornia_estimate[2 * size] = 4 * t_ko  # linear in the pixel count
            print(
                f"{Path(path).stem:<14}{size:>6}{t_cv * 1e3:>10.1f}{t_im * 1e3:>11.1f}"
                f"{t_ko * 1e3:>11.0f}{ratio:>12.2f}{t_ko / t_im:>15.1f}"
            )

    print("\nhysteresis on a 1-pixel spiral (one path of n²/2 pixels, one strong end):")
    native = os.environ.get("IMGRAD_NATIVE")
    for n in (1024, 2048):
        x = torch.from_numpy(spiral(n).astype(np.float32))
        x[0, 0] = 2.0
        row = f"  {n}x{n}:"
        for flag, name in (("1", "native"), ("0", "torch path")):
            if flag == "1" and not _native.available():
                row += " native not built,"
                continue
            os.environ["IMGRAD_NATIVE"] = flag
            t = median_time(lambda x=x: hysteresis_threshold(x, 0.5, 1.5), 3)
            row += f" {t * 1e3:.1f} ms {name},"
        print(f"{row} pixels on the path: {int((x > 0.5).sum())}")
    if native is None:
        os.environ.pop("IMGRAD_NATIVE")
    else:
        os.environ["IMGRAD_NATIVE"] = native

    if torch.cuda.is_available():
        gray = np.asarray(Image.open(files[0]).convert("L"))
        img = torch.from_numpy(cv2.resize(gray, (1024, 1024))).cuda()
        batch = img.expand(32, 1, 1024, 1024).contiguous()

        def run() -> None:
            imgrad.canny(batch, 100, 200)
            torch.cuda.synchronize()

        t = median_time(run, args.repeats)
        print(f"\nCUDA {torch.cuda.get_device_name()}: batch 32x1024², {32 / t:.0f} images/s")
    else:
        print("\nCUDA: not available")


if __name__ == "__main__":
    main()
