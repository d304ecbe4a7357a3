"""The fast path of gradient_magnitude and gradient gives the reference path's numbers.

The reference is ``magnitude(spatial_gradient(...))`` (and ``torch.gradient``); every check is
bit for bit (``torch.equal``, NaNs equal). The full matrix runs with the eager kernel (what a
failed compile falls back to) in seconds; the compiled kernel is checked for every operator and
dtype with one compile each (~1 s each once inductor's on-disk cache is warm).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import imgrad
from imgrad import fast
from imgrad._compile import AUTO_AFTER_PIXELS, CompilePolicy
from imgrad.gradients import magnitude, spatial_gradient

OPERATORS = [
    ("sobel", 1),
    ("sobel", 3),
    ("sobel", 5),
    ("sobel", 7),
    ("scharr", 3),
    ("prewitt", 3),
    ("central", 3),
    ("forward", 3),
]
BORDERS = ["reflect101", "reflect", "replicate", "constant", "circular"]
NORMS = ["l2", "l1", "squared"]
DTYPES = [torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64]
# odd sizes: the smallest the fast path takes (2r + 2), non-square, 1-3 columns of interior
SHAPES = [(8, 8), (9, 17), (23, 10), (3, 1, 16, 33), (2, 3, 12, 11)]


def reference(image: Any, operator: str, ksize: int, norm: str = "l2", **options: Any) -> Any:
    """The two-call form; half precision computed in float32 and rounded once at the end."""
    half = isinstance(image, torch.Tensor) and image.dtype in (torch.float16, torch.bfloat16)
    wide = image.float() if half else image
    m = magnitude(spatial_gradient(wide, operator, ksize=ksize, **options), norm)
    return m.to(image.dtype) if half else m


def sample(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 50).to(dtype)
    high = 65536 if dtype == torch.uint16 else 256
    return torch.randint(0, high, shape, generator=gen, dtype=torch.int64).to(dtype)


def assert_matches(got: Any, want: Any) -> None:
    """Same type, dtype, shape and bits (NaN where the reference has NaN)."""
    assert type(got) is type(want)
    got, want = torch.as_tensor(got), torch.as_tensor(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want) or torch.allclose(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.fixture(autouse=True)
def small_images_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The small test images take the fast path even when it runs eagerly (by default they go to
    the reference path then, which is faster for them: test_small_eager_images_...)."""
    monkeypatch.setattr(fast, "EAGER_MIN_PIXELS", 0)


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the fast path with the eager kernel (what a failed compile falls back to)."""
    monkeypatch.setenv("IMGRAD_COMPILE", "0")


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the fast path with the compiled kernel from the first call."""
    monkeypatch.setenv("IMGRAD_COMPILE", "1")


def fast_magnitude(image: Any, operator: str, ksize: int, **options: Any) -> Any:
    """gradient_magnitude, asserting that it took the fast path."""
    spec = {k: v for k, v in options.items() if k not in ("norm", "nan_policy")}
    assert fast.plan_for(image, imgrad.gradients.get_operator(operator, ksize), "l2", None)
    assert spec.get("color", "channels") == "channels"
    return imgrad.gradient_magnitude(image, operator, ksize=ksize, **options)


# --------------------------------------------------------------------------- eager kernel


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize("operator,ksize", OPERATORS)
@pytest.mark.parametrize("border", BORDERS)
def test_eager_every_operator_border_and_shape(operator: str, ksize: int, border: str) -> None:
    """Eager fast path == reference, bit for bit, for every operator, border and odd shape."""
    for shape in SHAPES:
        r = imgrad.gradients.get_operator(operator, ksize).radius
        shape = shape[:-2] + tuple(max(s, 2 * r + 2) for s in shape[-2:])
        x = sample(shape, torch.float32)
        got = fast_magnitude(x, operator, ksize, border=border, border_value=3.5)
        assert_matches(got, reference(x, operator, ksize, border=border, border_value=3.5))


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_eager_every_dtype_and_norm(dtype: torch.dtype, norm: str) -> None:
    """Every input dtype and norm, with a constant border value that uint8 cannot hold."""
    x = sample((2, 1, 19, 26), dtype)
    options = {"border": "constant", "border_value": -0.75, "norm": norm}
    assert_matches(fast_magnitude(x, "sobel", 5, **options), reference(x, "sobel", 5, **options))


@pytest.mark.usefixtures("eager")
def test_eager_strips_cover_large_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager chunks (shrunk to 100 elements) tile the interior exactly, any remainder."""
    monkeypatch.setattr(fast, "STRIP_ELEMENTS", 100)
    for shape in [(41, 37), (3, 2, 30, 13)]:
        x = sample(shape, torch.float32)
        assert_matches(fast_magnitude(x, "sobel", 3), reference(x, "sobel", 3))


# --------------------------------------------------------------------------- compiled kernel


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("operator,ksize", OPERATORS)
def test_compiled_every_operator(operator: str, ksize: int) -> None:
    """Compiled, every operator, over the odd shapes and every border."""
    for i, shape in enumerate(SHAPES):
        r = imgrad.gradients.get_operator(operator, ksize).radius
        shape = shape[:-2] + tuple(max(s, 2 * r + 2) for s in shape[-2:])
        x = sample(shape, torch.float32, seed=i)
        options = {"border": BORDERS[i % len(BORDERS)], "border_value": 1.5}
        got = fast_magnitude(x, operator, ksize, **options)
        assert_matches(got, reference(x, operator, ksize, **options))


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_compiled_every_dtype(dtype: torch.dtype) -> None:
    """Integers are promoted, half precision rounds gy and gx as the reference does."""
    x = sample((2, 1, 21, 30), dtype)
    assert_matches(fast_magnitude(x, "sobel", 3), reference(x, "sobel", 3))


@pytest.mark.usefixtures("compiled")
def test_compiled_normalized_spacing_and_numpy() -> None:
    """Normalised output with unequal spacings (the left/right bands swap them), numpy in/out."""
    x = sample((17, 29), torch.float64).numpy()
    options = {"normalized": True, "spacing": (0.5, 2.0), "norm": "squared"}
    got = fast_magnitude(x, "scharr", 3, **options)
    assert isinstance(got, np.ndarray)
    assert_matches(got, reference(x, "scharr", 3, **options))


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize("border", BORDERS)
def test_eager_unequal_spacings_every_border(border: str) -> None:
    """Unequal spacings: each side of the frame goes through the kernel on its own (the scratch
    result is written out in between); narrow planes make the two column slabs overlap."""
    options = {"normalized": True, "spacing": (1.0, 2.5), "border": border, "border_value": 1.5}
    for ksize, shape in ((3, (3, 9, 31)), (7, (2, 40, 8))):
        x = sample(shape, torch.float32)
        assert_matches(
            fast_magnitude(x, "sobel", ksize, **options), reference(x, "sobel", ksize, **options)
        )


@pytest.mark.parametrize(
    ("operator", "ksize", "border", "dtype", "norm"),
    [("sobel", 3, "reflect101", torch.float32, "l2"), ("scharr", 3, "constant", torch.uint8, "l1")],
)
def test_one_graph_kernel_equals_the_reference(operator, ksize, border, dtype, norm) -> None:
    """The GPU's one-graph kernel (compiled here for the CPU, where it is not the default) gives
    the reference's bits."""
    x = sample((2, 21, 30), dtype)
    plan = fast.plan_for(x, imgrad.gradients.get_operator(operator, ksize), norm, None)
    want = reference(x, operator, ksize, norm, border=border, border_value=1.5)
    assert_matches(fast._whole(plan, border, 1.5, x).reshape(want.shape), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_one_graph_equals_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, compiled, the magnitude is one graph (fast._whole): the reference's bits."""
    monkeypatch.setenv("IMGRAD_COMPILE", "1")
    cases = ((torch.float32, {}), (torch.uint8, {"border": "constant", "norm": "l1"}))
    for dtype, options in cases:
        x = (torch.rand(3, 1, 67, 45, device="cuda") * 200).to(dtype)
        want = reference(x, "sobel", 3, **options)
        assert_matches(imgrad.gradient_magnitude(x, **options), want)


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize("operator,ksize", [("sobel", 1), ("sobel", 7), ("scharr", 3)])
@pytest.mark.parametrize("border", BORDERS)
def test_eager_kernel_creates_nothing_on_another_device(operator, ksize, border) -> None:
    """What a GPU runs when compiling fails (the interior and the frame, eagerly), run on the
    ``meta`` device, which like CUDA refuses CPU operands: the result stays there, shaped and
    typed as on the CPU. The frame's indices are worked out on the CPU, with no device sync."""
    x = sample((2, 3, 21, 30), torch.uint8)
    plan = fast.plan_for(x, imgrad.gradients.get_operator(operator, ksize), "l1", None)
    want = fast.gradient_magnitude(x, plan, border, 1.5)
    got = fast.gradient_magnitude(x.to("meta"), plan, border, 1.5)
    assert (got.device.type, got.shape, got.dtype) == ("meta", want.shape, want.dtype)


def test_nan_and_inf_as_the_reference() -> None:
    """NaN and inf inputs give the reference's values: a NaN reaches the 8 pixels whose stencil
    has a non-zero tap on it (not its own: the centre taps of a first derivative are 0)."""
    x = sample((12, 14), torch.float32)
    x[3, 4], x[8, 0], x[0, 13] = float("nan"), float("inf"), -float("inf")
    got = fast_magnitude(x, "sobel", 3)
    assert_matches(got, reference(x, "sobel", 3))
    ring = got[2:5, 3:6].isnan()
    assert ring.sum() == 8 and not ring[1, 1] and not got[6:, 6:12].isnan().any()
    assert_matches(fast_magnitude(x, "sobel", 3, norm="l1"), reference(x, "sobel", 3, "l1"))


# --------------------------------------------------------------------------- dispatch


def test_autograd_and_unsupported_options_take_the_reference_path() -> None:
    """Grad-requiring input keeps the autograd graph; color modes and tiny images still work."""
    x = sample((1, 3, 10, 12), torch.float32).requires_grad_()
    m = imgrad.gradient_magnitude(x)
    assert m.grad_fn is not None
    m.sum().backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        assert fast.plan_for(x, imgrad.gradients.get_operator("sobel"), "l2", None) is not None
        assert imgrad.gradient_magnitude(x).grad_fn is None
    y = x.detach()
    for options in ({"color": "luminance"}, {"color": "max"}, {"nan_policy": "raise"}):
        want = magnitude(spatial_gradient(y, **options))
        assert torch.equal(imgrad.gradient_magnitude(y, **options), want)
    tiny = sample((3, 3), torch.float32)  # smaller than 2r + 2: reference path
    assert fast.plan_for(tiny, imgrad.gradients.get_operator("sobel"), "l2", None) is None
    assert torch.equal(imgrad.gradient_magnitude(tiny), reference(tiny, "sobel", 3))


@pytest.mark.parametrize(
    ("mode", "pixels", "fused"), [("0", 1 << 16, False), ("0", 1 << 18, True), ("1", 1 << 16, True)]
)
def test_small_eager_images_take_the_reference_path(monkeypatch, mode, pixels, fused) -> None:
    """Eagerly, images under EAGER_MIN_PIXELS go to the reference path (faster for them);
    compiled, every size is fused. Same numbers either way."""
    monkeypatch.setattr(fast, "EAGER_MIN_PIXELS", 1 << 18)
    monkeypatch.setenv("IMGRAD_COMPILE", mode)
    calls = []
    real = fast.gradient_magnitude
    monkeypatch.setattr(fast, "gradient_magnitude", lambda *a: calls.append(1) or real(*a))
    x = sample((pixels // 256, 256), torch.float32)
    assert torch.equal(imgrad.gradient_magnitude(x), reference(x, "sobel", 3))
    assert calls == ([1] if fused else [])


def test_input_is_not_modified_and_output_is_fresh() -> None:
    x = sample((2, 1, 20, 20), torch.float32)
    before = x.clone()
    out = imgrad.gradient_magnitude(x)
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()


def test_compile_failure_falls_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiler that raises: one RuntimeWarning, then the eager kernel, same numbers."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(fast, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(fast, "POLICY", CompilePolicy("the gradient magnitude"))
    monkeypatch.setenv("IMGRAD_COMPILE", "1")
    x = sample((15, 18), torch.float32)
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        got = imgrad.gradient_magnitude(x, "prewitt")
    assert fast.POLICY.failed and not fast.POLICY.wants(10**12)
    assert torch.equal(got, reference(x, "prewitt", 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        assert torch.equal(imgrad.gradient_magnitude(x, "prewitt"), got)


# --------------------------------------------------------------------------- compat.gradient


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64, torch.int16])
@pytest.mark.parametrize("edge_order", [1, 2])
def test_gradient_is_torch_gradient_bit_for_bit(dtype: torch.dtype, edge_order: int) -> None:
    """imgrad.gradient writes into one preallocated output: still torch.gradient's bits."""
    for shape, spacing in [((37, 45), 0.7), ((3, 130, 5), [1, 2.5, 3])]:
        x = sample(shape, dtype)
        got = imgrad.gradient(x, spacing=spacing, edge_order=edge_order)
        want = torch.gradient(x, spacing=spacing, edge_order=edge_order)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and torch.equal(g, w)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 40, 37), (2, 3, 33, 41)])
def test_luminance_takes_the_fast_path_with_the_same_bits(dtype, shape, monkeypatch) -> None:
    """color='luminance' (the CLI's default for RGB) is fused too, and equals the reference."""
    x = (sample(shape, torch.float32) * 200).to(dtype)
    calls = []
    real = fast.gradient_magnitude
    monkeypatch.setattr(fast, "gradient_magnitude", lambda *a: calls.append(1) or real(*a))
    for norm in ("l2", "l1", "squared"):
        got = imgrad.gradient_magnitude(x, color="luminance", norm=norm, border="reflect")
        want = magnitude(spatial_gradient(x, color="luminance", border="reflect"), norm)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got, want), norm
    assert len(calls) == 3


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float64])
@pytest.mark.parametrize("kind", ["tensor", "numpy", "grad"])
def test_luminance_on_the_reference_path_makes_the_luma_once(dtype, kind, monkeypatch) -> None:
    """An image the fused path leaves to the reference one (small and eager, or recorded by
    autograd) reuses the luma made for the fused path: one luminance pass, the reference's bits
    and dtype, the input's rank and container, and the same input gradient."""
    from imgrad import gradients

    monkeypatch.setenv("IMGRAD_COMPILE", "0")
    monkeypatch.setattr(fast, "EAGER_MIN_PIXELS", 1 << 18)  # this module's fixture lowers it
    x = sample((3, 21, 17), dtype, seed=3)
    passes = []
    real = gradients.luminance
    monkeypatch.setattr(gradients, "luminance", lambda *a: passes.append(1) or real(*a))
    image: Any = x.numpy() if kind == "numpy" else x
    if kind == "grad":
        if not dtype.is_floating_point:
            pytest.skip("integer tensors cannot require grad")
        image = x.clone().requires_grad_()
    got = imgrad.gradient_magnitude(image, color="luminance")
    assert len(passes) == 1
    monkeypatch.setattr(gradients, "luminance", real)
    # the formula by hand: BT.601 luma in the compute dtype, its magnitude rounded once
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    r, g, b = x.to(compute).unbind(0)
    luma = r * 0.299 + g * 0.587 + b * 0.114
    want = magnitude(spatial_gradient(luma)).to(dtype if dtype.is_floating_point else compute)
    if kind == "numpy":
        assert isinstance(got, np.ndarray) and got.dtype == want.numpy().dtype
        got = torch.from_numpy(got)
    assert got.shape == (1, 21, 17) and torch.equal(got.detach(), want[None])
    if kind == "grad":  # the reference path as a whole, luma included: the same graph
        got.sum().backward()
        reference = x.clone().requires_grad_()
        spec = gradients.GradientSpec.build(color="luminance")
        gradients.first_order(reference, spec, norm="l2").sum().backward()
        assert torch.equal(image.grad, reference.grad)


def test_auto_policy_compiles_only_after_enough_eager_work(monkeypatch) -> None:
    """IMGRAD_COMPILE=auto: eager until AUTO_AFTER_PIXELS pixels (or the family's own figure)
    went through, then compiled; 0 never, 1 at once; anything else is refused with the accepted
    values."""
    monkeypatch.delenv("IMGRAD_COMPILE", raising=False)
    policy = CompilePolicy("test")
    assert not policy.wants(AUTO_AFTER_PIXELS - 1)
    assert not policy.wants(1)  # reaches the budget: this call still eager
    assert policy.wants(1) and policy.wants(10)
    own = CompilePolicy("own", after_pixels=100)
    assert not own.wants(99) and not own.wants(1) and own.wants(1)
    monkeypatch.setenv("IMGRAD_COMPILE", "0")
    assert not policy.wants(1)
    monkeypatch.setenv("IMGRAD_COMPILE", "1")
    assert CompilePolicy("fresh").wants(1)
    monkeypatch.setenv("IMGRAD_COMPILE", "yes")
    with pytest.raises(ValueError, match="IMGRAD_COMPILE must be one of auto, 0, 1"):
        policy.wants(1)


@pytest.mark.parametrize("ordinary_first", [0, 10**9])
def test_outputs_from_either_kind_of_page_give_the_same_numbers(ordinary_first, monkeypatch):
    """Large outputs come from torch (ordinary pages) for a process's first few, from numpy
    (huge pages) afterwards: either way a writable contiguous buffer, and the same magnitude of
    an RGB image (luma plane and output both 4.8 MB, above the huge-page size)."""
    from imgrad import _memory

    monkeypatch.setattr(_memory, "ORDINARY_PAGES_FIRST", ordinary_first)
    monkeypatch.setattr(_memory, "_large_outputs", itertools.count())
    buffer = _memory.empty((3, 1024, 1024), torch.float32, torch.device("cpu"))
    assert buffer.shape == (3, 1024, 1024) and buffer.is_contiguous()
    assert int(buffer.fill_(2).sum()) == 2 * buffer.numel()
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 1100, 1100), np.uint8))
    got = imgrad.gradient_magnitude(x, color="luminance")
    want = magnitude(spatial_gradient(x.float().requires_grad_(), color="luminance"))
    assert torch.equal(got, want.detach())
