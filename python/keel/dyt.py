"""DyT, Dynamic Tanh (Zhu et al. 2025), a normalization-free replacement of LayerNorm, for NumPy:

    y = weight * tanh(alpha * x) + bias        alpha a learnable scalar (initialised to 0.5)

    dyt(x, normalized_shape, alpha, weight=None, bias=None) -> y
    dyt_backward(dy, x, normalized_shape, alpha, weight=None, need_dx=True, need_dalpha=True,
                 need_dweight=True, need_dbias=True) -> (dx, dalpha, dweight, dbias)

Elementwise (a NaN stays in its element), keel's own float32 tanh (within 2 ulps). weight and
bias have shape normalized_shape (None: 1 and 0); dalpha is a numpy.float32 scalar, the sum over
every element of dy * weight * x * (1 - tanh(alpha x)^2).
"""

import numpy as np

from . import _lib
from ._arrays import (address_or_none, as_float, grad, optional_output, output, param_address, rows_in,
                      rows_like, run)

__all__ = ["dyt", "dyt_backward"]

_lib_ = _lib.lib


def dyt(x, normalized_shape, alpha, weight=None, bias=None):
    """y = weight * tanh(alpha * x) + bias over the trailing normalized_shape."""
    who = "keel.dyt"
    tx, x, lay = rows_in(x, normalized_shape, who)
    p_weight, p_bias = param_address(weight, lay, "weight", who), param_address(bias, lay, "bias", who)
    ty, y = output(lay, x.shape)
    run(_lib_.keel_dyt_fwd, lay.rows, lay.dim, tx, ty, as_float(alpha, "alpha", who), p_weight,
        p_bias, 0)
    return y


def dyt_backward(dy, x, normalized_shape, alpha, weight=None, need_dx=True, need_dalpha=True, need_dweight=True,
                 need_dbias=True):
    """Gradients of dyt: (dx, dalpha, dweight, dbias), None for the ones not asked for."""
    who = "keel.dyt_backward"
    tx, x, lay = rows_in(x, normalized_shape, who)
    tdy, dy = rows_like(dy, lay, x.shape, "dy", who)
    p_weight = param_address(weight, lay, "weight", who)
    tdx, dx = optional_output(need_dx, lay, x.shape)
    dalpha = np.zeros(1, np.float32) if need_dalpha else None
    dw, db = grad(need_dweight, lay.dims), grad(need_dbias, lay.dims)
    run(_lib_.keel_dyt_bwd, lay.rows, lay.dim, tdy, tx, as_float(alpha, "alpha", who), p_weight,
        tdx, address_or_none(dalpha), address_or_none(dw), address_or_none(db), 0)
    return dx, (dalpha[0] if need_dalpha else None), dw, db
