"""PyTorch's own ``torch.gradient`` tests, run on ``imgrad.gradient``.

Ported from (PyTorch, BSD-3-Clause):

- ``test/test_torch.py``, class ``TestTorchDeviceType``: ``test_gradient_all``,
  ``test_gradient_extreme_cases``, ``test_gradient_type_promotion`` and their helpers
  ``_wrap_to_list`` and ``_inf_nan_preprocess``; pytorch/pytorch at commit
  e121c6ea4c91fb2e6c506175cf9d87e512211afb. That file has no other ``torch.gradient`` test.
- ``torch/testing/_internal/common_methods_invocations.py``: ``sample_inputs_gradient``,
  ``error_inputs_gradient`` and the ``OpInfo('gradient', ...)`` entry (dtypes, and its
  autograd settings: supports_forward_ad, supports_fwgrad_bwgrad, check_batched_forward_grad
  False, the defaults check_batched_grad and check_batched_gradgrad True,
  gradcheck_nondet_tol 0, gradcheck fast mode), from torch 2.13.0 (git
  cf30153c4c131c8164ee7798e5022d810682e2cb), the version installed here; with
  ``TestGradients._check_helper`` and ``noncontiguous_like`` from the same version's
  ``torch/testing/_internal/common_utils.py`` and ``OpInfo.conjugate_sample_inputs`` from its
  ``opinfo/core.py``.
- The generic OpInfo tests that run that entry: ``test/test_ops_gradients.py``
  (``TestBwdGradients.test_fn_grad``, ``test_fn_gradgrad``; pytorch/pytorch at commit
  1cf3c22cb2dfbdf003f21dcade3df30393312cf4), ``test/test_ops_fwd_gradients.py``
  (``TestFwdGradients.test_forward_mode_AD``, ``test_fn_fwgrad_bwgrad``; at commit
  53768ff3cea52a4ab8d18e06d9196516477ed49a), and ``test/test_ops.py``
  (``TestCommon.test_errors``, ``TestCommon.test_noncontiguous_samples``,
  ``TestMathBits.test_conj_view``, ``test_neg_view``, ``test_neg_conj_view``), read from a
  recent copy whose commit the reference index does not record.

Porting rules: ``torch.gradient`` became ``imgrad.gradient`` where the test exercises it; the
comparisons with ``numpy.gradient`` and the assertions are upstream's, with
``TestCase.assertEqual`` written as ``torch.testing.assert_close`` with the same tolerances
(``equal_nan=True``, ``check_dtype=False`` for ``exact_dtype=False``). Device-generic tests
run on the CPU and on CUDA when present; the seed is fixed per test (upstream's ``setUp``
seeds too). numpy's divide-by-zero and ComplexWarning warnings, which upstream's tests
produce and ignore, are silenced because pytest here turns warnings into errors; so is
torch's own DeprecationWarning from loading its forward-AD decompositions. Deliberate
differences are strict xfails whose reason quotes ``docs/gradient.md`` verbatim.

Left out, as they test torch rather than the function: test_ops.py's variant-consistency
(method, in-place, JIT) tests, ``test_out`` and ``test_out_warning`` (gradient has no
``out=``), ``test_dtypes`` (torch's dtype registry), the Python-reference, FakeTensor,
compile and dispatch-tag tests; test_ops_gradients.py's in-place tests (no in-place variant)
and ``test_fn_fail_gradgrad`` (skipped upstream: gradient supports gradgrad).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from torch import inf, nan
from torch.autograd import gradcheck, gradgradcheck
from torch.testing import make_tensor

import imgrad

DOCS = Path(__file__).resolve().parent.parent / "docs" / "gradient.md"

# docs/gradient.md, "What differs", quoted verbatim by the strict xfails below
ERRORS_DIFFER = (
    "imgrad.gradient raises ValueError where torch.gradient raises RuntimeError or IndexError "
    "for a bad argument: a spacing list of the wrong length, an edge_order other than 1 or 2, "
    "a dim out of range or named twice, too few samples along a dim, or coordinates on another "
    "device than the input."
)

S = 5  # common_methods_invocations.S

# torch scripts its forward-AD decompositions on first use (torch.jit.script is deprecated)
forward_ad_warning = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 - upstream draws from numpy's global generator


def assert_equal(actual: Any, expected: Any, **kwargs: Any) -> None:
    """``TestCase.assertEqual`` (its defaults: ``equal_nan=True``; ``exact_dtype=False`` is
    ``check_dtype=False``) for tensors, numpy arrays and sequences of them."""
    kwargs.setdefault("equal_nan", True)
    if isinstance(actual, (list, tuple)):
        assert isinstance(expected, (list, tuple)) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_equal(a, e, **kwargs)
        return
    expected, actual = _as_tensor(expected), _as_tensor(actual)
    torch.testing.assert_close(actual.cpu(), expected.cpu(), check_device=False, **kwargs)


def _as_tensor(x: Any) -> torch.Tensor:
    # numpy arrays copied: the .imag of a real array is a read-only view torch warns about
    return torch.as_tensor(np.array(x) if isinstance(x, np.ndarray) else x)


# ------------------------------------------------------------------------- test/test_torch.py


def _wrap_to_list(input_array):
    # if the given input arg is not a list, it returns a list of single element: [arg]
    # (port: numpy >= 2.0 returns a tuple of arrays where numpy 1.x returned a list, see
    # numpy's TestGradient.test_return_type; upstream's check predates that, so a tuple is
    # taken as a list here, else the comparison would be of 2 tensors with 1 array)
    if isinstance(input_array, tuple):
        return list(input_array)
    return input_array if isinstance(input_array, list) else [input_array]


def _inf_nan_preprocess(actual, expected):
    # To ensure inf, -inf, and nan values do not cause divergence between Numpy and PyTorch.
    # There are two types of possible divergence:
    # 1. When we compute a,b both real numbers and has very small absolute values (i.e. very
    # near to 0.0) then, result of a/b be inf, -inf and nan, and this cause divergence.
    # 2. When we are dividing complex numbers by zero. For example, when a = torch.tensor(3+5j)
    # we have a/0 to be equal to nan + nan*j in PyTorch and inf + inf*j in Numpy.
    for i in range(len(expected)):
        expected[i] = np.nan_to_num(expected[i], nan=nan, posinf=nan, neginf=nan)
        # nan_to_num is not defined for complex tensors in PyTorch.
        if actual[i].dtype == torch.complex64:
            actual[i].real = torch.nan_to_num(actual[i].real, nan=nan, posinf=nan, neginf=nan)
            actual[i].imag = torch.nan_to_num(actual[i].imag, nan=nan, posinf=nan, neginf=nan)
        else:
            actual[i] = torch.nan_to_num(actual[i], nan=nan, posinf=nan, neginf=nan)

    return actual, expected


@pytest.mark.parametrize("dtype", [torch.long, torch.float32, torch.complex64], ids=str)
def test_gradient_all(device, dtype):
    def create_scalar(shape):
        return make_tensor((1,), device="cpu", dtype=dtype, low=1.0).item()

    def create_list(shape):
        return make_tensor((len(shape),), device="cpu", dtype=dtype, low=1.0).tolist()

    def create_coordinate_tensors(shape):
        tensor_list = []
        for i in range(len(shape)):
            tensor_list.append(make_tensor((shape[i],), device=device, dtype=dtype))
        return tensor_list

    def filter_shape(shape, dim):
        filtered_shape = []
        for i in range(len(dim)):
            filtered_shape.append(shape[dim[i]])
        return filtered_shape

    # shape, dims format
    test_cases = (
        ((5,), (0,)),
        ((4, 4), (0, 1)),
        ((3, 3, 3), (-1, 0)),
        ((4, 4, 4), (2,)),
        ((4, 4, 4), (0, 1)),
        ((4, 4, 4, 3), (0, 2, 3)),
        ((4, 5, 3, 4, 3), (1, 2)),
        ((4, 3, 6, 5, 3), (2, 4)),
        ((4, 3, 3, 5, 3), (0, 1, 2, 3, 4)),
        ((1, 3, 3), (1, 2)),
        ((1, 5), (1,)),
    )

    for case, contig, edge_order, space_fn in product(
        test_cases, [True, False], [1, 2], (create_scalar, create_list, create_coordinate_tensors)
    ):
        shape, dims = case
        # filter shape by dims before passing filtered shape to create_* functions
        filtered_shape = filter_shape(shape, dims)

        spacing = space_fn(filtered_shape)
        t = make_tensor(shape, device=device, dtype=dtype, noncontiguous=not contig)
        t_np = t.cpu().numpy()

        actual = imgrad.gradient(t, spacing=spacing, dim=dims, edge_order=edge_order)
        if space_fn == create_coordinate_tensors and spacing[0].device != "cpu":
            spacing = [space.cpu().detach().numpy() for space in spacing]
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = np.gradient(t_np, *_wrap_to_list(spacing), axis=dims, edge_order=edge_order)
        actual, expected = _inf_nan_preprocess(list(actual), _wrap_to_list(expected))
        assert_equal(actual, expected, equal_nan=True, atol=1e-4, rtol=0, check_dtype=False)


@pytest.mark.parametrize("dtype", [torch.long, torch.float32, torch.complex64], ids=str)
def test_gradient_extreme_cases(device, dtype):
    # Test behaviour for inf and nan values
    actual = imgrad.gradient(
        torch.tensor([2, -2, inf, inf, -inf, -inf, inf, 3, -inf, 2, nan, nan, 3, inf, nan])
    )
    with np.errstate(invalid="ignore"):
        expected = np.gradient(
            np.array([2, -2, inf, inf, -inf, -inf, inf, 3, -inf, 2, nan, nan, 3, inf, nan])
        )
    assert_equal(actual, _wrap_to_list(expected), check_dtype=False)

    # Test behaviour in very big tensors
    large_size = 100000
    t = make_tensor((large_size,), dtype=dtype, device=device)
    t_np = t.cpu().numpy()
    coordinates_np = list(np.random.randn(large_size))  # noqa: NPY002 - upstream's draw
    coordinates = [torch.tensor(coordinates_np, device=device)]
    actual = imgrad.gradient(t, spacing=coordinates, dim=0, edge_order=1)
    expected = [np.gradient(t_np, coordinates_np, axis=0, edge_order=1)]
    assert_equal(actual, expected, check_dtype=False)

    actual = imgrad.gradient(t, spacing=coordinates, dim=0, edge_order=2)
    expected = [np.gradient(t_np, coordinates_np, axis=0, edge_order=2)]
    assert_equal(actual, expected, check_dtype=False)


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_gradient_type_promotion(device):
    inputs = (
        make_tensor((4, 4), device=device, dtype=torch.float32),
        make_tensor((4, 4), device=device, dtype=torch.complex64),
        make_tensor((4, 4), device=device, dtype=torch.int64),
    )

    spacing = (
        make_tensor((1,), device="cpu", dtype=torch.float32).item(),
        make_tensor((1,), device="cpu", dtype=torch.int64).item(),
        make_tensor((1,), device="cpu", dtype=torch.complex64).item(),
        make_tensor((2,), device="cpu", dtype=torch.float32, low=0.1).tolist(),
        make_tensor((2,), device="cpu", dtype=torch.int64, low=1).tolist(),
        make_tensor((2,), device="cpu", dtype=torch.complex64).tolist(),
        [
            make_tensor((4,), device=device, dtype=torch.float32),
            make_tensor((4,), device=device, dtype=torch.float32),
        ],
        [
            make_tensor((4,), device=device, dtype=torch.int64),
            make_tensor((4,), device=device, dtype=torch.int64),
        ],
        [
            make_tensor((4,), device=device, dtype=torch.complex64),
            make_tensor((4,), device=device, dtype=torch.complex64),
        ],
    )

    for input, spacing_or_coord, edge_order in product(inputs, spacing, [1, 2]):
        input_np = input.cpu().numpy()
        actual = imgrad.gradient(input, spacing=spacing_or_coord, dim=(0, 1), edge_order=edge_order)
        spacing_or_coord_wrapped = _wrap_to_list(spacing_or_coord)
        spacing_or_coord_np = []
        if (
            torch.is_tensor(spacing_or_coord_wrapped[0])
            and torch.device(spacing_or_coord_wrapped[0].device).type != "cpu"
        ):
            for i in range(len(spacing_or_coord_wrapped)):
                spacing_or_coord_np.append(
                    spacing_or_coord_wrapped[i].detach().clone().cpu().numpy()
                )
        else:
            spacing_or_coord_np = spacing_or_coord_wrapped
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = np.gradient(
                input_np, *spacing_or_coord_np, axis=(0, 1), edge_order=edge_order
            )
        if actual[0].dtype == torch.complex64 and input.dtype != torch.complex64:
            for i in range(len(actual)):
                assert_equal(actual[i].real, expected[i].real, check_dtype=False)
                # Type promotion fails on Numpy when spacing is given as complex number and
                # input is given as real. Result is given just as real number and all the
                # imaginary parts to be equal to zero.
                assert_equal(expected[i].imag, torch.zeros(actual[i].shape), check_dtype=False)
        else:
            # (port: list(expected), numpy >= 2.0's tuple; see _wrap_to_list)
            actual, expected = _inf_nan_preprocess(list(actual), list(expected))
            assert_equal(actual, expected, equal_nan=True, check_dtype=False)


# ------------------------------------------------------- the OpInfo and the tests that run it

# OpInfo('gradient', dtypes=floating_and_complex_types_and(torch.int8, torch.int16, torch.int32,
# torch.int64, torch.bfloat16, torch.half), supports_out=False, supports_forward_ad=True,
# supports_fwgrad_bwgrad=True, check_batched_forward_grad=False, ...)
OPINFO_DTYPES = [
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bfloat16,
    torch.float16,
]
CHECK_BATCHED_GRAD = True  # the default: supports_autograd or supports_forward_ad
CHECK_BATCHED_GRADGRAD = True  # the default: supports_gradgrad
CHECK_BATCHED_FORWARD_GRAD = False  # set by the entry (pytorch/pytorch#78358)
GRADCHECK_NONDET_TOL = 0.0
GRADCHECK_FAST_MODE = True  # None in the entry: common_utils.gradcheck's default


class Sample(NamedTuple):
    input: torch.Tensor
    kwargs: dict[str, Any]


def sample_inputs_gradient(device, dtype, requires_grad) -> Iterator[Sample]:
    make_arg = partial(
        make_tensor, device=device, dtype=dtype, requires_grad=requires_grad, low=None, high=None
    )
    test_cases_float = (
        ((S,), None, None, 1),
        ((S,), 2.0, None, 1),
        ((S, S), None, None, 2),
        ((S, S), [2.0, 2.1], None, 1),
        ((S, S), [2.0, 2.1], (0, 1), 1),
        ((4, 4, 4), [2.0, 1.0], (0, 1), 2),
    )
    for size, spacing, dim, edge_order in test_cases_float:
        t = make_arg(size)
        yield Sample(t, dict(dim=dim, spacing=spacing, edge_order=edge_order))

    test_cases_tensor = (
        ((3, 3, 3), ((1.1, 2.0, 3.5), (4.0, 2, 6.0)), (0, -1), 1),
        ((3, 3, 3), ((1.0, 3.0, 2.0), (8.0, 6.0, 1.0)), (0, 1), 2),
    )
    for size, coordinates, dim, edge_order in test_cases_tensor:
        t = make_arg(size)
        coordinates_tensor_list = []
        for coords in coordinates:
            a = torch.tensor(coords, device=device, dtype=dtype)
            coordinates_tensor_list.append(a)
        yield Sample(t, dict(dim=dim, spacing=coordinates_tensor_list, edge_order=edge_order))


def conjugate_sample_inputs(device, dtype, requires_grad) -> Iterator[Sample]:
    """OpInfo.conjugate_sample_inputs: the samples with their input conjugated.

    Upstream iterates the sample generator a second time after ``list()`` has used it up, so
    its "conjugated" samples are the plain ones again; this port conjugates them, as meant,
    into leaves with the conjugate bit set (upstream's ``conj()`` of a leaf that requires grad
    would be a non-leaf, whose ``.grad`` the helper's check could not read without a warning).
    """
    for sample in sample_inputs_gradient(device, dtype, requires_grad):
        _requires_grad = sample.input.requires_grad
        tensor = sample.input.detach().conj().requires_grad_(_requires_grad)
        assert tensor.is_conj() and tensor.is_leaf
        yield Sample(tensor, sample.kwargs)


def sample_inputs(device, dtype, requires_grad=False, include_conjugated_inputs=False):
    samples = list(sample_inputs_gradient(device, dtype, requires_grad))
    if include_conjugated_inputs:
        samples.extend(conjugate_sample_inputs(device, dtype, requires_grad))
    return samples


def op(input, *args, **kwargs):
    return imgrad.gradient(input, *args, **kwargs)


def _check_helper(
    device,
    dtype,
    check,
    *,
    check_forward_ad=False,
    check_backward_ad=True,
    check_batched_grad=None,
    check_batched_forward_grad=False,
):
    """TestGradients._check_helper for the gradient OpInfo."""
    include_conjugated_inputs = dtype.is_complex  # test_conjugated_samples defaults to True
    samples = sample_inputs(
        device, dtype, requires_grad=True, include_conjugated_inputs=include_conjugated_inputs
    )
    assert len(samples) == 8 * (2 if dtype.is_complex else 1)
    for sample in samples:
        # Creates gradcheck inputs by identifying tensors requiring grad
        all_args = (sample.input, *sample.kwargs.values())
        gradcheck_args = tuple(
            x for x in all_args if isinstance(x, torch.Tensor) and x.requires_grad
        )
        for t in gradcheck_args:
            assert t.grad is None

        def fn(*inputs, sample=sample):
            return op(inputs[0], **sample.kwargs)

        if check == "gradcheck":
            if check_batched_grad is None:
                check_batched_grad = CHECK_BATCHED_GRAD
            assert gradcheck(
                fn,
                gradcheck_args,
                check_batched_grad=check_batched_grad,
                check_grad_dtypes=True,
                nondet_tol=GRADCHECK_NONDET_TOL,
                fast_mode=GRADCHECK_FAST_MODE,
                check_forward_ad=check_forward_ad,
                check_backward_ad=check_backward_ad,
                check_undefined_grad=True,
                check_batched_forward_grad=check_batched_forward_grad,
            )
        elif check in ("bwgrad_bwgrad", "fwgrad_bwgrad"):  # gradgrad check
            assert not check_forward_ad, "Cannot run forward AD check for gradgradcheck"
            for gen_non_contig_grad_outputs in (False, True):
                kwargs = {
                    "gen_non_contig_grad_outputs": gen_non_contig_grad_outputs,
                    "check_batched_grad": CHECK_BATCHED_GRADGRAD,
                    "check_grad_dtypes": True,
                    "nondet_tol": GRADCHECK_NONDET_TOL,
                    "fast_mode": GRADCHECK_FAST_MODE,
                }
                if check == "fwgrad_bwgrad":
                    kwargs["check_fwd_over_rev"] = True
                    kwargs["check_rev_over_rev"] = False
                    kwargs["check_batched_grad"] = False
                    kwargs["check_undefined_grad"] = False

                assert gradgradcheck(fn, gradcheck_args, **kwargs)
        else:
            raise AssertionError("Unknown check requested!")


GRAD_DTYPES = [torch.double, torch.cdouble]  # _gradcheck_ops: allowed_dtypes


# test_ops_gradients.py, TestBwdGradients
@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
def test_fn_grad(device, dtype):
    _check_helper(device, dtype, "gradcheck")


@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
def test_fn_gradgrad(device, dtype):
    _check_helper(device, dtype, "bwgrad_bwgrad")


# test_ops_fwd_gradients.py, TestFwdGradients
@forward_ad_warning
@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
def test_fn_fwgrad_bwgrad(device, dtype):
    _check_helper(device, dtype, "fwgrad_bwgrad")


@forward_ad_warning
@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
def test_forward_mode_AD(device, dtype):  # noqa: N802 - upstream's name
    _check_helper(
        device,
        dtype,
        "gradcheck",
        check_forward_ad=True,
        check_backward_ad=False,
        check_batched_grad=False,
        check_batched_forward_grad=CHECK_BATCHED_FORWARD_GRAD,
    )


# test_ops.py, TestCommon.test_errors, on error_inputs_gradient


class ErrorInput(NamedTuple):
    input: torch.Tensor
    kwargs: dict[str, Any]
    error_type: type[Exception]
    error_regex: str


def error_inputs_gradient(device) -> Iterator[ErrorInput]:
    for dtype in [torch.long, torch.float32, torch.complex64]:
        t = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], device=device, dtype=dtype)

        dim = (1, 0)
        spacing = [0.1]
        yield ErrorInput(
            t,
            dict(spacing=spacing, dim=dim, edge_order=1),
            RuntimeError,
            "torch.gradient expected spacing to be unspecified, a scalar ",
        )

        yield ErrorInput(
            t,
            dict(edge_order=3),
            RuntimeError,
            "torch.gradient only supports edge_order=1 and edge_order=2.",
        )

        dim = (1, 1)
        spacing = 0.1
        yield ErrorInput(
            t,
            dict(spacing=spacing, dim=dim, edge_order=1),
            RuntimeError,
            "dim 1 appears multiple times in the list of dims",
        )

        dim = (0, 1)
        coordinates = [
            torch.tensor([1, 2, 4], device="cpu"),
            torch.tensor([1, 2, 4], device="meta"),
        ]
        yield ErrorInput(
            t,
            dict(spacing=coordinates, dim=dim, edge_order=1),
            RuntimeError,
            "torch.gradient expected each tensor to be on the same device,",
        )

        yield ErrorInput(t, dict(dim=3), IndexError, "")

        t = torch.tensor([[1], [2], [3]])
        yield ErrorInput(
            t,
            dict(edge_order=1),
            RuntimeError,
            "torch.gradient expected each dimension size to be at least",
        )

        t = torch.tensor([[1, 2], [3, 4]])
        yield ErrorInput(
            t,
            dict(edge_order=2),
            RuntimeError,
            "torch.gradient expected each dimension size to be at least",
        )


# imgrad's ValueError for each error input, in error_inputs_gradient's order
IMGRAD_ERRORS = [
    r"spacing has 1 entries but 2 dimension\(s\) are differentiated",
    r"edge_order must be 1 or 2, got 3",
    r"dim \(1, 1\) names a dimension twice",
    r"expected each tensor to be on the same device: the input is on cpu but the "
    r"coordinates for dim 1 are on meta",
    r"dim 3 is out of range for a tensor of rank 2",
    r"at least edge_order \+ 1 = 2 samples along dim 1; got 1",
    r"at least edge_order \+ 1 = 3 samples along dim 0; got 2",
]
ERROR_CASES = [(dtype, k) for dtype in ("long", "float32", "complex64") for k in range(7)]


@pytest.mark.xfail(strict=True, raises=ValueError, reason=ERRORS_DIFFER)
@pytest.mark.parametrize(("dtype", "k"), ERROR_CASES)
def test_errors(dtype, k):
    """Upstream's assertion, one error input per case (upstream loops over all 21)."""
    ei = list(error_inputs_gradient("cpu"))[ERROR_CASES.index((dtype, k))]
    # (port: match=None for upstream's '', which assertRaisesRegex matches always and which
    # pytest refuses to match with a warning)
    with pytest.raises(ei.error_type, match=ei.error_regex or None):
        out = op(ei.input, **ei.kwargs)
        assert not isinstance(out, type(NotImplemented))


@pytest.mark.parametrize(("dtype", "k"), ERROR_CASES)
def test_errors_are_value_errors(dtype, k):
    """The other side of test_errors' xfail: imgrad's ValueError, and torch's error."""
    ei = list(error_inputs_gradient("cpu"))[ERROR_CASES.index((dtype, k))]
    with pytest.raises(ValueError, match=IMGRAD_ERRORS[k]):
        op(ei.input, **ei.kwargs)
    with pytest.raises(ei.error_type, match=ei.error_regex or None):
        torch.gradient(ei.input, **ei.kwargs)


# test_ops.py, TestCommon.test_noncontiguous_samples


def noncontiguous_like(t):
    # Short-circuits if t is already noncontiguous
    if not t.is_contiguous():
        return t

    # Choose a "weird" value that won't be accessed
    if t.dtype.is_floating_point or t.dtype.is_complex:
        value = math.nan
    elif t.dtype == torch.bool:
        value = True
    else:
        value = 12

    result = t.new_empty(t.shape + (2,))
    result[..., 0] = value
    result[..., 1] = t.detach()
    result = result[..., 1]
    result.requires_grad_(t.requires_grad)
    return result


def _noncontiguous(sample: Sample) -> Sample:
    """SampleInput.noncontiguous: every tensor, the coordinates included."""

    def to_noncontiguous(v):
        if isinstance(v, torch.Tensor):
            return noncontiguous_like(v)
        if isinstance(v, list):
            return [to_noncontiguous(x) for x in v]
        return v

    return Sample(
        to_noncontiguous(sample.input), {k: to_noncontiguous(v) for k, v in sample.kwargs.items()}
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.long, torch.complex64], ids=str)
def test_noncontiguous_samples(device, dtype):
    test_grad = dtype.is_floating_point or dtype.is_complex  # supported_backward_dtypes
    for sample_input in sample_inputs(device, dtype, requires_grad=test_grad):
        t_inp, t_kwargs = sample_input.input, sample_input.kwargs
        noncontig_sample = _noncontiguous(sample_input)
        n_inp, n_kwargs = noncontig_sample.input, noncontig_sample.kwargs

        # validates forward
        expected = op(t_inp, **t_kwargs)
        actual = op(n_inp, **n_kwargs)

        assert_equal(actual, expected)

        # Validate backward
        # Short-circuits if the op doesn't support grad in this device x dtype
        if not test_grad:
            continue

        # Filter output elements that do not require grad
        expected = [t for t in expected if isinstance(t, torch.Tensor) and t.requires_grad]
        actual = [n for n in actual if isinstance(n, torch.Tensor) and n.requires_grad]
        assert expected and actual
        grad_for_expected = [torch.randn_like(t) for t in expected]
        grad_for_actual = [noncontiguous_like(n) for n in grad_for_expected]

        # Filter the elements that are tensors that require grad
        t_input_tensors = [t for t in (t_inp,) if t.requires_grad]
        n_input_tensors = [n for n in (n_inp,) if n.requires_grad]

        assert len(t_input_tensors) == len(n_input_tensors)

        t_grads = torch.autograd.grad(
            expected, t_input_tensors, grad_for_expected, allow_unused=True
        )
        n_grads = torch.autograd.grad(actual, n_input_tensors, grad_for_actual, allow_unused=True)

        for t, n in zip(t_grads, n_grads, strict=True):
            assert_equal(t, n)


# test_ops.py, TestMathBits: the forward comparison of _test_math_view (its backward part
# runs for single-tensor outputs only, and gradient returns a tuple; no in-place variant)


def _test_math_view(samples, math_op_physical, math_op_view):
    def clone_and_perform_view(input, **kwargs):
        requires_grad = kwargs.get("requires_grad", input.requires_grad)
        with torch.no_grad():
            # Ensure view represents the original sample input
            input = math_op_physical(input)
        input = math_op_view(input)
        assert input.is_leaf
        return input.requires_grad_(requires_grad)

    count = 0
    for sample in samples:
        cloned1 = clone_and_perform_view(sample.input)
        expected_forward = op(sample.input, **sample.kwargs)
        forward_with_mathview = op(cloned1, **sample.kwargs)
        assert_equal(expected_forward, forward_with_mathview)
        count += 1
    assert count > 0


def test_conj_view(device):
    samples = sample_inputs(device, torch.cfloat, requires_grad=True)
    _test_math_view(samples, torch.conj_physical, torch.conj)


def test_neg_view(device):
    samples = sample_inputs(device, torch.double, requires_grad=True)
    _test_math_view(samples, torch.neg, torch._neg_view)


def test_neg_conj_view(device):
    def math_op_physical(x):
        return -x.conj_physical()

    def math_op_view(x):
        return torch._neg_view(x).conj()

    # Only test one sample
    samples = sample_inputs(device, torch.cdouble, requires_grad=True)[:1]
    _test_math_view(samples, math_op_physical, math_op_view)


# ---------------------------------------------------- checks beyond the upstream suites
# imgrad claims torch.gradient's results: on every OpInfo sample in every OpInfo dtype (and
# their noncontiguous copies), the same bits; and checks that would have caught imgrad's
# non-differentiable ``out=`` path, its missing complex spacing and its meta-device crash.


@pytest.mark.parametrize("dtype", OPINFO_DTYPES, ids=str)
def test_opinfo_samples_equal_torch_gradient(device, dtype):
    for sample in sample_inputs(device, dtype, include_conjugated_inputs=dtype.is_complex):
        variants = [sample, _noncontiguous(sample)]
        if dtype.is_floating_point or dtype.is_complex:  # a negative view, without autograd
            variants.append(Sample(torch._neg_view(-sample.input), sample.kwargs))
        for s in variants:
            got = imgrad.gradient(s.input, **s.kwargs)
            want = torch.gradient(s.input, **s.kwargs)
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype and g.shape == w.shape
                assert torch.equal(g, w)


SPACINGS = {
    "default": lambda shape, dt: {},
    "none": lambda shape, dt: {"spacing": None},
    "scalar": lambda shape, dt: {"spacing": 0.75},
    "complex-scalar": lambda shape, dt: {"spacing": 0.5 - 2j},
    "0-d-tensor": lambda shape, dt: {"spacing": torch.tensor(1.5)},
    "list": lambda shape, dt: {"spacing": [0.5, 3]},
    "complex-list": lambda shape, dt: {"spacing": [2j, 1.0]},
    "coordinates": lambda shape, dt: {
        "spacing": [torch.cumsum(torch.rand(n, dtype=dt.to_real()) + 0.2, 0) for n in shape]
    },
    "complex-coordinates": lambda shape, dt: {
        "spacing": [torch.randn(n, dtype=torch.complex128) for n in shape]
    },
    "mixed-list": lambda shape, dt: {
        "spacing": [2.0, torch.cumsum(torch.rand(shape[1], dtype=torch.float64) + 0.2, 0)]
    },
    "dim-subset": lambda shape, dt: {"spacing": [0.25], "dim": -1},
}


@forward_ad_warning
@pytest.mark.parametrize("edge_order", [1, 2])
@pytest.mark.parametrize("form", list(SPACINGS))
@pytest.mark.parametrize("dtype", GRAD_DTYPES, ids=str)
def test_differentiable_every_spacing_form(dtype, form, edge_order):
    """Reverse, forward and second-order gradients, batched, for each spacing form; the
    gradients equal torch.gradient's (imgrad raised on ``out=`` for every uniform spacing)."""
    shape = (4, 5)
    kwargs = SPACINGS[form](shape, dtype)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)

    def fn(t):
        return imgrad.gradient(t, edge_order=edge_order, **kwargs)

    assert gradcheck(fn, (x,), check_forward_ad=True, check_batched_grad=True, fast_mode=True)
    assert gradgradcheck(fn, (x,), check_fwd_over_rev=True, check_batched_grad=True, fast_mode=True)
    outs = fn(x)
    want = torch.gradient(x, edge_order=edge_order, **kwargs) if form != "mixed-list" else None
    ws = [torch.randn_like(o) for o in outs]
    (g,) = torch.autograd.grad(outs, (x,), ws)
    if want is not None:  # the same values; the gradients may sum in another order
        (w,) = torch.autograd.grad(want, (x,), ws)
        torch.testing.assert_close(g, w, rtol=1e-14, atol=1e-14)
        assert all(torch.equal(o, p) for o, p in zip(outs, want, strict=True))


@pytest.mark.parametrize("edge_order", [1, 2])
def test_differentiable_in_the_coordinates(edge_order):
    """Coordinate tensors that require grad: gradcheck, and torch.gradient's gradients."""
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    c0 = torch.tensor([0.0, 0.4, 1.5, 2.0], dtype=torch.float64, requires_grad=True)
    c1 = torch.tensor([1.0, 1.3, 2.0, 2.2, 3.5], dtype=torch.float64, requires_grad=True)

    def fn(t, a, b):
        return imgrad.gradient(t, spacing=[a, b], edge_order=edge_order)

    assert gradcheck(fn, (x, c0, c1), fast_mode=True)
    assert gradgradcheck(fn, (x, c0, c1), fast_mode=True)
    outs = fn(x, c0, c1)
    ws = [torch.randn_like(o) for o in outs]
    got = torch.autograd.grad(outs, (x, c0, c1), ws)
    want = torch.autograd.grad(
        torch.gradient(x, spacing=[c0, c1], edge_order=edge_order), (x, c0, c1), ws
    )
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)


@forward_ad_warning
def test_torch_func_transforms():
    """vmap, grad and jacfwd see the same function as torch.gradient (no ``out=`` escapes)."""
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    got = torch.func.vmap(lambda t: imgrad.gradient(t, spacing=0.5)[1])(x)
    assert torch.equal(got, torch.stack([torch.gradient(t, spacing=0.5)[1] for t in x]))
    g = torch.func.grad(lambda t: imgrad.gradient(t)[0].pow(2).sum())(x[0])
    w = torch.func.grad(lambda t: torch.gradient(t)[0].pow(2).sum())(x[0])
    assert torch.equal(g, w)
    j = torch.func.jacfwd(lambda t: imgrad.gradient(t, edge_order=2)[1])(x[0])
    k = torch.func.jacfwd(lambda t: torch.gradient(t, edge_order=2)[1])(x[0])
    assert torch.equal(j, k)


def test_no_grad_path_keeps_requires_grad_input_out_of_the_graph():
    x = torch.randn(4, 5, requires_grad=True)
    with torch.no_grad():
        outs = imgrad.gradient(x)
    assert not any(o.requires_grad for o in outs)
    assert all(torch.equal(o, w) for o, w in zip(outs, torch.gradient(x.detach()), strict=True))


@pytest.mark.parametrize(
    ("dtype", "spacing", "result"),
    [
        (torch.float32, 1j, torch.complex64),
        (torch.float64, 0.5 + 1j, torch.complex128),
        (torch.int64, [2j], torch.complex64),
        (torch.bfloat16, 1j, torch.complex64),
        (torch.complex64, 2 - 1j, torch.complex64),
    ],
    ids=str,
)
def test_complex_spacing_equals_torch(dtype, spacing, result):
    x = make_tensor((6,), dtype=dtype, device="cpu", low=-9, high=9)
    for edge_order in (1, 2):
        (got,) = imgrad.gradient(x, spacing=spacing, edge_order=edge_order)
        (want,) = torch.gradient(x, spacing=spacing, edge_order=edge_order)
        assert got.dtype == want.dtype == result
        assert torch.equal(got, want)
    # the number itself: f = (1 + 2i) k sampled at step h gives (1 + 2i) / h everywhere
    k = torch.arange(5, dtype=torch.float64) * (1 + 2j)
    (g,) = imgrad.gradient(k, spacing=0.5j)
    assert g.tolist() == [(1 + 2j) / 0.5j] * 5


def test_complex_spacing_with_float16_is_a_type_error():
    x = torch.arange(4, dtype=torch.float16)
    with pytest.raises(TypeError, match="complex spacing for torch.float16 input"):
        imgrad.gradient(x, spacing=1j)


@pytest.mark.parametrize(
    "coordinates",
    [
        [torch.arange(5.0, device="meta")],
        [torch.arange(5.0, device="meta").to(torch.float64)],
    ],
    ids=["float32", "float64"],
)
def test_coordinates_on_the_meta_device(coordinates):
    x = torch.rand(5)
    with pytest.raises(ValueError, match="expected each tensor to be on the same device"):
        imgrad.gradient(x, spacing=coordinates)
    with pytest.raises(RuntimeError, match="expected each tensor to be on the same device"):
        torch.gradient(x, spacing=coordinates)


def test_quoted_sentences_are_in_the_docs():
    text = " ".join(DOCS.read_text().split())
    assert ERRORS_DIFFER in text
