"""nn.Module wrappers: bit-identical to the functions, buffer-only state, compile and export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import check_contract, make_image
from torch import nn

import imgrad

# name -> (module factory, the matching function call)
MODULES = {
    "sobel3": (lambda: imgrad.Sobel(), lambda x: imgrad.sobel(x)),
    "sobel5": (lambda: imgrad.Sobel(5), lambda x: imgrad.sobel(x, ksize=5)),
    "sobel7_replicate": (
        lambda: imgrad.Sobel(7, border="replicate", normalized=True),
        lambda x: imgrad.sobel(x, ksize=7, border="replicate", normalized=True),
    ),
    "sobel1": (lambda: imgrad.Sobel(1), lambda x: imgrad.sobel(x, ksize=1)),
    "scharr": (lambda: imgrad.Scharr(), imgrad.scharr),
    "prewitt": (
        lambda: imgrad.Prewitt(border="constant", border_value=2.0),
        lambda x: imgrad.prewitt(x, border="constant", border_value=2.0),
    ),
    "central": (
        lambda: imgrad.CentralDifference(normalized=True, spacing=(0.5, 2.0)),
        lambda x: imgrad.central_difference(x, normalized=True, spacing=(0.5, 2.0)),
    ),
    "forward": (
        lambda: imgrad.ForwardDifference(border="circular"),
        lambda x: imgrad.forward_difference(x, border="circular"),
    ),
    "spatial_gradient": (
        lambda: imgrad.SpatialGradient("scharr", color="max"),
        lambda x: imgrad.spatial_gradient(x, "scharr", color="max"),
    ),
    "second_derivatives": (
        lambda: imgrad.Hessian(ksize=5, normalized=True),
        lambda x: imgrad.second_derivatives(x, ksize=5, normalized=True),
    ),
    "second_central": (
        lambda: imgrad.Hessian("central", border="reflect"),
        lambda x: imgrad.second_derivatives(x, "central", border="reflect"),
    ),
    "laplacian": (lambda: imgrad.Laplacian(3), lambda x: imgrad.laplacian(x, 3)),
    "laplacian1": (lambda: imgrad.Laplacian(), lambda x: imgrad.laplacian(x)),
    "magnitude": (
        lambda: imgrad.GradientMagnitude("prewitt", norm="l1"),
        lambda x: imgrad.gradient_magnitude(x, "prewitt", norm="l1"),
    ),
    "magnitude_l2": (lambda: imgrad.GradientMagnitude(), imgrad.gradient_magnitude),
}
STENCIL_MODULES = [k for k in MODULES if not k.startswith("magnitude")]


def _parts(out):
    return list(out) if isinstance(out, tuple) else [out]


def assert_same(a, b):
    pa, pb = _parts(a), _parts(b)
    assert len(pa) == len(pb)
    for u, v in zip(pa, pb, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert torch.equal(u, v), (u - v).abs().max()


@pytest.mark.parametrize("name", list(MODULES))
def test_module_equals_function(name, device):
    """forward(x) is bit-identical to the function, for float32, float64 and uint8 input."""
    make, fn = MODULES[name]
    m = make().to(device)
    for dtype in (torch.float32, torch.float64, torch.uint8):
        x = make_image((2, 3, 6, 7), dtype, device, seed=1)
        assert_same(m(x), fn(x))
    assert type(m(x)) is type(fn(x))  # Gradients / SecondDerivatives named tuples


@pytest.mark.parametrize("name", list(MODULES))
def test_module_contract(name, device):
    """The modules honour the same contract as the functions."""
    make, _ = MODULES[name]
    m = make().to(device)
    c_out = 1 if name == "spatial_gradient" else None
    check_contract(m, make_image((2, 3, 6, 7), torch.float32, device, seed=2), channels_out=c_out)


@pytest.mark.parametrize("name", list(MODULES))
def test_no_parameters_no_state(name):
    """parameters() and state_dict() are empty; the taps are non-persistent buffers."""
    m = MODULES[name][0]()
    assert list(m.parameters()) == []
    assert m.state_dict() == {}
    m.load_state_dict({})
    buffers = dict(m.named_buffers())
    assert buffers and all(n.endswith("_taps") for n in buffers)
    assert all(not b.requires_grad for b in buffers.values())


def test_buffers_hold_the_operator_taps():
    """The buffers are the operator's taps: Sobel 5 derivative, smoothing and second."""
    b = dict(imgrad.Sobel(5).named_buffers())
    assert b["derivative_taps"].tolist() == [-1, -2, 0, 2, 1]
    assert b["smoothing_taps"].tolist() == [1, 4, 6, 4, 1]
    assert b["second_taps"].tolist() == [1, 0, -2, 0, 1]
    assert "second_taps" not in dict(imgrad.Scharr().named_buffers())
    assert dict(imgrad.Scharr().named_buffers())["smoothing_taps"].tolist() == [3, 10, 3]


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("target", [torch.float64, torch.float16])
def test_buffers_move_with_to_and_are_used(name, target, device):
    """.to(dtype)/.to(device) converts the buffers and the results stay equal to the function."""
    make, fn = MODULES[name]
    m = make().to(device).to(target)
    assert all(b.dtype == target and b.device.type == device.type for b in m.buffers())
    x = make_image((1, 2, 6, 7), target, device, seed=3)
    assert_same(m(x), fn(x))
    assert_same(m(x.float()), fn(x.float()))


def test_buffers_are_actually_used():
    """Scaling a module's derivative buffer scales its output: forward computes with it."""
    x = make_image((1, 1, 6, 7), torch.float64, seed=4)
    m = imgrad.Sobel()
    m.derivative_taps.mul_(3)
    g, ref = m(x), imgrad.sobel(x)
    torch.testing.assert_close(g.gx, 3 * ref.gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g.gy, 3 * ref.gy, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(g.gx, ref.gx)
    lap = imgrad.Laplacian(3)
    lap.second_taps.mul_(2)
    assert torch.equal(lap(x), 2 * imgrad.laplacian(x, 3))
    mag = imgrad.GradientMagnitude()
    mag.gradient.smoothing_taps.mul_(0.5)
    torch.testing.assert_close(mag(x), imgrad.gradient_magnitude(x) / 2, rtol=0, atol=0)


def test_orientation_module_equals_function(device):
    """Orientation(degrees, signed) on a Gradients pair equals the function."""
    x = make_image((2, 1, 6, 7), torch.float64, device, seed=5)
    g = imgrad.sobel(x)
    for degrees in (False, True):
        for signed in (False, True):
            m = imgrad.Orientation(degrees=degrees, signed=signed)
            assert_same(m(g), imgrad.orientation(g, degrees=degrees, signed=signed))
    m = imgrad.Orientation()
    assert list(m.parameters()) == [] and m.state_dict() == {}
    assert_same(nn.Sequential(imgrad.Sobel(), m)(x), imgrad.orientation(g))


def test_sequential_and_input_gradient_match_the_function_path():
    """Sequential(GradientMagnitude(), Conv2d(1, 2, 1)): finite input gradient, same as function."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 1).double()
    net = nn.Sequential(imgrad.GradientMagnitude(), conv)
    x0 = make_image((2, 1, 7, 8), torch.float64, seed=6)
    x0[..., :3, :3] = 0.25  # a flat patch: zero gradient vectors inside the net
    x = x0.clone().requires_grad_(True)
    loss = net(x).square().mean()
    loss.backward()
    assert x.grad is not None and x.grad.isfinite().all() and x.grad.abs().sum() > 0
    y = x0.clone().requires_grad_(True)
    conv(imgrad.gradient_magnitude(y)).square().mean().backward()
    assert torch.equal(x.grad, y.grad)
    assert all(p.grad is not None for p in conv.parameters())


def test_sequential_with_second_derivative_modules():
    """Laplacian and Sobel compose with ordinary layers."""
    x = make_image((2, 3, 6, 6), torch.float32, seed=7)
    net = nn.Sequential(imgrad.Laplacian(3), nn.ReLU())
    assert torch.equal(net(x), imgrad.laplacian(x, 3).relu())


@pytest.mark.parametrize("name", list(MODULES))
def test_compile_fullgraph_equals_eager(name):
    """torch.compile(module, fullgraph=True) with aot_eager: no graph break, same bits."""
    torch._dynamo.reset()
    make, _ = MODULES[name]
    m = make()
    x = make_image((1, 2, 6, 7), torch.float32, seed=8)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    assert_same(compiled(x), m(x))


@pytest.mark.parametrize("border", ["reflect101", "reflect", "replicate", "constant", "circular"])
@pytest.mark.parametrize("shape", [(7, 8), (6, 9)])  # Sobel 7 (halo 3): by parts, then whole
def test_compiled_operators_by_parts_equal_eager(border, shape):
    """Traced by torch.compile, derivatives are computed as interior + four border bands (the
    border arithmetic only on the bands): the same bits as eager for every border, first and
    second derivatives, including the smallest images that still split; the input gradient
    agrees to rounding in float64 (its sums are accumulated in another order)."""
    torch._dynamo.reset()
    x = make_image((2, 1, *shape), torch.float32, seed=12) * 10
    modules = (
        imgrad.Sobel(7, border=border),
        imgrad.Hessian("sobel", ksize=5, border=border),
    )
    for m in modules:
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        assert_same(compiled(x), m(x))
        xe, xc = x.double().requires_grad_(), x.double().requires_grad_()
        sum(g.square().sum() for g in m(xe)).backward()
        sum(g.square().sum() for g in compiled(xc)).backward()
        torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-12, atol=0.0)


def test_compile_orientation_fullgraph():
    """The Orientation module compiles without graph breaks as well."""
    torch._dynamo.reset()
    g = imgrad.sobel(make_image((1, 1, 6, 7), torch.float32, seed=9))
    m = imgrad.Orientation(degrees=True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    assert_same(compiled(g), m(g))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own jit imports in inductor
def test_compile_inductor_small_input():
    """One run of the default (inductor) backend on a small input: equal to eager."""
    torch._dynamo.reset()
    m = imgrad.Sobel()
    x = make_image((1, 1, 8, 9), torch.float32, seed=10)
    try:
        compiled = torch.compile(m, fullgraph=True)
        out = compiled(x)
    except Exception as exc:  # pragma: no cover - a missing C compiler is not imgrad's fault
        if "compiler" in str(exc).lower() or "cc" in type(exc).__name__.lower():
            pytest.skip(f"inductor unavailable: {exc}")
        raise
    ref = m(x)
    # inductor may fuse the multiply-adds (FMA): equal up to float32 rounding
    torch.testing.assert_close(out.gx, ref.gx, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.gy, ref.gy, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", STENCIL_MODULES + ["magnitude_l2"])
def test_export_equals_eager(name):
    """torch.export.export(module, (x,)) runs and its program gives the eager results."""
    make, _ = MODULES[name]
    m = make()
    x = make_image((1, 3, 6, 7), torch.float32, seed=11)
    program = torch.export.export(m, (x,))
    assert_same(program.module()(x), m(x))


def test_repr_shows_the_options():
    """extra_repr lists operator, ksize (Sobel), border, normalized, color; norm; angle flags."""
    assert repr(imgrad.Sobel(5, border="replicate", normalized=True)) == (
        "Sobel(operator='sobel', ksize=5, border='replicate', normalized=True, color='channels')"
    )
    assert repr(imgrad.Scharr(color="luminance")) == (
        "Scharr(operator='scharr', border='reflect101', normalized=False, color='luminance')"
    )
    assert repr(imgrad.Laplacian(3)).startswith("Laplacian(operator='sobel', ksize=3,")
    assert "norm='l1'" in repr(imgrad.GradientMagnitude(norm="l1"))
    assert "operator='prewitt'" in repr(imgrad.GradientMagnitude("prewitt"))
    assert repr(imgrad.Orientation(degrees=True)) == "Orientation(degrees=True, signed=False)"


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: imgrad.Sobel(4), ValueError, r"ksize must be one of \(1, 3, 5, 7\)"),
        (lambda: imgrad.Sobel(border="mirror"), ValueError, r"unknown border 'mirror'"),
        (lambda: imgrad.Sobel(color="rgb"), ValueError, r"color must be one of"),
        (lambda: imgrad.Sobel(spacing=2.0), ValueError, r"pass normalized=True"),
        (lambda: imgrad.Sobel(normalized="yes"), TypeError, r"normalized must be True or False"),
        (lambda: imgrad.Scharr(ksize=5), ValueError, r"ksize applies to sobel only"),
        (lambda: imgrad.SpatialGradient("roberts"), ValueError, r"unknown operator 'roberts'"),
        (lambda: imgrad.Hessian("prewitt"), ValueError, r"prewitt has no second"),
        (lambda: imgrad.Hessian(color="max"), ValueError, r"color='max'"),
        (lambda: imgrad.Laplacian(9), ValueError, r"ksize must be one of"),
        (lambda: imgrad.GradientMagnitude(norm="l3"), ValueError, r"norm must be one of"),
        (lambda: imgrad.GradientMagnitude(border="x"), ValueError, r"unknown border 'x'"),
        (lambda: imgrad.Orientation(degrees="yes"), TypeError, r"degrees must be True or False"),
        (lambda: imgrad.Orientation(signed=1), TypeError, r"signed must be True or False"),
    ],
)
def test_invalid_options_raise_at_construction(make, exc, match):
    """Options are checked when the module is built, not at the first forward."""
    with pytest.raises(exc, match=match):
        make()


def test_forward_errors_are_the_functions():
    """Input errors at forward time are the functions' errors."""
    with pytest.raises(ValueError, match=r"too small"):
        imgrad.Sobel(7)(torch.rand(1, 1, 0, 3))
    with pytest.raises(TypeError, match=r"bool images"):
        imgrad.Scharr()(torch.zeros(4, 4, dtype=torch.bool))


# --------------------------------------------------------------------------- threshold stage


def test_threshold_modules_equal_their_functions():
    """Threshold(value|ratio|otsu) and HysteresisThreshold give the functions' masks."""
    from imgrad import thresholds as th

    torch.manual_seed(3)
    m = imgrad.gradient_magnitude(torch.rand(2, 1, 24, 20) * 255)
    assert torch.equal(imgrad.Threshold(300.0)(m), th.threshold(m, 300.0))
    assert torch.equal(imgrad.Threshold(ratio=0.4)(m), th.threshold_relative(m, 0.4))
    assert torch.equal(imgrad.Threshold(otsu=True)(m), th.threshold_otsu(m))
    hyst = imgrad.HysteresisThreshold(200.0, 500.0, connectivity=4)
    assert torch.equal(hyst(m), th.hysteresis_threshold(m, 200.0, 500.0, connectivity=4))
    assert hyst(m).sum() < th.threshold(m, 200.0).sum()  # some weak pixels are dropped


def test_threshold_stage_in_a_sequential():
    """Image -> magnitude -> mask in one nn.Sequential, no parameters."""
    net = torch.nn.Sequential(imgrad.GradientMagnitude(), imgrad.Threshold(ratio=0.5))
    img = torch.zeros(1, 1, 8, 8)
    img[..., 4:] = 1.0
    mask = net(img)
    assert mask.dtype == torch.bool
    assert mask[0, 0, :, 3:5].all() and not mask[0, 0, :, :3].any()
    assert list(net.parameters()) == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: imgrad.Threshold(), "exactly one of"),
        (lambda: imgrad.Threshold(1.0, ratio=0.5), "exactly one of"),
        (lambda: imgrad.HysteresisThreshold(1, 2, connectivity=6), "connectivity must be 4 or 8"),
        (lambda: imgrad.HysteresisThreshold(200, 100), "low must not exceed high"),
        (lambda: imgrad.HysteresisThreshold(math.nan, 1), "low must not be NaN"),
        (lambda: imgrad.Threshold(ratio=math.nan), "ratio must not be NaN"),
        (lambda: imgrad.Threshold(torch.tensor([1.0, math.nan])), "value must not be NaN"),
    ],
)
def test_threshold_modules_reject_bad_options(build, message):
    """At build time, not at the first forward."""
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: imgrad.Threshold(value="a"), "value must be a real number, got str"),
        (lambda: imgrad.HysteresisThreshold("1", 2), "low must be a real number, got str"),
        (lambda: imgrad.Threshold(otsu=1), "otsu must be True or False"),
    ],
)
def test_threshold_modules_reject_bad_types(build, message):
    with pytest.raises(TypeError, match=message):
        build()


def test_threshold_modules_take_numpy_numbers_and_per_image_values():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(imgrad.Threshold(np.float32(20))(x), x > 20)
    per_image = imgrad.Threshold(torch.tensor([3.0, 30.0]))(x)
    assert torch.equal(per_image, x > torch.tensor([3.0, 30.0]).reshape(2, 1, 1, 1))
    band = imgrad.HysteresisThreshold(np.int64(5), np.float64(9.5))(x[:1])
    assert torch.equal(band, x[:1] > 5)  # a ramp: every pixel above 5 touches one above 9.5


def test_threshold_module_repr():
    assert repr(imgrad.Threshold(ratio=0.25)) == "Threshold(ratio=0.25)"
    assert repr(imgrad.HysteresisThreshold(1, 2)) == (
        "HysteresisThreshold(low=1.0, high=2.0, connectivity=8)"
    )
