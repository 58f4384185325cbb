"""convolab: the convolutions of deep learning in NumPy, from first principles to full speed.

>>> import numpy as np, convolab as cl
>>> cl.conv2d(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]))
array([[[[ 83, 113],
         [173, 203]]]])
"""

from . import grad
from ._vjp import GradcheckError, gradcheck, vjp
from .algorithms import ALGORITHMS
from .functional import conv, conv1d, conv2d, conv3d
from .shapes import conv_output_size, same_padding
from .signal import convolve, correlate
from .spec import ConvSpec, conv_spec, output_shape
from .transposed import conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d
from .unfold import fold, unfold

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "ConvSpec",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_output_size",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "fold",
    "grad",
    "gradcheck",
    "GradcheckError",
    "unfold",
    "vjp",
    "conv_spec",
    "convolve",
    "correlate",
    "output_shape",
    "same_padding",
]
