"""keel: LayerNorm and RMSNorm (forward and backward) from the C library libkeel, for NumPy
and, through keel.torch, for PyTorch.

    import numpy as np, keel
    y, mean, rstd = keel.layer_norm(x, 768, weight, bias, return_stats=True)
    dx, dw, db = keel.layer_norm_backward(dy, x, 768, weight, mean, rstd)
"""

from . import _context, _lib
from ._context import get_num_threads, set_num_threads
from ._errors import (KeelError, KeelMemoryError, KeelRuntimeError, KeelTypeError,
                      KeelValueError)
from .functional import (FLOAT32_EPS, layer_norm, layer_norm_backward, rms_norm,
                         rms_norm_backward)

__version__ = _lib.lib.keel_version_string().decode()
library_path = _lib.path  # the libkeel that was loaded

__all__ = [
    "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward",
    "set_num_threads", "get_num_threads", "isa", "FLOAT32_EPS", "library_path",
    "KeelError", "KeelValueError", "KeelTypeError", "KeelMemoryError", "KeelRuntimeError",
]


def isa():
    """The instruction-set path of the default context: "scalar", "avx2" or "avx512"."""
    return _context.default().isa()


def __getattr__(name):
    # `import keel` stays light; keel.torch imports torch on first use.
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
