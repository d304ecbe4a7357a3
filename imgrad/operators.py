"""Derivative operators as data.

Every operator imgrad knows is a row in one table: a 1-D derivative stencil applied along the
derivative's axis and a 1-D smoothing stencil applied across it. The engine
(:mod:`imgrad.engine`) applies any such pair separably, so Sobel, Scharr and Prewitt differ only
in their taps::

    Sobel 3 (x derivative) = smoothing ⊗ derivative
        [1]                    [-1 0 1]        [-1  0  1]
        [2]  (rows)      ⊗     (columns)   =   [-2  0  2]
        [1]                                    [-1  0  1]

Taps are listed in cross-correlation order: ``taps[k]`` multiplies ``f[i + k - origin]``, so a
positive response means intensity grows towards +x (right) or +y (down).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

__all__ = ["OPERATORS", "Operator", "Stencil", "get_operator"]


@dataclass(frozen=True)
class Stencil:
    """A 1-D stencil: ``out[i] = sum_k taps[k] * f[i + k - origin]``."""

    taps: tuple[float, ...]
    origin: int

    @property
    def before(self) -> int:
        """Samples needed before ``i`` (the left/top halo)."""
        return self.origin

    @property
    def after(self) -> int:
        """Samples needed after ``i`` (the right/bottom halo)."""
        return len(self.taps) - 1 - self.origin

    def moment(self, order: int) -> float:
        """``sum_k taps[k] * offset_k**order / order!``: the response to ``x**order / order!``.

        Order 0 is the smoothing gain (response to a constant), order 1 the response to a unit
        ramp, order 2 the response to ``x**2 / 2``. Dividing by it turns a raw response into a
        true derivative per pixel.
        """
        factorial = 1 if order < 2 else 2
        return sum(t * (k - self.origin) ** order for k, t in enumerate(self.taps)) / factorial


def _centered(*taps: float) -> Stencil:
    return Stencil(tuple(float(t) for t in taps), len(taps) // 2)


def _binomial(n: int) -> tuple[int, ...]:
    return tuple(comb(n - 1, k) for k in range(n))


def _convolve(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            out[i + j] += ai * bj
    return tuple(out)


@dataclass(frozen=True)
class Operator:
    """A gradient operator: derivative and smoothing stencils (and optionally second-order taps).

    ``second`` is the second-derivative stencil used for xx/yy (with the same smoothing across);
    operators without one do not define second derivatives.
    """

    name: str
    derivative: Stencil
    smoothing: Stencil
    second: Stencil | None = None

    @property
    def radius(self) -> int:
        """Largest halo any of the stencils needs on any side."""
        stencils = [self.derivative, self.smoothing] + ([self.second] if self.second else [])
        return max(max(s.before, s.after) for s in stencils)


def _sobel(ksize: int) -> Operator:
    """OpenCV's ``getDerivKernels``: binomial smoothing, derivative = [-1, 0, 1] * binomial."""
    if ksize == 1:
        return Operator("sobel", _centered(-1, 0, 1), _centered(1), _centered(1, -2, 1))
    inner = _binomial(ksize - 2)
    return Operator(
        "sobel",
        _centered(*_convolve((-1, 0, 1), inner)),
        _centered(*_binomial(ksize)),
        _centered(*_convolve((1, -2, 1), inner)),
    )


SOBEL_KSIZES = (1, 3, 5, 7)

#: The fixed operators, by name. Sobel is built per kernel size by :func:`get_operator`.
OPERATORS: dict[str, Operator] = {
    "scharr": Operator("scharr", _centered(-1, 0, 1), _centered(3, 10, 3)),
    "prewitt": Operator("prewitt", _centered(-1, 0, 1), _centered(1, 1, 1)),
    "central": Operator("central", _centered(-0.5, 0, 0.5), _centered(1), _centered(1, -2, 1)),
    "forward": Operator("forward", Stencil((-1.0, 1.0), 0), _centered(1)),
}
OPERATOR_NAMES = ("sobel", *OPERATORS)


def get_operator(name: str, ksize: int = 3) -> Operator:
    """Look up an operator by name; ``ksize`` selects the Sobel aperture (1, 3, 5 or 7).

    Raises ``ValueError`` naming the bad value and the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"operator must be a str, got {type(name).__name__}")
    key = name.lower()
    if key == "sobel":
        if isinstance(ksize, bool) or ksize not in SOBEL_KSIZES:
            raise ValueError(f"ksize must be one of {SOBEL_KSIZES} for sobel, got {ksize!r}")
        return _sobel(int(ksize))
    if key not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; expected one of {', '.join(OPERATOR_NAMES)}")
    if ksize != 3:
        raise ValueError(f"ksize applies to sobel only; {key} has a fixed 3-tap stencil")
    return OPERATORS[key]
