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
    HysteresisThreshold,
    Laplacian,
    Orientation,
    Prewitt,
    Scharr,
    Sobel,
    SpatialGradient,
    Threshold,
)
from .operators import OPERATOR_NAMES
from .thresholds import (
    hysteresis_threshold,
    non_maximum_suppression,
    otsu_threshold,
    threshold,
    threshold_otsu,
    threshold_relative,
)
from .tiled import process_huge

__version__ = "0.1.0"

__all__ = [
    "BORDERS",
    "OPERATOR_NAMES",
    "Canny",
    "CannyResult",
    "CentralDifference",
    "ForwardDifference",
    "GradientMagnitude",
    "Gradients",
    "Hessian",
    "HysteresisThreshold",
    "Laplacian",
    "Orientation",
    "Prewitt",
    "Recipe",
    "Scharr",
    "SecondDerivatives",
    "Sobel",
    "SpatialGradient",
    "Threshold",
    "canny",
    "central_difference",
    "forward_difference",
    "gradient",
    "gradient_magnitude",
    "hysteresis_threshold",
    "image_gradients",
    "laplacian",
    "magnitude",
    "non_maximum_suppression",
    "orientation",
    "otsu_threshold",
    "prewitt",
    "process_file",
    "process_huge",
    "process_tree",
    "scharr",
    "second_derivatives",
    "sobel",
    "spatial_gradient",
    "threshold",
    "threshold_otsu",
    "threshold_relative",
]
