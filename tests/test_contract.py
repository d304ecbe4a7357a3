"""The contract of every public op, driven by ``tests/registry.py`` (torchvision's
``check_kernel`` for imgrad).

One test, ``test_contract[op-check]``, runs each check of :data:`registry.CHECKS` on each op of
the registry. A check the registry marks unsupported (with its reason) runs as
``xfail(strict=True)``: it must really fail, so a stale "cannot" shows up as an XPASS failure.
``test_registry_is_the_public_api`` fails when a public name is added to ``imgrad.__all__``
without an entry.

Cost (the whole file: about 2 min on 2 loaded cores): compile, export and ONNX dominate; they
run once per op on a tiny ``(2, 3, 6, 7)`` float32 batch (just above twice Sobel 5's halo, so
that the compiled interior/border split is taken), gradcheck on a ``(1, 3, 4, 5)`` float64
image.
"""

from __future__ import annotations

import contextlib
import io
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from conftest import (
    CUDA,
    assert_same,
    check_batch,
    check_dtype_device,
    check_empty_batch,
    check_layouts,
    check_rank,
    check_unmodified,
)
from registry import ANY_DTYPES, CHECKS, NOT_AN_OP, REGISTRY, Entry

import imgrad

SHAPE = (2, 3, 8, 9)  # the contract's batch
GRAD_SHAPE = (1, 3, 4, 5)  # gradcheck: the full Jacobian of 60 inputs, 3 channels for colour
TRACE_SHAPE = (2, 3, 6, 7)  # compile, export, ONNX: the graph, not the pixels, costs
#: gradgradcheck of the whole second-order Jacobian costs 1-3.5 s per op (75 s in all); its
#: fast mode (random projections u^T H v, PyTorch's own choice for large inputs) ~0.03 s.
#: gradcheck runs in full: every entry of the Jacobian, 0.2-0.5 s per op.
FAST = {"fast_mode": True}
OPS = [name for name, entry in REGISTRY.items() if entry.is_op]
#: checks that run on the device fixture's device too (cuda where one is present)
ON_DEVICE = {"unmodified", "dtype", "layout", "batch", "empty_batch", "rank", "vmap", "func_grad"}


# ----------------------------------------------------------------------------- the registry


def test_registry_is_the_public_api():
    """Every public name is registered, and nothing else: a new name must say what it can do."""
    assert len(set(imgrad.__all__)) == len(imgrad.__all__)
    assert set(REGISTRY) == set(imgrad.__all__)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry(name):
    """Each entry names every check, builds the object it is registered under, and non-ops are
    what their kind says."""
    entry, public = REGISTRY[name], getattr(imgrad, name)
    assert set(entry.checks) == set(CHECKS)
    assert all(r is None or (isinstance(r, str) and r) for r in entry.checks.values())
    if not entry.is_op:
        assert all(r.startswith(NOT_AN_OP) for r in entry.checks.values())
        if entry.kind == "result type":
            assert issubclass(public, tuple) and public._fields
        elif entry.kind == "constant":
            assert isinstance(public, (dict, tuple)) and public
        else:
            assert entry.kind == "file function" and callable(public)
        return
    op = entry.make()
    if isinstance(public, type):
        assert isinstance(op, public) and isinstance(op, torch.nn.Module)
    else:
        assert op is public


# ----------------------------------------------------------------------------- helpers


def _inputs(entry: Entry, shape=SHAPE, dtype=torch.float64, seed=0, device="cpu"):
    return tuple(x.to(device) for x in entry.inputs(shape, dtype, seed))


def _op(entry: Entry, device="cpu") -> Any:
    op = entry.make()
    return op.to(device) if isinstance(op, torch.nn.Module) else op


def _fn(entry: Entry, device="cpu") -> Callable[..., tuple[torch.Tensor, ...]]:
    op = _op(entry, device)
    return lambda *xs: entry.call(op, *xs)


def _own_code(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` with a code object of its own: dynamo counts recompilations per code object, and
    every op's wrapper would otherwise share one (and hit its limit)."""
    code = fn.__code__.replace(co_name=f"contract_{name}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


class _Wrapped(torch.nn.Module):
    """The op as a module returning a tuple of tensors (what the exporters take)."""

    def __init__(self, entry: Entry) -> None:
        super().__init__()
        self.entry = entry
        op = entry.make()
        self.op = op if isinstance(op, torch.nn.Module) else None
        self.fn = None if self.op is not None else op

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.entry.call(self.op if self.op is not None else self.fn, *xs)


def _differentiable(out: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [p for p in out if p.requires_grad]


def _loss(out: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A scalar that weighs every element of every differentiable field differently."""
    fields = _differentiable(out)
    assert fields, "no result is differentiable"
    total = 0
    for k, p in enumerate(fields):
        g = torch.Generator().manual_seed(k)
        w = torch.rand(p.shape, generator=g, dtype=torch.float64).to(p.device, p.dtype)
        total = total + (p * w).sum()
    return total


# ----------------------------------------------------------------------------- the checks


def _autograd(entry: Entry, device: str, dtype: torch.dtype) -> tuple[Callable[..., Any], Any]:
    fn = _fn(entry, device)
    xs = _inputs(entry, GRAD_SHAPE, torch.float64, device=device)
    if dtype.is_complex:
        im = _inputs(entry, GRAD_SHAPE, torch.float64, seed=1, device=device)
        xs = tuple(torch.complex(a, b) for a, b in zip(xs, im, strict=True))
    xs = tuple(x.requires_grad_() for x in xs)
    assert _differentiable(fn(*xs)), "no result is differentiable"
    return fn, xs


def check_gradcheck(entry: Entry, device: str) -> None:
    fn, xs = _autograd(entry, device, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: tuple(_differentiable(fn(*a))), xs)


def check_gradgradcheck(entry: Entry, device: str) -> None:
    fn, xs = _autograd(entry, device, torch.float64)
    assert torch.autograd.gradgradcheck(lambda *a: tuple(_differentiable(fn(*a))), xs, **FAST)


def check_complex(entry: Entry, device: str) -> None:
    fn, xs = _autograd(entry, device, torch.complex128)
    assert all(p.is_complex() for p in fn(*xs))
    differentiable = lambda *a: tuple(_differentiable(fn(*a)))  # noqa: E731
    assert torch.autograd.gradcheck(differentiable, xs)
    assert torch.autograd.gradgradcheck(differentiable, xs, **FAST)


def check_unmodified_(entry: Entry, device: str) -> None:
    for dtype in (torch.float64, torch.uint8 if torch.uint8 in entry.dtypes else torch.float32):
        check_unmodified(_fn(entry, device), *_inputs(entry, dtype=dtype, device=device))


def check_dtype(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    for dtype in ANY_DTYPES:
        xs = _inputs(entry, dtype=dtype, device=device)
        if dtype not in entry.dtypes:
            with pytest.raises(TypeError):
                fn(*xs)
            continue
        out = fn(*xs)
        check_dtype_device(out, xs[0], entry.result_dtypes(dtype), entry.result_shapes(SHAPE))


def check_layout(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    xs = _inputs(entry, dtype=entry.exact, device=device)
    check_layouts(fn, fn(*xs), *xs)


def check_batch_(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    xs = _inputs(entry, dtype=entry.exact, device=device)
    check_batch(fn, fn(*xs), *xs)


def check_empty_batch_(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    xs = _inputs(entry, dtype=entry.exact, device=device)
    check_empty_batch(fn, fn(*xs), *xs)


def check_rank_(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    xs = _inputs(entry, dtype=entry.exact, device=device)
    check_rank(fn, fn(*xs), *xs, keeps_channels=entry.channels_out is None)


def check_vmap(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    xs = _inputs(entry, dtype=entry.exact, device=device)
    assert_same(torch.func.vmap(fn)(*xs), fn(*xs))


def check_func_grad(entry: Entry, device: str) -> None:
    fn = _fn(entry, device)
    xs = _inputs(entry, GRAD_SHAPE, device=device)
    argnums = tuple(range(len(xs)))
    got = torch.func.grad(lambda *a: _loss(fn(*a)), argnums=argnums)(*xs)
    leaves = [x.clone().requires_grad_() for x in xs]
    # an input the result does not depend on (gy, gx of non_maximum_suppression) gets zeros
    want = torch.autograd.grad(
        _loss(fn(*leaves)), leaves, allow_unused=True, materialize_grads=True
    )
    assert_same(tuple(got), tuple(want))


def check_compile(entry: Entry, device: str) -> None:
    # backend="eager": dynamo's capture with fullgraph=True is what is checked (no graph break,
    # the traced code path gives the same bits); AOT tracing and functionalisation are
    # checked by torch.export below, and inductor's C++ build would cost ~10 s per op.
    fn = _own_code(_fn(entry, device), entry_name(entry))
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    for seed in (0, 1):  # the second call reuses the graph: its guards hold for a new image
        xs = _inputs(entry, TRACE_SHAPE, torch.float32, seed, device)
        assert_same(compiled(*xs), fn(*xs))


#: ExportedPrograms that ``export`` and ``onnx_dynamo`` share: whichever runs first exports the
#: op (1-3 s each, 30-40 s in all) and leaves the program for the other, which takes it out.
_PROGRAMS: dict[str, torch.export.ExportedProgram] = {}


def _exported(entry: Entry) -> torch.export.ExportedProgram:
    name = entry_name(entry)
    program = _PROGRAMS.pop(name, None)
    if program is None:
        module = _Wrapped(entry).eval()
        program = torch.export.export(module, _inputs(entry, TRACE_SHAPE, torch.float32))
        _PROGRAMS[name] = program
    return program


def check_export(entry: Entry, device: str) -> None:
    program = _exported(entry)
    xs = _inputs(entry, TRACE_SHAPE, torch.float32, seed=1)  # not the traced values
    assert_same(program.module()(*xs), _Wrapped(entry).eval()(*xs))


def _onnxruntime(model: bytes, entry: Entry) -> None:
    """Run the ONNX model in onnxruntime on the traced input and a new one, and compare with
    eager. Masks must be equal; floats within 4 float32 ulp of the field's largest value. The
    graph is the same arithmetic (float64 square roots and angles rounded once), and all 47
    models that run are bit-identical here; the margin is for onnxruntime builds that fuse the
    tap products into FMAs or vectorise differently (each changes a sum by < 1 ulp of it)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    module = _Wrapped(entry).eval()
    for seed in (0, 1):
        xs = _inputs(entry, TRACE_SHAPE, torch.float32, seed)
        feed = {f"x{i}": x.numpy() for i, x in enumerate(xs) if f"x{i}" in names}
        got = [torch.from_numpy(a) for a in session.run(None, feed)]
        want = module(*xs)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
            if w.is_floating_point():
                scale = max(1.0, float(w.abs().max()))
                tol = 4 * torch.finfo(w.dtype).eps * scale
                torch.testing.assert_close(g, w, rtol=0, atol=tol)
            else:
                assert torch.equal(g, w), (g != w).sum()


def check_onnx_dynamo(entry: Entry, device: str) -> None:
    xs = _inputs(entry, TRACE_SHAPE, torch.float32)
    names = [f"x{i}" for i in range(len(xs))]
    with warnings.catch_warnings():
        # torch's exporter deep-copies pytree specs through its own deprecated API (torch's
        # warning, not imgrad's): "`isinstance(treespec, LeafSpec)` is deprecated"
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
        program = torch.onnx.export(
            _exported(entry),  # torch.export's program of the op, as the exporter makes it
            xs,
            dynamo=True,
            input_names=names,
            verbose=False,
            optimize=False,
        )
    _onnxruntime(program.model_proto.SerializeToString(), entry)


def check_onnx_legacy(entry: Entry, device: str) -> None:
    xs = _inputs(entry, TRACE_SHAPE, torch.float32)
    names = [f"x{i}" for i in range(len(xs))]
    f = io.BytesIO()
    with _legacy_warnings():
        torch.onnx.export(_Wrapped(entry).eval(), xs, f, dynamo=False, input_names=names)
    _onnxruntime(f.getvalue(), entry)


@contextlib.contextmanager
def _legacy_warnings() -> Iterator[None]:
    """The warnings of the legacy exporter that are expected, and only those, silenced."""
    with warnings.catch_warnings():
        # the legacy exporter is what this check is about: its deprecation notice is expected
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        # the tracer sees sizes as tensors and bakes imgrad's size checks in ("Converting a
        # tensor to a Python boolean"): the graph is for this shape, which the check then
        # uses; a baked *value* would show up as wrong results on the second input
        warnings.filterwarnings(
            "ignore", "Converting a tensor to a Python", torch.jit.TracerWarning
        )
        # constant folding of strided slices is skipped, with a note
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        yield


def check_meta(entry: Entry, device: str) -> None:
    """On ``meta`` (which, like CUDA, refuses to mix with CPU tensors), forward and backward
    keep every result there with the CPU's shapes and dtypes: nothing is made on the CPU.
    Checks the device-agnostic code without a GPU, with and without deterministic algorithms
    (deterministic: the border gather instead of ``F.pad``)."""
    cpu = tuple(x.requires_grad_() for x in _inputs(entry))
    want = _fn(entry)(*cpu)
    differentiable = bool(_differentiable(want))
    if differentiable:
        sum(p.sum() for p in _differentiable(want)).backward()
    before = torch.are_deterministic_algorithms_enabled()
    for deterministic in (False, True):
        xs = tuple(x.detach().to("meta").requires_grad_() for x in cpu)
        torch.use_deterministic_algorithms(deterministic)
        try:
            got = _fn(entry, "meta")(*xs)
            if differentiable:
                sum(p.sum() for p in _differentiable(got)).backward()
        finally:
            torch.use_deterministic_algorithms(before)
        assert [(p.device.type, p.shape, p.dtype, p.requires_grad) for p in got] == [
            ("meta", w.shape, w.dtype, w.requires_grad) for w in want
        ]
        for x, c in zip(xs, cpu, strict=True):  # the inputs the CPU run differentiates
            assert (x.grad is None) == (c.grad is None)
            assert x.grad is None or (x.grad.device.type, x.grad.shape) == ("meta", x.shape)


RUN: dict[str, Callable[[Entry, str], None]] = {
    "gradcheck": check_gradcheck,
    "gradgradcheck": check_gradgradcheck,
    "complex": check_complex,
    "unmodified": check_unmodified_,
    "dtype": check_dtype,
    "layout": check_layout,
    "batch": check_batch_,
    "empty_batch": check_empty_batch_,
    "rank": check_rank_,
    "vmap": check_vmap,
    "func_grad": check_func_grad,
    "compile": check_compile,
    "export": check_export,
    "onnx_dynamo": check_onnx_dynamo,
    "onnx_legacy": check_onnx_legacy,
    "meta": check_meta,
}
assert set(RUN) == set(CHECKS)


def entry_name(entry: Entry) -> str:
    return next(name for name, e in REGISTRY.items() if e is entry)


def _cases() -> Iterator[Any]:
    for name in OPS:
        for check in CHECKS:
            reason = REGISTRY[name].checks[check]
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            devices = ["cpu", "cuda"] if check in ON_DEVICE else ["cpu"]
            for device in devices:
                device_marks = marks
                if device == "cuda":
                    device_marks = [*marks, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
                yield pytest.param(
                    name, check, device, marks=device_marks, id=f"{name}-{check}-{device}"
                )


@pytest.fixture(scope="module")
def _torchlib_once() -> Iterator[None]:
    """``torch.onnx.export(dynamo=True)`` rebuilds its registry of torchlib translations at
    every call, parsing the source of ~500 functions: 1.5-5 s here, a third to a half of each
    export. Built once for this module instead; it is only written to when a
    ``custom_translation_table`` is given, which no check does."""
    try:
        from torch.onnx._internal.exporter import _registration

        original = _registration.ONNXRegistry.__dict__["from_torchlib"].__func__
    except (ImportError, KeyError):  # moved in another torch: every export pays for it
        yield
        return
    built: dict[Any, Any] = {}

    def from_torchlib(cls: type, *args: Any, **kwargs: Any) -> Any:
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = original(cls, *args, **kwargs)
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(from_torchlib))
        yield


@pytest.fixture(scope="module", autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    """One reset before and after the module: no compiled code leaks in or out."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("name", "check", "device"), list(_cases()))
def test_contract(name, check, device, request):
    """``check`` holds for the public op ``name`` (see the registry for the reasons of the
    ones that do not)."""
    if check == "onnx_dynamo":
        request.getfixturevalue("_torchlib_once")
    RUN[check](REGISTRY[name], device)


def test_legacy_onnx_export_of_a_large_magnitude():
    """From 2**18 pixels ``gradient_magnitude`` takes the fused path, whose numpy-backed buffers
    the legacy exporter's trace cannot record (``aten::lift_fresh``): traced, it must take the
    tensor path. The contract's tiny images never reach the fused path."""
    import onnxruntime

    x, y = (torch.rand(1, 1, 512, 513, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    module = _Wrapped(REGISTRY["gradient_magnitude"]).eval()
    f = io.BytesIO()
    with _legacy_warnings():
        torch.onnx.export(module, (x,), f, dynamo=False, input_names=["x0"])
    session = onnxruntime.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x0": y.numpy()})
    assert_same(torch.from_numpy(got), module(y)[0])
