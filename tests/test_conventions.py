"""The one convention, pinned: +x right, +y down, cross-correlation, (gy, gx), reflect101."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import imgrad


def _step_right(h: int = 4, w: int = 6, at: int = 3) -> torch.Tensor:
    """Dark (0) on the left, bright (1) from column ``at`` on."""
    x = torch.zeros(h, w, dtype=torch.float64)
    x[:, at:] = 1
    return x


def test_gradients_is_gy_then_gx():
    """The result is a named pair in dimension order, like torch.gradient: (d/drow, d/dcol)."""
    assert imgrad.Gradients._fields == ("gy", "gx")
    g = imgrad.sobel(_step_right())
    assert g[0] is g.gy and g[1] is g.gx
    assert imgrad.SecondDerivatives._fields == ("gyy", "gxy", "gxx")


def test_dark_to_bright_left_to_right_gives_positive_gx_exactly(device):
    """Sobel 3 raw on a 0/1 step: 4 on both columns next to the step, 0 elsewhere, gy = 0."""
    x = _step_right().to(device)
    g = imgrad.sobel(x)
    # derivative (f[j+1] - f[j-1]) = 1 on columns 2 and 3, smoothing 1 + 2 + 1 = 4 down the column
    expected = torch.tensor([[0, 0, 4, 4, 0, 0]] * 4, dtype=torch.float64, device=device)
    assert torch.equal(g.gx, expected)
    assert torch.equal(g.gy, torch.zeros_like(expected))


def test_top_to_bottom_step_gives_positive_gy(device):
    """A dark-to-bright step going down the image gives gy > 0: +y points down."""
    x = _step_right().T.contiguous().to(device)  # 6 rows, 4 columns; bright from row 3
    g = imgrad.sobel(x)
    expected = torch.tensor([[0] * 4] * 2 + [[4] * 4] * 2 + [[0] * 4] * 2, dtype=torch.float64)
    assert torch.equal(g.gy.cpu(), expected)
    assert torch.equal(g.gx, torch.zeros_like(g.gx))


def test_cross_correlation_not_convolution():
    """An asymmetric image tells cross-correlation from convolution: forward = f[j+1] - f[j]."""
    x = torch.tensor([[0.0, 1.0, 3.0, 7.0]] * 2)
    g = imgrad.forward_difference(x)
    # correlation with [-1, 1] at origin 0; reflect101 extends 7 with 3, so the last is 3 - 7
    assert g.gx[0].tolist() == [1.0, 2.0, 4.0, -4.0]
    # central difference is positive on an increasing ramp (convolution would flip the sign)
    assert imgrad.central_difference(x).gx[0, 1:3].tolist() == [1.5, 3.0]


def test_downward_gradient_is_plus_90_degrees_clockwise():
    """Angles are atan2(gy, gx): pointing down the image is +90° (clockwise on screen)."""
    x = _step_right().T.contiguous()
    g = imgrad.sobel(x)
    on_edge = g.gy > 0
    theta = imgrad.orientation(g, degrees=True)
    assert on_edge.sum() == 8
    assert torch.equal(theta[on_edge], torch.full((8,), 90.0, dtype=torch.float64))
    rad = imgrad.orientation(g)
    assert torch.equal(rad[on_edge], torch.full((8,), math.pi / 2, dtype=torch.float64))
    # a gradient pointing right is 0, pointing up (bright at the top) is 270° in [0, 360)
    assert imgrad.orientation(imgrad.sobel(_step_right()), degrees=True)[0, 2].item() == 0.0
    up = imgrad.sobel(1 - x)
    assert imgrad.orientation(up, degrees=True)[2, 0].item() == 270.0
    assert imgrad.orientation(up, degrees=True, signed=True)[2, 0].item() == -90.0


@pytest.mark.parametrize(
    ("border", "expected"),
    [
        ("reflect101", [0, 16, 32, 48, 0]),
        ("replicate", [4, 16, 32, 48, 28]),
    ],
)
def test_ramp_x_squared_borders(border, expected):
    """REFERENCE's example: Sobel 3 of x² along a row, OpenCV default and replicate."""
    row = torch.arange(5, dtype=torch.float64) ** 2
    x = row.repeat(3, 1)
    g = imgrad.sobel(x, border=border)
    assert g.gx.tolist() == [expected] * 3


def test_default_border_is_reflect101():
    """Omitting border gives exactly reflect101, and the ramp's outermost derivative is 0."""
    x = (torch.arange(5, dtype=torch.float64) ** 2).repeat(3, 1)
    default = imgrad.sobel(x)
    assert torch.equal(default.gx, imgrad.sobel(x, border="reflect101").gx)
    assert not torch.equal(default.gx, imgrad.sobel(x, border="replicate").gx)
    assert default.gx[:, 0].abs().sum() == 0 and default.gx[:, -1].abs().sum() == 0


def test_normalized_unit_ramp_is_one_and_raw_is_opencv_units():
    """normalized=False: Sobel 3 on a unit ramp gives 8 (OpenCV); normalized=True gives 1."""
    x = torch.arange(6, dtype=torch.float64).repeat(5, 1)
    assert imgrad.sobel(x).gx[:, 1:-1].unique().tolist() == [8.0]
    assert imgrad.sobel(x, normalized=True).gx[:, 1:-1].unique().tolist() == [1.0]
    assert imgrad.sobel(x, normalized=True, spacing=0.5).gx[:, 1:-1].unique().tolist() == [2.0]


def test_numpy_convention_matches_tensor():
    """The same convention holds for numpy input (numpy in, numpy out)."""
    g = imgrad.sobel(_step_right().numpy())
    assert isinstance(g.gx, np.ndarray)
    assert g.gx[0].tolist() == [0, 0, 4, 4, 0, 0]
