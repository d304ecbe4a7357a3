"""Where imgrad's buffers come from: fresh outputs with huge pages, reused per-thread scratch.

On this project's machines the cost of large buffers is in the first touch of their pages, not
in the arithmetic: a fresh 64 MiB ``torch.empty`` takes ~16k page faults to fill, more than a
whole gradient map. Outputs, which belong to the caller, are therefore allocated through numpy
(whose large buffers are ``MADV_HUGEPAGE``), and temporaries that live only inside one call
come from :func:`scratch`, which keeps its buffers between calls.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

__all__ = ["empty", "scratch"]


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output; on the CPU from numpy, whose large buffers use huge pages.

    Writing a fresh 64 MiB tensor from ``torch.empty`` costs ~16k page faults, more than the
    whole computation; numpy marks large allocations ``MADV_HUGEPAGE`` (4x faster to fill here).
    """
    if device.type == "cpu" and dtype != torch.bfloat16:
        return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))
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
