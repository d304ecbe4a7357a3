"""When imgrad compiles its fused kernels with ``torch.compile``: one policy for every kernel.

Compiling costs seconds (about 3 s per kernel here even when inductor's on-disk cache already
holds it, 8 s cold), which a command on one image or a short script never earns back. So the
default, ``IMGRAD_COMPILE=auto``, is the ski-rental rule: each kernel family runs eagerly (the
same numbers, a few times slower) until its process has pushed enough pixels through it that the
extra eager time is about one compile (:data:`AUTO_AFTER_PIXELS`, or the family's own figure),
and is compiled from then on. A long batch or a training loop therefore ends up compiled, while
``imgrad sobel in.png out.png`` never waits for a compiler. ``IMGRAD_COMPILE=1`` compiles at the
first call (benchmarks, long-lived services), ``IMGRAD_COMPILE=0`` never compiles. A compiler
failure warns once and the family stays eager.
"""

from __future__ import annotations

import hashlib
import os
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["AUTO_AFTER_PIXELS", "CompilePolicy", "inductor_options", "own_code", "standalone"]

#: Pixels a kernel family runs eagerly before ``auto`` compiles it, unless the family sets its own
#: (:class:`CompilePolicy`'s ``after_pixels``): eager cost ~3 ns/pixel more than compiled on this
#: project's 2-core reference machine when this was set, so 2**30 pixels ≈ 3 s.
AUTO_AFTER_PIXELS = 1 << 30
MODES = ("auto", "0", "1")


class CompilePolicy:
    """Decides, call by call, whether one family of kernels runs compiled: under ``auto``, once
    ``after_pixels`` pixels went through it eagerly (set so that their extra eager time is about
    one compile's)."""

    def __init__(self, name: str, after_pixels: int = AUTO_AFTER_PIXELS) -> None:
        self.name = name
        self.after_pixels = after_pixels
        self.eager_pixels = 0
        self.failed = False

    def compiles(self) -> bool:
        """Whether calls run compiled now (nothing is counted)."""
        if self.failed or torch.compiler.is_compiling():
            return False
        mode = os.environ.get("IMGRAD_COMPILE") or "auto"  # unset or empty: auto
        if mode not in MODES:
            raise ValueError(f"IMGRAD_COMPILE must be one of {', '.join(MODES)}; got {mode!r}")
        if mode != "auto":
            return mode == "1"
        return self.eager_pixels >= self.after_pixels

    def wants(self, pixels: int) -> bool:
        """Whether a call over ``pixels`` pixels should run compiled (counting eager work)."""
        if self.compiles():
            return True
        self.eager_pixels += pixels
        return False

    def failure(self, error: Exception) -> None:
        """Record a compiler failure: one warning, eager from now on (same numbers, slower)."""
        self.failed = True
        warnings.warn(
            f"imgrad: torch.compile failed ({type(error).__name__}: {error}); {self.name} "
            "runs eagerly from now on (same numbers, slower)",
            RuntimeWarning,
            stacklevel=4,
        )


def standalone(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor of its own on the same memory, not a view: dynamo guards on the layout
    of a view's base (the caller's image), which differs from call to call."""
    return t.new_empty(0).set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


def own_code(function: Callable[..., Any], key: object) -> Callable[..., Any]:
    """A copy of ``function`` with a code object of its own, named after ``key``.

    Dynamo keeps its cache, and its limit of recompilations, per code object: without this,
    every plan compiled from the same ``def`` would share one limit, and compiling would stop
    silently after a handful of plans or image sizes. The name is a hash of ``key``, the same in
    every process, so inductor's on-disk cache finds the kernel again.
    """
    name = "imgrad_" + hashlib.sha1(repr(key).encode()).hexdigest()[:16]
    code = function.__code__.replace(co_name=name)
    return types.FunctionType(
        code, function.__globals__, name, function.__defaults__, function.__closure__
    )


def inductor_options(**wanted: Any) -> dict[str, Any]:
    """The inductor settings among ``wanted`` that this torch knows (others are dropped, so a
    renamed setting costs speed, never a failed compile)."""
    from torch._inductor import config  # imported only once something is compiled

    return {key: value for key, value in wanted.items() if hasattr(config, key)}
