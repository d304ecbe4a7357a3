"""Native kernels for sequential work torch cannot vectorise: hysteresis's flood fill.

``imgrad._hysteresis`` is a small C extension (``imgrad/_hysteresis.c``: the CPython C API and
the buffer protocol, no torch or numpy headers) that setuptools builds at install time as an
*optional* extension: an install on a machine without a C compiler still succeeds, and then
the torch path runs. Both paths give the same bits.

The native path is taken for plain CPU tensors; CUDA, meta and fake tensors, ``torch.compile``
and ``torch.jit`` tracing, ``torch.func`` transforms and tensors that record autograd keep the
torch path (:func:`applies`). ``IMGRAD_NATIVE=0`` turns the native kernels off (``1``, empty or
unset: on where built).
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

__all__ = ["applies", "available", "enabled", "hysteresis_grid", "hysteresis_masks"]

MODES = ("0", "1")
_NOT_LOADED = object()
_module: ModuleType | None | object = _NOT_LOADED


def _load() -> ModuleType | None:
    """The extension module, imported on first use; ``None`` if it was not built."""
    global _module
    if _module is _NOT_LOADED:
        try:
            from . import _hysteresis
        except ImportError:
            _module = None
        else:
            _module = _hysteresis
    return _module  # type: ignore[return-value]


def available() -> bool:
    """Whether the native extension was built and imports (whatever ``IMGRAD_NATIVE`` says)."""
    return _load() is not None


def enabled() -> bool:
    """Whether native kernels run: built, and not turned off by ``IMGRAD_NATIVE=0``."""
    mode = os.environ.get("IMGRAD_NATIVE") or "1"  # unset or empty: on
    if mode not in MODES:
        raise ValueError(f"IMGRAD_NATIVE must be one of {', '.join(MODES)}; got {mode!r}")
    return mode == "1" and available()


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the native kernels may take these tensors: plain CPU tensors whose values can be
    read as buffers, outside graph capture, transforms and autograd, with native kernels on."""
    for t in tensors:
        if type(t) is not torch.Tensor or t.device.type != "cpu" or t.requires_grad:
            return False  # subclasses (fake tensors), CUDA, meta; autograd records
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return False  # torch.func.vmap / grad
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return enabled()


def hysteresis_grid(grid: torch.Tensor, n: int, h: int, w: int, connectivity: int) -> torch.Tensor:
    """:func:`imgrad.thresholds.hysteresis_grid` natively: ``(N * H * W,)`` bool.

    ``grid`` is the flat zero-bordered ``(N, H+2, W+2)`` state grid (0 / 1 candidate / 2 seed,
    any integer dtype); the pixels reached are overwritten with 3.
    """
    out = torch.zeros(n * h * w, dtype=torch.bool)
    if not grid.is_contiguous():
        grid = grid.contiguous()
    _load().grid(grid.numpy(), out.numpy(), n, h, w, connectivity)  # type: ignore[union-attr]
    return out


def hysteresis_masks(
    candidates: torch.Tensor, strong: torch.Tensor, connectivity: int
) -> torch.Tensor:
    """:func:`imgrad.thresholds.hysteresis` natively, on ``(N, H, W)`` bool masks (a seed is a
    candidate that is strong). The inputs are only read."""
    n, h, w = candidates.shape
    out = torch.empty(n, h, w, dtype=torch.bool)  # written entirely by the kernel
    weak = candidates.to(torch.bool).contiguous()
    seed = strong.to(torch.bool).contiguous()
    _load().masks(  # type: ignore[union-attr]
        weak.numpy(), seed.numpy(), out.numpy(), n, h, w, connectivity
    )
    return out
