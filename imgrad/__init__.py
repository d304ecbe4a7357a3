"""imgrad: image gradients and edge detection on PyTorch.

Functions take tensors, numpy arrays or PIL images shaped ``(H, W)``, ``(C, H, W)`` or
``(N, C, H, W)``; every derivative operator is a fixed-weight separable stencil applied by one
engine, differentiable with respect to the input, on CPU or CUDA. Results come in dimension
order, ``Gradients(gy, gx)``, with +x right and +y down.
"""

from .batch import Recipe, process_file, process_tree
from .canny import Canny, CannyResult, canny
from .compat import gradient, image_gradients
from .engine import BORDERS
from .gradients import (
    Gradients,
    SecondDerivatives,
    central_difference,
    forward_difference,
    gradient_magnitude,
    laplacian,
    magnitude,
    orientation,
    prewitt,
    scharr,
    second_derivatives,
    sobel,
    spatial_gradient,
)
from .modules import (
    CentralDifference,
    ForwardDifference,
    GradientMagnitude,
    Hessian,
    Laplacian,
    Orientation,
    Prewitt,
    Scharr,
    Sobel,
    SpatialGradient,
)
from .operators import OPERATOR_NAMES
from .tiled import process_huge

__version__ = "0.1.0"

__all__ = [
    "Canny",
    "CannyResult",
    "canny",
    "BORDERS",
    "OPERATOR_NAMES",
    "CentralDifference",
    "ForwardDifference",
    "GradientMagnitude",
    "Gradients",
    "Hessian",
    "Laplacian",
    "Orientation",
    "Prewitt",
    "Recipe",
    "Scharr",
    "SecondDerivatives",
    "Sobel",
    "SpatialGradient",
    "central_difference",
    "forward_difference",
    "gradient",
    "gradient_magnitude",
    "image_gradients",
    "laplacian",
    "magnitude",
    "orientation",
    "process_file",
    "process_huge",
    "process_tree",
    "prewitt",
    "scharr",
    "second_derivatives",
    "sobel",
    "spatial_gradient",
]
