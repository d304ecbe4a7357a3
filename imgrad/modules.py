"""``nn.Module`` wrappers: each forward is one call to the same core as the matching function.

The stencil taps are non-persistent buffers: ``parameters()`` and ``state_dict()`` are empty,
``.to(device)`` moves them, and the forward pass really computes with them (bit-identical to the
function). Every option is checked when the module is built, not at the first forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from . import thresholds
from ._input import check_choice, real_number
from .gradients import (
    NORMS,
    Gradients,
    GradientSpec,
    SecondDerivatives,
    first_order,
    orientation,
    second_order,
)

__all__ = [
    "CentralDifference",
    "ForwardDifference",
    "GradientMagnitude",
    "Hessian",
    "HysteresisThreshold",
    "Laplacian",
    "Orientation",
    "Prewitt",
    "Scharr",
    "Sobel",
    "SpatialGradient",
    "Threshold",
]


class _StencilModule(nn.Module):
    """Holds a validated :class:`GradientSpec` and its taps as non-persistent buffers."""

    def __init__(self, operator: str, **options: Any) -> None:
        super().__init__()
        self.spec = GradientSpec.build(operator, **options)
        op = self.spec.op
        stencils = {"derivative": op.derivative, "smoothing": op.smoothing, "second": op.second}
        for name, stencil in stencils.items():
            if stencil is not None:
                self.register_buffer(f"{name}_taps", torch.tensor(stencil.taps), persistent=False)

    def taps(self) -> dict[str, torch.Tensor]:
        return {n[: -len("_taps")]: b for n, b in self.named_buffers() if n.endswith("_taps")}

    def extra_repr(self) -> str:
        s = self.spec
        size = f", ksize={len(s.op.smoothing.taps)}" if s.op.name == "sobel" else ""
        return (
            f"operator={s.op.name!r}{size}, border={s.border!r}, normalized={s.normalized}, "
            f"color={s.color!r}"
        )


class SpatialGradient(_StencilModule):
    """Module form of :func:`imgrad.spatial_gradient`; returns ``Gradients(gy, gx)``."""

    def __init__(self, operator: str = "sobel", **options: Any) -> None:
        super().__init__(operator, **options)

    def forward(self, image: torch.Tensor) -> Gradients:
        return first_order(image, self.spec, taps=self.taps())


class Sobel(SpatialGradient):
    """Sobel derivatives as a module (``ksize`` 1, 3, 5 or 7)."""

    def __init__(self, ksize: int = 3, **options: Any) -> None:
        super().__init__("sobel", ksize=ksize, **options)


class Scharr(SpatialGradient):
    """Scharr derivatives as a module."""

    def __init__(self, **options: Any) -> None:
        super().__init__("scharr", **options)


class Prewitt(SpatialGradient):
    """Prewitt derivatives as a module."""

    def __init__(self, **options: Any) -> None:
        super().__init__("prewitt", **options)


class CentralDifference(SpatialGradient):
    """Central differences ``(f[i+1] - f[i-1]) / 2`` as a module."""

    def __init__(self, **options: Any) -> None:
        super().__init__("central", **options)


class ForwardDifference(SpatialGradient):
    """Forward differences ``f[i+1] - f[i]`` as a module."""

    def __init__(self, **options: Any) -> None:
        super().__init__("forward", **options)


class Hessian(_StencilModule):
    """Module form of :func:`imgrad.second_derivatives`: ``SecondDerivatives(gyy, gxy, gxx)``."""

    def __init__(self, operator: str = "sobel", **options: Any) -> None:
        super().__init__(operator, **options)
        if self.spec.op.second is None or self.spec.color == "max":
            second_order(torch.zeros(8, 8), self.spec)  # raises the function's own error

    def forward(self, image: torch.Tensor) -> SecondDerivatives:
        return second_order(image, self.spec, taps=self.taps())


class Laplacian(Hessian):
    """Module form of :func:`imgrad.laplacian` (``cv2.Laplacian`` with the same ``ksize``)."""

    def __init__(self, ksize: int = 1, **options: Any) -> None:
        super().__init__("sobel", ksize=ksize, **options)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        gyy, _, gxx = second_order(image, self.spec, taps=self.taps())
        return gxx + gyy


class GradientMagnitude(nn.Module):
    """Image → gradient magnitude tensor, for ``nn.Sequential`` and losses.

    ``GradientMagnitude("sobel", norm="l2")(x) == imgrad.gradient_magnitude(x, "sobel")``.
    """

    def __init__(self, operator: str = "sobel", *, norm: str = "l2", **options: Any) -> None:
        super().__init__()
        self.gradient = SpatialGradient(operator, **options)
        self.norm = check_choice(norm, "norm", NORMS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        gradient = self.gradient
        return first_order(image, gradient.spec, taps=gradient.taps(), norm=self.norm)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}"


class Orientation(nn.Module):
    """``Gradients`` → orientation, as :func:`imgrad.orientation` (whose ONNX models do not run
    in onnxruntime: no float64 ``Atan`` kernel there)."""

    def __init__(self, *, degrees: bool = False, signed: bool = False) -> None:
        super().__init__()
        for name, value in (("degrees", degrees), ("signed", signed)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.degrees = degrees
        self.signed = signed

    def forward(self, gradients: Gradients) -> torch.Tensor:
        return orientation(gradients, degrees=self.degrees, signed=self.signed)

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, signed={self.signed}"


# --------------------------------------------------------------------------- threshold stage


def _threshold_value(value: Any, name: str) -> Any:
    """A threshold checked when a module is built: a number, or one per image (no NaN)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if torch.isnan(torch.as_tensor(value, dtype=torch.float64)).any():
            raise ValueError(f"{name} must not be NaN")
        return value
    return real_number(value, name)


class Threshold(nn.Module):
    """Boolean mask of a magnitude map: one of the threshold stage's rules, as a module.

    ``Threshold(value=v)`` is :func:`imgrad.thresholds.threshold` (``x > v``),
    ``Threshold(ratio=r)`` is :func:`~imgrad.thresholds.threshold_relative` (``x > r * max``) and
    ``Threshold(otsu=True)`` is :func:`~imgrad.thresholds.threshold_otsu`; exactly one of them.
    Each has its function's limitations (``otsu=True``: no fullgraph compile, export, ONNX, vmap
    or meta tensors; input without pixels raises ``ValueError``).
    """

    def __init__(
        self, value: float | None = None, *, ratio: float | None = None, otsu: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(otsu, bool):
            raise TypeError(f"otsu must be True or False, got {otsu!r}")
        if (value is not None) + (ratio is not None) + otsu != 1:
            raise ValueError("give exactly one of value=, ratio= or otsu=True")
        self.value = None if value is None else _threshold_value(value, "value")
        self.ratio = None if ratio is None else _threshold_value(ratio, "ratio")
        self.otsu = otsu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.value is not None:
            return thresholds.threshold(x, self.value)
        if self.ratio is not None:
            return thresholds.threshold_relative(x, self.ratio)
        return thresholds.threshold_otsu(x)

    def extra_repr(self) -> str:
        if self.value is not None:
            return f"value={self.value}"
        return f"ratio={self.ratio}" if self.ratio is not None else "otsu=True"


class HysteresisThreshold(nn.Module):
    """:func:`imgrad.thresholds.hysteresis_threshold` as a module, with its limitations (no
    fullgraph compile, export, ONNX, vmap or meta tensors)."""

    def __init__(self, low: float, high: float, connectivity: int = 8) -> None:
        super().__init__()
        if connectivity not in (4, 8) or isinstance(connectivity, bool):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        self.low, self.high = real_number(low, "low"), real_number(high, "high")
        if self.low > self.high:
            raise ValueError(f"low must not exceed high; got low={low!r}, high={high!r}")
        self.connectivity = int(connectivity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return thresholds.hysteresis_threshold(x, self.low, self.high, self.connectivity)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}, connectivity={self.connectivity}"
