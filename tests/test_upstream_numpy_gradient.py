"""numpy's ``TestGradient``, run on ``imgrad.gradient``.

Ported from numpy (BSD-3-Clause) ``numpy/lib/tests/test_function_base.py``, class
``TestGradient``, at tag v2.4.6 (commit b832a09cf2a169c833dd2371e7c07aa00b293242), the numpy
version installed here. Every test of the class is here, in upstream's order, except
``test_masked``: it checks that a masked array comes back as a masked array whose mask is not
aliased, and torch tensors have no masks.

``gradient`` below is a thin adapter from numpy's call to imgrad's: it makes a torch tensor of
the same array, passes numpy's positional spacings (``*varargs``) as ``spacing=`` (one number
for all axes, or one number or 1-D coordinate tensor per axis), ``axis=`` as ``dim=``, and
returns numpy arrays shaped as numpy returns them: a tuple, or the bare array when one axis is
differentiated (imgrad, as torch, always returns a tuple). It checks nothing itself, so each
error comes from imgrad.gradient. Where upstream calls ``np.gradient`` on the function under
test (``test_second_order_accurate``, ``test_return_type``) the adapter is called instead.
The assertions are upstream's. Deliberate differences are strict xfails whose reason quotes
``docs/gradient.md`` verbatim, with ``raises=`` naming the one failure expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.exceptions import AxisError
from numpy.testing import (
    assert_,
    assert_almost_equal,
    assert_array_equal,
    assert_equal,
    assert_raises,
    assert_raises_regex,
)

import imgrad

DOCS = Path(__file__).resolve().parent.parent / "docs" / "gradient.md"

# docs/gradient.md, "What differs", quoted verbatim by the strict xfails below
UINT8_DIFFERS = (
    "imgrad.gradient raises TypeError for uint8 and bool input, which torch.gradient refuses "
    "with RuntimeError, and numpy.gradient differentiates uint8 input in float64."
)
INT64_STEPS_DIFFER = (
    "imgrad.gradient takes the steps between int64 coordinates in int64, as torch.gradient "
    "does, so a step beyond the int64 range wraps around where numpy.gradient, which takes "
    "integer steps in float64, does not."
)
COUNT_DIFFERS = (
    "imgrad.gradient raises ValueError for a spacing list whose length differs from the number "
    "of differentiated dims, where numpy.gradient raises TypeError for the wrong number of "
    "spacing arguments."
)
MESSAGES_DIFFER = (
    "imgrad.gradient's error messages are its own and do not use numpy.gradient's wording."
)
DATETIME_DIFFERS = (
    "imgrad.gradient differentiates torch tensors, which have no datetime64 or timedelta64 "
    "dtype, so numpy.gradient's datetime64 and timedelta64 inputs have no imgrad.gradient "
    "equivalent."
)
FLOAT32_DIFFERS = (
    "imgrad.gradient gives float32 results for integer input, as torch.gradient does, where "
    "numpy.gradient computes them in float64."
)
QUOTED = [
    UINT8_DIFFERS,
    INT64_STEPS_DIFFER,
    COUNT_DIFFERS,
    MESSAGES_DIFFER,
    DATETIME_DIFFERS,
    FLOAT32_DIFFERS,
]


def _tensor(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a))  # a copy: writable, and array-likes too


def _spacing(v: Any) -> Any:
    """One of numpy's positional spacings: a number, or a tensor of its distances."""
    if np.ndim(v) == 0:
        return v[()] if isinstance(v, np.ndarray) else v
    return _tensor(v)


def gradient(f, *varargs, axis=None, edge_order=1):
    """numpy.gradient's call, made with imgrad.gradient on a tensor of the same array."""
    if not varargs:
        spacing: Any = 1
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        spacing = _spacing(varargs[0])  # one scalar for every axis
    else:
        spacing = [_spacing(v) for v in varargs]
    out = imgrad.gradient(_tensor(f), spacing=spacing, dim=axis, edge_order=edge_order)
    arrays = tuple(t.numpy() for t in out)
    return arrays[0] if len(arrays) == 1 else arrays


class TestGradient:
    def test_basic(self):
        v = [[1, 1], [3, 4]]
        x = np.array(v)
        dx = [np.array([[2.0, 3.0], [2.0, 3.0]]), np.array([[0.0, 0.0], [1.0, 1.0]])]
        assert_array_equal(gradient(x), dx)
        assert_array_equal(gradient(v), dx)

    @pytest.mark.xfail(strict=True, raises=AssertionError, reason=MESSAGES_DIFFER)
    def test_args(self):
        dx = np.cumsum(np.ones(5))
        dx_uneven = [1.0, 2.0, 5.0, 9.0, 11.0]
        f_2d = np.arange(25).reshape(5, 5)

        # distances must be scalars or have size equal to gradient[axis]
        gradient(np.arange(5), 3.0)
        gradient(np.arange(5), np.array(3.0))
        gradient(np.arange(5), dx)
        # dy is set equal to dx because scalar
        gradient(f_2d, 1.5)
        gradient(f_2d, np.array(1.5))

        gradient(f_2d, dx_uneven, dx_uneven)
        # mix between even and uneven spaces and
        # mix between scalar and vector
        gradient(f_2d, dx, 2)

        # 2D but axis specified
        gradient(f_2d, dx, axis=1)

        # 2d coordinate arguments are not yet allowed
        assert_raises_regex(
            ValueError, ".*scalars or 1d", gradient, f_2d, np.stack([dx] * 2, axis=-1), 1
        )

    @pytest.mark.xfail(strict=True, raises=ValueError, reason=COUNT_DIFFERS)
    def test_badargs(self):
        f_2d = np.arange(25).reshape(5, 5)
        x = np.cumsum(np.ones(5))

        # wrong sizes
        assert_raises(ValueError, gradient, f_2d, x, np.ones(2))
        assert_raises(ValueError, gradient, f_2d, 1, np.ones(2))
        assert_raises(ValueError, gradient, f_2d, np.ones(2), np.ones(2))
        # wrong number of arguments
        assert_raises(TypeError, gradient, f_2d, x)
        assert_raises(TypeError, gradient, f_2d, x, axis=(0, 1))
        assert_raises(TypeError, gradient, f_2d, x, x, x)
        assert_raises(TypeError, gradient, f_2d, 1, 1, 1)
        assert_raises(TypeError, gradient, f_2d, x, x, axis=1)
        assert_raises(TypeError, gradient, f_2d, 1, 1, axis=1)

    @pytest.mark.xfail(strict=True, raises=TypeError, reason=DATETIME_DIFFERS)
    def test_datetime64(self):
        # Make sure gradient() can handle special types like datetime64
        x = np.array(
            [
                "1910-08-16",
                "1910-08-11",
                "1910-08-10",
                "1910-08-12",
                "1910-10-12",
                "1910-12-12",
                "1912-12-12",
            ],
            dtype="datetime64[D]",
        )
        dx = np.array([-5, -3, 0, 31, 61, 396, 731], dtype="timedelta64[D]")
        assert_array_equal(gradient(x), dx)
        assert_(dx.dtype == np.dtype("timedelta64[D]"))

    # test_masked: left out, masked arrays (see the module docstring)

    def test_second_order_accurate(self):
        # Testing that the relative numerical error is less that 3% for
        # this example problem. This corresponds to second order
        # accurate finite differences for all interior and boundary
        # points.
        x = np.linspace(0, 1, 10)
        dx = x[1] - x[0]
        y = 2 * x**3 + 4 * x**2 + 2 * x
        analytical = 6 * x**2 + 8 * x + 2
        num_error = np.abs((gradient(y, dx, edge_order=2) / analytical) - 1)
        assert_(np.all(num_error < 0.03) == True)  # noqa: E712 - upstream's assertion

        # test with unevenly spaced
        rng = np.random.default_rng(0)
        x = np.sort(rng.random(10))
        y = 2 * x**3 + 4 * x**2 + 2 * x
        analytical = 6 * x**2 + 8 * x + 2
        num_error = np.abs((gradient(y, x, edge_order=2) / analytical) - 1)
        assert_(np.all(num_error < 0.03) == True)  # noqa: E712 - upstream's assertion

    def test_spacing(self):
        f = np.array([0, 2.0, 3.0, 4.0, 5.0, 5.0])
        f = np.tile(f, (6, 1)) + f.reshape(-1, 1)
        x_uneven = np.array([0.0, 0.5, 1.0, 3.0, 5.0, 7.0])
        x_even = np.arange(6.0)

        fdx_even_ord1 = np.tile([2.0, 1.5, 1.0, 1.0, 0.5, 0.0], (6, 1))
        fdx_even_ord2 = np.tile([2.5, 1.5, 1.0, 1.0, 0.5, -0.5], (6, 1))
        fdx_uneven_ord1 = np.tile([4.0, 3.0, 1.7, 0.5, 0.25, 0.0], (6, 1))
        fdx_uneven_ord2 = np.tile([5.0, 3.0, 1.7, 0.5, 0.25, -0.25], (6, 1))

        # evenly spaced
        for edge_order, exp_res in [(1, fdx_even_ord1), (2, fdx_even_ord2)]:
            res1 = gradient(f, 1.0, axis=(0, 1), edge_order=edge_order)
            res2 = gradient(f, x_even, x_even, axis=(0, 1), edge_order=edge_order)
            res3 = gradient(f, x_even, x_even, axis=None, edge_order=edge_order)
            assert_array_equal(res1, res2)
            assert_array_equal(res2, res3)
            assert_almost_equal(res1[0], exp_res.T)
            assert_almost_equal(res1[1], exp_res)

            res1 = gradient(f, 1.0, axis=0, edge_order=edge_order)
            res2 = gradient(f, x_even, axis=0, edge_order=edge_order)
            assert_(res1.shape == res2.shape)
            assert_almost_equal(res2, exp_res.T)

            res1 = gradient(f, 1.0, axis=1, edge_order=edge_order)
            res2 = gradient(f, x_even, axis=1, edge_order=edge_order)
            assert_(res1.shape == res2.shape)
            assert_array_equal(res2, exp_res)

        # unevenly spaced
        for edge_order, exp_res in [(1, fdx_uneven_ord1), (2, fdx_uneven_ord2)]:
            res1 = gradient(f, x_uneven, x_uneven, axis=(0, 1), edge_order=edge_order)
            res2 = gradient(f, x_uneven, x_uneven, axis=None, edge_order=edge_order)
            assert_array_equal(res1, res2)
            assert_almost_equal(res1[0], exp_res.T)
            assert_almost_equal(res1[1], exp_res)

            res1 = gradient(f, x_uneven, axis=0, edge_order=edge_order)
            assert_almost_equal(res1, exp_res.T)

            res1 = gradient(f, x_uneven, axis=1, edge_order=edge_order)
            assert_almost_equal(res1, exp_res)

        # mixed
        res1 = gradient(f, x_even, x_uneven, axis=(0, 1), edge_order=1)
        res2 = gradient(f, x_uneven, x_even, axis=(1, 0), edge_order=1)
        assert_array_equal(res1[0], res2[1])
        assert_array_equal(res1[1], res2[0])
        assert_almost_equal(res1[0], fdx_even_ord1.T)
        assert_almost_equal(res1[1], fdx_uneven_ord1)

        res1 = gradient(f, x_even, x_uneven, axis=(0, 1), edge_order=2)
        res2 = gradient(f, x_uneven, x_even, axis=(1, 0), edge_order=2)
        assert_array_equal(res1[0], res2[1])
        assert_array_equal(res1[1], res2[0])
        assert_almost_equal(res1[0], fdx_even_ord2.T)
        assert_almost_equal(res1[1], fdx_uneven_ord2)

    # fails first at "test vararg order": 1/3 of an int64 input in float32 (and after it at
    # "maximal number of varargs", COUNT_DIFFERS, and at AxisError, docs/gradient.md too)
    @pytest.mark.xfail(strict=True, raises=AssertionError, reason=FLOAT32_DIFFERS)
    def test_specific_axes(self):
        # Testing that gradient can work on a given axis only
        v = [[1, 1], [3, 4]]
        x = np.array(v)
        dx = [np.array([[2.0, 3.0], [2.0, 3.0]]), np.array([[0.0, 0.0], [1.0, 1.0]])]
        assert_array_equal(gradient(x, axis=0), dx[0])
        assert_array_equal(gradient(x, axis=1), dx[1])
        assert_array_equal(gradient(x, axis=-1), dx[1])
        assert_array_equal(gradient(x, axis=(1, 0)), [dx[1], dx[0]])

        # test axis=None which means all axes
        assert_almost_equal(gradient(x, axis=None), [dx[0], dx[1]])
        # and is the same as no axis keyword given
        assert_almost_equal(gradient(x, axis=None), gradient(x))

        # test vararg order
        assert_array_equal(gradient(x, 2, 3, axis=(1, 0)), [dx[1] / 2.0, dx[0] / 3.0])
        # test maximal number of varargs
        assert_raises(TypeError, gradient, x, 1, 2, axis=1)

        assert_raises(AxisError, gradient, x, axis=3)
        assert_raises(AxisError, gradient, x, axis=-3)
        # assert_raises(TypeError, gradient, x, axis=[1,])

    @pytest.mark.xfail(strict=True, raises=TypeError, reason=DATETIME_DIFFERS)
    def test_timedelta64(self):
        # Make sure gradient() can handle special types like timedelta64
        x = np.array([-5, -3, 10, 12, 61, 321, 300], dtype="timedelta64[D]")
        dx = np.array([2, 7, 7, 25, 154, 119, -21], dtype="timedelta64[D]")
        assert_array_equal(gradient(x), dx)
        assert_(dx.dtype == np.dtype("timedelta64[D]"))

    def test_inexact_dtypes(self):
        for dt in [np.float16, np.float32, np.float64]:
            # dtypes should not be promoted in a different way to what diff does
            x = np.array([1, 2, 3], dtype=dt)
            assert_equal(gradient(x).dtype, np.diff(x).dtype)

    def test_values(self):
        # needs at least 2 points for edge_order ==1
        gradient(np.arange(2), edge_order=1)
        # needs at least 3 points for edge_order ==1
        gradient(np.arange(3), edge_order=2)

        assert_raises(ValueError, gradient, np.arange(0), edge_order=1)
        assert_raises(ValueError, gradient, np.arange(0), edge_order=2)
        assert_raises(ValueError, gradient, np.arange(1), edge_order=1)
        assert_raises(ValueError, gradient, np.arange(1), edge_order=2)
        assert_raises(ValueError, gradient, np.arange(2), edge_order=2)

    @pytest.mark.parametrize(
        "f_dtype",
        [
            pytest.param(
                np.uint8,
                marks=pytest.mark.xfail(strict=True, raises=TypeError, reason=UINT8_DIFFERS),
            ),
            np.uint16,
            np.uint32,
            np.uint64,
        ],
    )
    def test_f_decreasing_unsigned_int(self, f_dtype):
        f = np.array([5, 4, 3, 2, 1], dtype=f_dtype)
        g = gradient(f)
        assert_array_equal(g, [-1] * len(f))

    @pytest.mark.parametrize("f_dtype", [np.int8, np.int16, np.int32, np.int64])
    def test_f_signed_int_big_jump(self, f_dtype):
        maxint = np.iinfo(f_dtype).max
        x = np.array([1, 3])
        f = np.array([-1, maxint], dtype=f_dtype)
        dfdx = gradient(f, x)
        assert_array_equal(dfdx, [(maxint + 1) // 2] * 2)

    @pytest.mark.parametrize("x_dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
    def test_x_decreasing_unsigned(self, x_dtype):
        x = np.array([3, 2, 1], dtype=x_dtype)
        f = np.array([0, 2, 4])
        dfdx = gradient(f, x)
        assert_array_equal(dfdx, [-2] * len(x))

    @pytest.mark.parametrize(
        "x_dtype",
        [
            np.int8,
            np.int16,
            np.int32,
            pytest.param(
                np.int64,
                marks=pytest.mark.xfail(
                    strict=True, raises=AssertionError, reason=INT64_STEPS_DIFFER
                ),
            ),
        ],
    )
    def test_x_signed_int_big_jump(self, x_dtype):
        minint = np.iinfo(x_dtype).min
        maxint = np.iinfo(x_dtype).max
        x = np.array([-1, maxint], dtype=x_dtype)
        f = np.array([minint // 2, 0])
        dfdx = gradient(f, x)
        assert_array_equal(dfdx, [0.5, 0.5])

    def test_return_type(self):
        res = gradient(([1, 2], [2, 3]))
        assert type(res) is tuple


def test_quoted_sentences_are_in_the_docs():
    text = " ".join(DOCS.read_text().split())
    for sentence in QUOTED:
        assert sentence in text, sentence


def test_adapter_unwraps_what_imgrad_returns_as_a_tuple():
    """The adapter's one change of shape: imgrad's 1-tuple becomes numpy's bare array."""
    f = np.array([1.0, 2.0, 4.0, 7.0, 11.0, 16.0])
    (got,) = imgrad.gradient(torch.from_numpy(f))
    assert got.tolist() == [1.0, 1.5, 2.5, 3.5, 4.5, 5.0]
    bare = gradient(f)
    assert isinstance(bare, np.ndarray) and bare.tolist() == got.tolist()
    assert_array_equal(np.gradient(f), bare)
