"""Input coercion shared by every public function: containers, ranks, dtypes, validation.

Rules (stated once, documented in the README):

- Accepted containers: ``torch.Tensor``, ``numpy.ndarray`` and ``PIL.Image.Image``. Tensors come
  back as tensors and arrays as arrays (same layout rules as tensors). A PIL image is read as a
  ``(C, H, W)`` tensor and results come back as tensors: an image file cannot hold signed floats.
- Layouts: ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``; results keep the input's rank.
- dtypes: floating inputs keep their dtype; float16/bfloat16 are computed in float32 and rounded
  once at the end. Integer inputs never wrap: uint8/int8/int16/uint16 are computed in and returned
  as float32, int32/int64 in float64. Raw responses are exact integers for 8-bit data with every
  operator, and for 16-bit data with every operator but Sobel 7, whose largest responses (up to
  20 * 64 * 65535 ≈ 8.4e7) pass float32's 2**24 and are rounded (relative error ≤ 6e-8).
  bool and complex are rejected with ``TypeError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["Prepared", "prepare", "compute_dtype"]

#: What counts as a number in an option: Python and numpy integers and floats, never a bool.
REAL_TYPES = (int, float, np.integer, np.floating)

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SMALL_INT = (torch.uint8, torch.int8, torch.int16, torch.uint16)
_LARGE_INT = (torch.int32, torch.int64, torch.uint32, torch.uint64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype imgrad computes in for an input of ``dtype``."""
    if dtype in (torch.float64, *_LARGE_INT):
        return torch.float64
    if dtype in _FLOAT or dtype in _SMALL_INT:
        return torch.float32
    if dtype == torch.bool:
        raise TypeError("bool images are not supported; convert the mask to uint8 or float first")
    if dtype.is_complex:
        raise TypeError(f"complex images are not supported (got {dtype})")
    raise TypeError(f"unsupported dtype {dtype}")


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a result for an input of ``dtype``: floats kept, integers promoted."""
    return dtype if dtype in _FLOAT else compute_dtype(dtype)


class Prepared:
    """An input brought to ``(N, C, H, W)`` in its compute dtype, and the way back."""

    def __init__(self, image: torch.Tensor, rank: int, kind: str, out_dtype: torch.dtype):
        self.image = image
        self.rank = rank
        self.kind = kind
        self.out_dtype = out_dtype

    def restore(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> Any:
        """Bring an ``(N, C', H', W')`` result back to the input's rank and container."""
        t = t.to(dtype or self.out_dtype)
        if self.rank == 2:
            t = t[0, 0]
        elif self.rank == 3:
            t = t[0]
        return t.numpy(force=True) if self.kind == "numpy" else t


def native_order(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order, which torch needs (big-endian FITS or TIFF data,
    PIL's I;16B); unchanged, not copied, if it already is."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def to_tensor(image: Any, name: str) -> tuple[torch.Tensor, str]:
    if isinstance(image, torch.Tensor):
        return image, "tensor"
    if isinstance(image, np.ndarray):
        if image.dtype == np.bool_:
            raise TypeError(f"{name}: bool images are not supported; convert to uint8 or float")
        if image.dtype.kind == "c":
            raise TypeError(f"{name}: complex images are not supported (got {image.dtype})")
        if image.dtype.kind not in "uif":
            raise TypeError(f"{name}: unsupported numpy dtype {image.dtype}")
        array = np.ascontiguousarray(native_order(image))
        if not array.flags.writeable:  # torch warns on read-only memory (np.broadcast_to, ...)
            array = array.copy()
        return torch.from_numpy(array), "numpy"
    from PIL import Image

    if isinstance(image, Image.Image):
        from .io import pillow_direct

        # palette, CMYK, bilevel, ...: the picture's values, not palette indices or raw bands
        im = pillow_direct(image, name)
        array = native_order(np.array(im))  # a writable copy (np.asarray's is read-only)
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        return torch.from_numpy(np.ascontiguousarray(array)), "pil"
    raise TypeError(
        f"{name} must be a torch.Tensor, numpy.ndarray or PIL.Image.Image, "
        f"got {type(image).__name__}"
    )


def prepare(
    image: Any,
    *,
    min_size: int = 1,
    name: str = "image",
    nan_policy: str = "propagate",
    cast: bool = True,
) -> Prepared:
    """Validate ``image`` and return it as ``(N, C, H, W)`` in its compute dtype (in its own
    dtype with ``cast=False``, for a caller that converts it on the way, as the luminance does).

    ``min_size`` is the smallest height and width the caller's stencil accepts.
    """
    t, kind = to_tensor(image, name)
    if t.dim() not in (2, 3, 4):
        raise ValueError(
            f"{name} must have shape (H, W), (C, H, W) or (N, C, H, W); got {tuple(t.shape)}"
        )
    cdtype = compute_dtype(t.dtype)
    out_dtype = result_dtype(t.dtype)
    h, w = t.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(
            f"{name} of size {h}x{w} is too small: this stencil needs at least "
            f"{min_size}x{min_size} pixels"
        )
    if nan_policy not in ("propagate", "raise"):
        raise ValueError(f"nan_policy must be 'propagate' or 'raise', got {nan_policy!r}")
    if nan_policy == "raise" and t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name} contains {int(torch.isnan(t).sum())} NaN value(s)")
    rank = t.dim()
    t4 = t.reshape((1,) * (4 - rank) + tuple(t.shape)) if rank < 4 else t
    return Prepared(t4.to(cdtype) if cast else t4, rank, kind, out_dtype)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy scalar), bools excluded."""
    return isinstance(value, REAL_TYPES) and not isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy scalar), bools excluded."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def real_number(value: Any, name: str) -> float:
    """``value`` as a float; ``TypeError`` unless it is a real number, ``ValueError`` if NaN."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must not be NaN")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; else raise ``ValueError`` quoting it."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
