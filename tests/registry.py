"""Every public name of ``imgrad`` and what the contract test may ask of it.

``tests/test_contract.py`` runs each check of :data:`CHECKS` on each op of :data:`REGISTRY`
(like torchvision's ``check_kernel``). An entry says how to build the op (the function itself,
or a module instance), how to make its inputs, which keyword arguments to pass, what dtypes and
shapes its results have, and, per check, ``None`` (it applies) or the reason it does not. A
check with a reason is still run, as ``xfail(strict=True)``: a "cannot" that became "can"
fails the suite until the reason is removed here. The keys of :data:`REGISTRY` must be exactly
``imgrad.__all__``: a new public name fails the suite until it is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from conftest import FLOAT_DTYPES, INT_DTYPES, expected_dtype, make_image

import imgrad

#: The checks, in the order they are reported.
CHECKS = (
    "gradcheck",  # torch.autograd.gradcheck in float64
    "gradgradcheck",  # torch.autograd.gradgradcheck in float64
    "complex",  # gradcheck and gradgradcheck in complex128
    "unmodified",  # the input is not modified; the results are fresh tensors
    "dtype",  # result dtype, shape and device for every accepted input dtype
    "layout",  # channels_last, transposed and strided input: the same bits
    "batch",  # a batch == its images one by one
    "empty_batch",  # N = 0 gives empty results
    "rank",  # (C, H, W) and (H, W) input give the (N, C, H, W) result's [0] and [0, 0]
    "vmap",  # torch.func.vmap over the batch == the batched call
    "func_grad",  # torch.func.grad == torch.autograd.grad
    "compile",  # torch.compile(fullgraph=True) == eager
    "export",  # torch.export.export runs, and its program == eager on another input
    "onnx_dynamo",  # torch.onnx.export(dynamo=True) in onnxruntime == eager
    "onnx_legacy",  # torch.onnx.export(dynamo=False) in onnxruntime == eager
    "meta",  # on the meta device: the CPU's shapes and dtypes (and backward, if differentiable)
)

ANY_DTYPES = tuple(FLOAT_DTYPES + INT_DTYPES)

# ------------------------------------------------------------------------------- the reasons

NOT_AN_OP = "not a tensor op"
NO_COMPLEX = "complex images are rejected with TypeError: imgrad's image operators are real"
MASK = "the result is a bool mask: nothing to differentiate"
EMPTY = "refuses input without pixels, an empty batch too (ValueError 'x is empty')"
#: onnxruntime (1.32) kernels that are missing; the models export, but do not run there
ORT_ATAN = "onnxruntime has no float64 Atan kernel, and the angle is computed in float64"
ORT_WHERE = "onnxruntime has no Where kernel for bool tensors (NMS's sector choice)"

#: What reads tensor values on the host (data-dependent control flow and shapes)
HYSTERESIS = (
    "hysteresis reads values on the host: bool() of the thresholds' order, then the connected "
    "components of the candidates (nonzero(), labelling until the labels settle)"
)
OTSU = (
    "Otsu's threshold reads values on the host: bool() checks for NaN/inf and the histogram "
    "edges computed by numpy"
)
CANNY = (
    "Canny's hysteresis reads values on the host (nonzero() of the candidates, a labelling "
    "loop until the labels settle)"
)


def _host(what: str, legacy: str) -> dict[str, str]:
    """The reasons of an op whose result depends on values read on the host (``what``)."""
    return {
        "vmap": f"vmap cannot batch data-dependent control flow: {what}",
        "compile": f"no single graph (fullgraph=True): {what}",
        "export": f"torch.export needs data-independent control flow: {what}",
        "onnx_dynamo": f"exports through torch.export, which fails: {what}",
        "onnx_legacy": legacy,
        "meta": f"meta tensors hold no values: {what}",
    }


def _reasons(**reasons: str | None) -> dict[str, str | None]:
    """Every check -> ``None`` (applies) or the reason it does not; ``complex`` is refused
    unless said otherwise."""
    unknown = set(reasons) - set(CHECKS)
    assert not unknown, f"unknown checks {unknown}"
    return {
        check: reasons.get(check, NO_COMPLEX if check == "complex" else None) for check in CHECKS
    }


# ------------------------------------------------------------------------------- the inputs


def image(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    """One image: values in [0, 1) for floating dtypes, integers 0..200 else."""
    return (make_image(shape, dtype, seed=seed),)


def _signed(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Values in [-1, 1) for floating dtypes (exact in every dtype), integers -100..100 for
    signed ones, 0..200 for unsigned ones."""
    if dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
        return make_image(shape, dtype, seed=seed)
    x = make_image(shape, torch.float64, seed=seed) * 2 - 1
    return x.to(dtype) if dtype.is_floating_point else (x * 100).round().to(dtype)


def gradient_pair(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, ...]:
    """``gy`` and ``gx`` of both signs."""
    return _signed(shape, dtype, seed), _signed(shape, dtype, seed + 100)


def nms_inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    """A positive magnitude and a ``gy``, ``gx`` pair of both signs."""
    return (make_image(shape, dtype, seed=seed), *gradient_pair(shape, dtype, seed + 1))


def _pair(gy: torch.Tensor, gx: torch.Tensor) -> tuple[Any, ...]:
    return (imgrad.Gradients(gy, gx),)


def _as_is(*xs: torch.Tensor) -> tuple[Any, ...]:
    return xs


# ------------------------------------------------------------------------------- the entries


def fields(out: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of a result, compared one by one: a named tuple's fields, or the tensor."""
    return tuple(out) if isinstance(out, tuple) else (out,)


@dataclass(frozen=True)
class Entry:
    """One public name. For a tensor op, ``make()`` returns the op (the function, or a fresh
    module instance), called as ``op(*pack(*inputs(shape, dtype, seed)), **kwargs)``."""

    checks: dict[str, str | None]
    make: Callable[[], Any] | None = None
    inputs: Callable[[tuple[int, ...], torch.dtype, int], tuple[torch.Tensor, ...]] = image
    kwargs: dict[str, Any] = field(default_factory=dict)
    pack: Callable[..., tuple[Any, ...]] = _as_is
    outputs: Callable[[Any], tuple[torch.Tensor, ...]] = fields
    #: input dtypes it accepts (others raise TypeError); result dtype per field for each
    dtypes: tuple[torch.dtype, ...] = ANY_DTYPES
    out_dtypes: Callable[[torch.dtype], tuple[torch.dtype, ...]] | None = None
    #: result shape of each field for an (N, C, H, W) input; default (N, channels_out, H, W)
    out_shapes: Callable[[tuple[int, ...]], tuple[tuple[int, ...], ...]] | None = None
    channels_out: int | None = None
    count: int = 1  # fields in the result
    #: dtype of the bit-exact checks (layout, batch, empty_batch, rank, vmap)
    exact: torch.dtype = torch.float64
    #: what a non-op is ("constant", "result type", "file function")
    kind: str = "op"

    @property
    def is_op(self) -> bool:
        return self.kind == "op"

    def call(self, op: Any, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The result's tensors for inputs ``xs``."""
        return self.outputs(op(*self.pack(*xs), **self.kwargs))

    def result_dtypes(self, dtype: torch.dtype) -> tuple[torch.dtype, ...]:
        if self.out_dtypes is not None:
            return self.out_dtypes(dtype)
        return (expected_dtype(dtype),) * self.count

    def result_shapes(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        if self.out_shapes is not None:
            return self.out_shapes(shape)
        n, c, h, w = shape
        return ((n, c if self.channels_out is None else self.channels_out, h, w),) * self.count


def _function(name: str) -> Callable[[], Any]:
    return lambda: getattr(imgrad, name)


def _bool(dtype: torch.dtype) -> tuple[torch.dtype, ...]:
    return (torch.bool,)


def non_op(kind: str, why: str) -> Entry:
    return Entry(checks=dict.fromkeys(CHECKS, f"{NOT_AN_OP}: {why}"), kind=kind)


_MASK_REASONS = {"gradcheck": MASK, "gradgradcheck": MASK, "func_grad": MASK}
_MASK = _reasons(**_MASK_REASONS, empty_batch=EMPTY)
_OTSU_LEGACY = "jit.trace cannot record the numpy histogram edges (constants at best)"
_HYSTERESIS_LEGACY = (
    "jit.trace cannot record the labelling: Tensor.view(dtype) in nonzero_flat, a loop until "
    "the labels settle"
)
_CANNY_FUNC = (
    "torch.func transforms cannot run the hysteresis: raw data pointers, a reused state grid "
    "labelled in place"
)

#: The public API. Options are chosen to cover more than the defaults where that is free.
REGISTRY: dict[str, Entry] = {}

_GRADIENT_FUNCTIONS = {
    "sobel": {},
    "scharr": {"border": "replicate"},
    "prewitt": {"border": "constant", "border_value": 0.5},
    "central_difference": {"normalized": True, "spacing": (0.5, 2.0)},
    "forward_difference": {"border": "circular"},
    "spatial_gradient": {"operator": "sobel", "ksize": 5, "border": "reflect"},
}
for _name, _kwargs in _GRADIENT_FUNCTIONS.items():
    REGISTRY[_name] = Entry(make=_function(_name), kwargs=_kwargs, count=2, checks=_reasons())

_GRADIENT_MODULES = {
    "Sobel": lambda: imgrad.Sobel(5, border="replicate", normalized=True),
    "Scharr": lambda: imgrad.Scharr(),
    "Prewitt": lambda: imgrad.Prewitt(border="reflect"),
    "CentralDifference": lambda: imgrad.CentralDifference(border="circular"),
    "ForwardDifference": lambda: imgrad.ForwardDifference(border="constant", border_value=-1.0),
    "SpatialGradient": lambda: imgrad.SpatialGradient("scharr", color="luminance"),
}
for _name, _make in _GRADIENT_MODULES.items():
    REGISTRY[_name] = Entry(
        make=_make,
        count=2,
        channels_out=1 if _name == "SpatialGradient" else None,
        checks=_reasons(),
    )

REGISTRY |= {
    "second_derivatives": Entry(
        make=_function("second_derivatives"), kwargs={"ksize": 5}, count=3, checks=_reasons()
    ),
    "Hessian": Entry(
        make=lambda: imgrad.Hessian("central", border="reflect", normalized=True),
        count=3,
        checks=_reasons(),
    ),
    "laplacian": Entry(make=_function("laplacian"), kwargs={"ksize": 3}, checks=_reasons()),
    "Laplacian": Entry(make=lambda: imgrad.Laplacian(), checks=_reasons()),
    "gradient_magnitude": Entry(
        make=_function("gradient_magnitude"),
        kwargs={"color": "max"},
        channels_out=1,
        checks=_reasons(),
    ),
    "GradientMagnitude": Entry(
        make=lambda: imgrad.GradientMagnitude("prewitt", norm="l1"), checks=_reasons()
    ),
    "magnitude": Entry(
        make=_function("magnitude"),
        inputs=gradient_pair,
        pack=_pair,
        dtypes=tuple(FLOAT_DTYPES),
        out_dtypes=lambda d: (d,),
        checks=_reasons(),
    ),
    "orientation": Entry(
        make=_function("orientation"),
        inputs=gradient_pair,
        pack=_pair,
        kwargs={"signed": True},
        dtypes=tuple(FLOAT_DTYPES),
        out_dtypes=lambda d: (d,),
        exact=torch.float32,  # float64 atan2 differs by 1 ulp between torch's loops (documented)
        checks=_reasons(onnx_dynamo=ORT_ATAN, onnx_legacy=ORT_ATAN),
    ),
    "Orientation": Entry(
        make=lambda: imgrad.Orientation(degrees=True),
        inputs=gradient_pair,
        pack=_pair,
        dtypes=tuple(FLOAT_DTYPES),
        out_dtypes=lambda d: (d,),
        exact=torch.float32,
        checks=_reasons(onnx_dynamo=ORT_ATAN, onnx_legacy=ORT_ATAN),
    ),
    "image_gradients": Entry(make=_function("image_gradients"), count=2, checks=_reasons()),
    "gradient": Entry(
        make=_function("gradient"),
        kwargs={"dim": (-2, -1)},
        count=2,
        dtypes=tuple(d for d in ANY_DTYPES if d != torch.uint8),
        out_dtypes=lambda d: (d if d.is_floating_point else torch.float32,) * 2,
        checks=_reasons(
            complex=None,
            compile="torch.result_type(input, spacing) is not traceable (graph break)",
            onnx_legacy=(
                "without autograd the result is written into a numpy-backed buffer "
                "(imgrad._memory.empty), which jit.trace records as a constant (aten::lift_fresh)"
            ),
        ),
    ),
    "threshold": Entry(
        make=_function("threshold"), kwargs={"value": 0.5}, out_dtypes=_bool, checks=_MASK
    ),
    "Threshold": Entry(make=lambda: imgrad.Threshold(0.5), out_dtypes=_bool, checks=_MASK),
    "threshold_relative": Entry(
        make=_function("threshold_relative"),
        kwargs={"ratio": 0.5},
        out_dtypes=_bool,
        checks=_MASK,
    ),
    "threshold_otsu": Entry(
        make=_function("threshold_otsu"),
        out_dtypes=_bool,
        checks=_reasons(**_MASK_REASONS, empty_batch=EMPTY, **_host(OTSU, _OTSU_LEGACY)),
    ),
    "otsu_threshold": Entry(
        make=_function("otsu_threshold"),
        out_dtypes=lambda d: (torch.float64 if d.is_floating_point else torch.int64,),
        out_shapes=lambda s: ((s[0],),),
        checks=_reasons(
            empty_batch=EMPTY,
            rank="returns (N,) thresholds for every input rank, (1,) for one image",
            **_host(OTSU, _OTSU_LEGACY),
        ),
    ),
    "hysteresis_threshold": Entry(
        make=_function("hysteresis_threshold"),
        kwargs={"low": 0.3, "high": 0.7},
        out_dtypes=_bool,
        checks=_reasons(
            **_MASK_REASONS, empty_batch=EMPTY, **_host(HYSTERESIS, _HYSTERESIS_LEGACY)
        ),
    ),
    "HysteresisThreshold": Entry(
        make=lambda: imgrad.HysteresisThreshold(0.3, 0.7, connectivity=4),
        out_dtypes=_bool,
        checks=_reasons(
            **_MASK_REASONS, empty_batch=EMPTY, **_host(HYSTERESIS, _HYSTERESIS_LEGACY)
        ),
    ),
    "non_maximum_suppression": Entry(
        make=_function("non_maximum_suppression"),
        inputs=nms_inputs,
        out_dtypes=lambda d: (d,),
        checks=_reasons(empty_batch=EMPTY, onnx_dynamo=ORT_WHERE, onnx_legacy=ORT_WHERE),
    ),
    "canny": Entry(
        make=_function("canny"),
        kwargs={"low": 1.0, "high": 3.0, "return_details": True},
        count=3,
        channels_out=1,
        out_dtypes=lambda d: (torch.bool, expected_dtype(d), expected_dtype(d)),
        checks=_reasons(
            func_grad=_CANNY_FUNC,
            **_host(CANNY, "jit.trace cannot record the data-dependent hysteresis"),
        ),
    ),
    "Canny": Entry(
        make=lambda: imgrad.Canny(1.0, 3.0, l2gradient=True),
        channels_out=1,
        out_dtypes=_bool,
        checks=_reasons(**_MASK_REASONS, **_host(CANNY, _HYSTERESIS_LEGACY)),
    ),
    "Gradients": non_op("result type", "the named tuple of first derivatives"),
    "SecondDerivatives": non_op("result type", "the named tuple of second derivatives"),
    "CannyResult": non_op("result type", "the named tuple of canny(return_details=True)"),
    "BORDERS": non_op("constant", "the border names and their meaning"),
    "OPERATOR_NAMES": non_op("constant", "the operator names"),
    "Recipe": non_op("file function", "options of process_file and process_tree"),
    "process_file": non_op("file function", "reads and writes image files"),
    "process_tree": non_op("file function", "reads and writes folders of image files"),
    "process_huge": non_op("file function", "tiles arrays and files too large for memory"),
}
