"""keel: LayerNorm and RMSNorm (forward and backward) from the C library libkeel, for NumPy
and, through keel.torch, for PyTorch; and the ops around them in a transformer block.

    import numpy as np, keel
    y, mean, rstd = keel.layer_norm(x, 768, weight, bias, return_stats=True)
    dx, dw, db = keel.layer_norm_backward(dy, x, 768, weight, mean, rstd)
    y, h = keel.add_rms_norm(h, attn_out, 768, weight)       # fused residual add + RMSNorm

The functions, each documented in its module:
  keel.functional  layer_norm, rms_norm and their backwards (RMSNorm: add_unit_offset, Gemma)
  keel.residual    add_layer_norm, add_rms_norm (pre-norm, post-norm, DeepNorm), layer_scale,
                   and their backwards
  keel.batchnorm   batch_norm, batch_norm_backward (running statistics, momentum)
  keel.dyt         dyt, dyt_backward (Dynamic Tanh)
  keel.quant       layer_norm_int8, rms_norm_int8 (int8 output), eps_check
  keel.torch       LayerNorm and RMSNorm modules for PyTorch, patch(model) (imports torch)
"""

from . import _context, _lib
from ._context import get_num_threads, set_num_threads
from ._errors import (KeelError, KeelMemoryError, KeelRuntimeError, KeelTypeError,
                      KeelValueError)
from .batchnorm import batch_norm, batch_norm_backward
from .dyt import dyt, dyt_backward
from .functional import (FLOAT32_EPS, layer_norm, layer_norm_backward, rms_norm,
                         rms_norm_backward)
from .quant import EpsInfo, eps_check, layer_norm_int8, rms_norm_int8
from .residual import (AddLayerNormGrads, AddRMSNormGrads, add_layer_norm, add_layer_norm_backward,
                       add_rms_norm, add_rms_norm_backward, layer_scale, layer_scale_backward)

__version__ = _lib.lib.keel_version_string().decode()
library_path = _lib.path  # the libkeel that was loaded

__all__ = [
    "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward",
    "add_layer_norm", "add_layer_norm_backward", "add_rms_norm", "add_rms_norm_backward",
    "layer_scale", "layer_scale_backward", "batch_norm", "batch_norm_backward", "dyt", "dyt_backward",
    "layer_norm_int8", "rms_norm_int8", "eps_check", "EpsInfo", "AddLayerNormGrads", "AddRMSNormGrads",
    "set_num_threads", "get_num_threads", "isa", "FLOAT32_EPS", "library_path",
    "KeelError", "KeelValueError", "KeelTypeError", "KeelMemoryError", "KeelRuntimeError",
]


def isa():
    """The instruction-set path of the default context: "scalar", "avx2", "avx512" or "neon"."""
    return _context.default().isa()


def __getattr__(name):
    # `import keel` stays light; keel.torch imports torch on first use.
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")
