"""Where imgrad's buffers come from: fresh outputs (with huge pages once a process computes
repeatedly), reused per-thread scratch, and chunks for chains of elementwise passes.

On this project's machines the cost of large buffers is in the first touch of their pages, not
in the arithmetic: a fresh 64 MiB ``torch.empty`` takes ~16k page faults to fill, more than a
whole gradient map. Outputs, which belong to the caller, come from :func:`empty`; temporaries
that live only inside one call come from :func:`scratch`, which keeps its buffers between
calls, and where they are a chain of elementwise passes, in chunks of :data:`CHUNK_ELEMENTS`.
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import torch

__all__ = ["CHUNK_ELEMENTS", "empty", "scratch"]

#: Elements per chunk of a chain of elementwise passes over a large array (4-8 MiB): each chain
#: runs on data still in cache, and its temporaries come from one reused :func:`scratch` buffer
#: instead of full-size fresh ones.
CHUNK_ELEMENTS = 1 << 20


#: Buffers of this many bytes or more are the ones numpy backs with huge pages.
HUGE_PAGE_BYTES = 1 << 22
#: How many such buffers a process takes from ordinary pages before huge pages (see :func:`empty`).
ORDINARY_PAGES_FIRST = 4
_large_outputs = itertools.count()


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output; on the CPU, once the process has made a few large ones, from
    numpy, which backs large buffers with huge pages.

    A buffer's cost is in the first touch of its pages. Huge pages (``MADV_HUGEPAGE``) are
    cheapest where they are reused, in a process that computes again and again: a 4096²
    float32 Sobel magnitude takes 8 ms there with them, 22 ms without (torch's 16k page
    faults, on 2 threads of this project's reference machine). But pages a process touches for
    the first time can cost far more in 2 MiB units: on that machine (a VM) the first
    large outputs of a fresh process cost up to 150 ms more each with huge pages, and
    ``imgrad sobel`` on one 4096² photograph took 1.17-1.36 s instead of 1.11-1.19. So the
    first :data:`ORDINARY_PAGES_FIRST` large buffers of a process, all a one-image command
    needs, come from ``torch.empty``; later ones (a loop, a directory run) from numpy.
    """
    if device.type == "cpu" and dtype != torch.bfloat16:
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        large = math.prod(shape) * np_dtype.itemsize >= HUGE_PAGE_BYTES
        if not large or next(_large_outputs) >= ORDINARY_PAGES_FIRST:
            return torch.from_numpy(np.empty(shape, dtype=np_dtype))
    return torch.empty(shape, dtype=dtype, device=device)


_SCRATCH = threading.local()


def scratch(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """An uninitialised tensor from a buffer kept between calls, per thread, ``name``, dtype and
    device; the largest asked for so far is kept. For temporaries that never leave the call:
    the next call with the same ``name`` in this thread overwrites it.

    Allocated afresh, such a buffer would come straight from the OS and pay a page fault per
    4 KiB at first touch (15 ms for the 64 MiB of Canny's state grid at 4096², half of OpenCV's
    whole Canny; 2 ms for the border bands of a 64 x 512² batch).
    """
    numel = math.prod(shape)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (name, dtype, device)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = buffers[key] = torch.empty(numel, dtype=dtype, device=device)
    return buffer[:numel].view(shape)
