"""The NumPy API of the norms, shaped like torch.nn.functional: layer_norm, rms_norm and their
backwards.

Arrays have any leading shape and are normalized over the trailing `normalized_shape`. x, dy:
float32, float16 or bfloat16 (ml_dtypes): keel computes in float32 (statistics in float64) and
y/dx come back in x's dtype. float64 and other dtypes raise TypeError, never converted silently
(call `x.astype(np.float32)` yourself). weight, bias, mean, rstd and the parameter gradients
are float32. Outputs are new C-contiguous arrays; mean and rstd have x's leading shape.

    layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, return_stats=False)
        -> y, or (y, mean, rstd)
    layer_norm_backward(dy, x, normalized_shape, weight=None, mean=None, rstd=None, eps=1e-5,
                        need_dx=True, need_dweight=True, need_dbias=True) -> (dx, dweight, dbias)
    rms_norm(x, normalized_shape, weight=None, eps=None, return_stats=False,
             add_unit_offset=False) -> y, or (y, rstd)
    rms_norm_backward(dy, x, normalized_shape, weight=None, rstd=None, eps=None, need_dx=True,
                      need_dweight=True, add_unit_offset=False) -> (dx, dweight)

add_unit_offset=True scales by (1 + weight), Gemma's RMSNorm (weights initialised to 0); dweight
is then the gradient with respect to weight (the same numbers).
"""

import numpy as np

from . import _context, _lib
from ._numpy_ext import fast as _fast
from ._arrays import (BF16, F16, F32, NULL_ROW, address, address_or_none, as_float, grad, optional_output,
                      output, param_address, rows_in, rows_like, run, stat, stat_address)

__all__ = ["layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward", "FLOAT32_EPS"]

_NULL_ROW = NULL_ROW  # keel.torch's stand-in address for empty tensors
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # torch's RMSNorm default eps for float32
# RMSNorm's eps=None, as torch: the machine epsilon of x's dtype
MACHINE_EPS = {F32: FLOAT32_EPS, F16: 2.0 ** -10, BF16: 2.0 ** -7}
GAMMA_PLUS_ONE = 1 << 2  # KEEL_FLAG_GAMMA_PLUS_ONE

_lib_ = _lib.lib


def rms_eps(eps, lay, who):
    """RMSNorm's eps: None is the machine epsilon of x's dtype (as torch)."""
    return MACHINE_EPS.get(lay.code, FLOAT32_EPS) if eps is None else as_float(eps, "eps", who)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, return_stats=False):
    """y = (x - mean) * rstd * weight + bias over the trailing normalized_shape.
    With return_stats: (y, mean, rstd), mean and rstd of x's leading shape (for the backward)."""
    if _fast is not None:  # the compiled entry takes the common case (keel/_numpy_ext.py)
        out = _fast.layer_norm(_context.current or _context.default(), x, normalized_shape, weight, bias, eps,
                               return_stats)
        if out is not NotImplemented:
            return out
    who = "keel.layer_norm"
    tx, x, lay = rows_in(x, normalized_shape, who)
    p_weight = param_address(weight, lay, "weight", who)
    p_bias = param_address(bias, lay, "bias", who)
    ty, y = output(lay, x.shape)
    if return_stats:
        mean, rstd = np.empty(lay.lead, np.float32), np.empty(lay.lead, np.float32)
        pm, pr = address(mean), address(rstd)
    else:
        pm = pr = None
    run(_lib_.keel_layernorm_fwd, lay.rows, lay.dim, tx, ty, p_weight, p_bias, as_float(eps, "eps", who), pm, pr, 0)
    return (y, mean, rstd) if return_stats else y


def rms_norm(x, normalized_shape, weight=None, eps=None, return_stats=False, add_unit_offset=False):
    """y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps); eps None: the machine epsilon
    of x's dtype (as torch; float32: 1.1920929e-07). With return_stats: (y, rstd).
    add_unit_offset: scale by (1 + weight) (Gemma)."""
    if _fast is not None:
        out = _fast.rms_norm(_context.current or _context.default(), x, normalized_shape, weight, eps, return_stats,
                             add_unit_offset)
        if out is not NotImplemented:
            return out
    who = "keel.rms_norm"
    tx, x, lay = rows_in(x, normalized_shape, who)
    p_weight = param_address(weight, lay, "weight", who)
    ty, y = output(lay, x.shape)
    rstd = stat(return_stats, lay.lead)
    run(_lib_.keel_rmsnorm_fwd, lay.rows, lay.dim, tx, ty, p_weight, rms_eps(eps, lay, who),
        address_or_none(rstd), GAMMA_PLUS_ONE if add_unit_offset else 0)
    return (y, rstd) if return_stats else y


def layer_norm_backward(dy, x, normalized_shape, weight=None, mean=None, rstd=None, eps=1e-5,
                        need_dx=True, need_dweight=True, need_dbias=True):
    """Gradients of layer_norm: (dx, dweight, dbias), None for the ones not asked for.
    mean, rstd: the forward's statistics (both or neither; neither: recomputed from x with eps).
    dweight is computed whenever asked, also with weight None (the gradient at weight = 1)."""
    if _fast is not None:
        out = _fast.layer_norm_backward(_context.current or _context.default(), dy, x, normalized_shape, weight, mean,
                                        rstd, eps, need_dx, need_dweight, need_dbias)
        if out is not NotImplemented:
            return out
    who = "keel.layer_norm_backward"
    tx, x, lay = rows_in(x, normalized_shape, who)
    tdy, dy = rows_like(dy, lay, x.shape, "dy", who)
    p_weight = param_address(weight, lay, "weight", who)
    p_mean = stat_address(mean, lay, "mean", who)
    p_rstd = stat_address(rstd, lay, "rstd", who)
    tdx, dx = optional_output(need_dx, lay, x.shape)
    dw, db = grad(need_dweight, lay.dims), grad(need_dbias, lay.dims)
    run(_lib_.keel_layernorm_bwd, lay.rows, lay.dim, tdy, tx, p_mean, p_rstd, p_weight, as_float(eps, "eps", who),
        tdx, address_or_none(dw), address_or_none(db), 0)
    return dx, dw, db


def rms_norm_backward(dy, x, normalized_shape, weight=None, rstd=None, eps=None, need_dx=True,
                      need_dweight=True, add_unit_offset=False):
    """Gradients of rms_norm: (dx, dweight), None for the ones not asked for.
    rstd: the forward's statistic (None: recomputed from x with eps)."""
    if _fast is not None:
        out = _fast.rms_norm_backward(_context.current or _context.default(), dy, x, normalized_shape, weight, rstd,
                                      eps, need_dx, need_dweight, add_unit_offset)
        if out is not NotImplemented:
            return out
    who = "keel.rms_norm_backward"
    tx, x, lay = rows_in(x, normalized_shape, who)
    tdy, dy = rows_like(dy, lay, x.shape, "dy", who)
    p_weight = param_address(weight, lay, "weight", who)
    p_rstd = stat_address(rstd, lay, "rstd", who)
    tdx, dx = optional_output(need_dx, lay, x.shape)
    dw = grad(need_dweight, lay.dims)
    run(_lib_.keel_rmsnorm_bwd, lay.rows, lay.dim, tdy, tx, p_rstd, p_weight,
        rms_eps(eps, lay, who), tdx, address_or_none(dw), GAMMA_PLUS_ONE if add_unit_offset else 0)
    return dx, dw
