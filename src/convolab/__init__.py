"""convolab: the convolutions of deep learning in NumPy, from first principles to full speed.

>>> import numpy as np, convolab as cl
>>> cl.conv2d(np.arange(1, 10).reshape(1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]))
array([[[[ 83, 113],
         [173, 203]]]])
"""

import importlib as _importlib  # private: `convolab.importlib` is not part of the API

from . import grad
from ._vjp import GradcheckError, gradcheck, vjp
from ._settings import thread_count, workspace_limit
from .algorithms import ALGORITHMS
from .functional import conv, conv1d, conv2d, conv3d
from .planner import Plan, plan
from .pooling import (
    max_pool,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    avg_pool,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    adaptive_avg_pool,
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    max_unpool,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
)
from .shapes import conv_output_size, same_padding
from .signal import convolve, correlate
from .spec import ConvSpec, conv_spec, output_shape
from .transposed import conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d
from .unfold import fold, unfold

__version__ = "0.1.0"

# Showing the work needs scipy.signal and scipy.sparse (half a second to import), so the
# show package loads on first use of one of its names (PEP 562), not with ``import convolab``.
_SHOW_NAMES = ("Trace", "trace", "Identity", "IdentityChain", "Im2colMatrices", "im2col_matrices",
               "check_direct_equals_im2col", "check_flip", "check_input_gradient", "conv_matrix")


def __getattr__(name: str):
    """Load :mod:`convolab.show` the first time it, or one of its exported names, is asked for."""
    if name == "show" or name in _SHOW_NAMES:
        show = _importlib.import_module(".show", __name__)  # not `from . import`: that would ask this hook again

        value = show if name == "show" else getattr(show, name)
        globals()[name] = value  # later look-ups find it without this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SHOW_NAMES, "show"})


__all__ = [
    "Plan",
    "plan",
    *_SHOW_NAMES,
    "max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max_unpool",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "ALGORITHMS",
    "workspace_limit",
    "thread_count",
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
