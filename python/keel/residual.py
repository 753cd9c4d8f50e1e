"""The residual stream's ops for NumPy: fused residual add + LayerNorm / RMSNorm (pre-norm,
post-norm, DeepNorm, LayerScale fused) and LayerScale, forward and backward (docs/blocks.md).

    h = alpha * x + branch_scale * branch + skip_bias       (float32: ((alpha*x) + (s*b)) + bias)
    y = layer_norm(h) or rms_norm(h)                         (bitwise keel.layer_norm / rms_norm of h)

x is the residual stream coming in (DeepNorm up-weights it by alpha), `branch` the output of the
sublayer (attention, MLP); branch_scale (LayerScale's per-feature lambda) and skip_bias are
optional float32 arrays of shape normalized_shape. ONNX Runtime's SkipLayerNormalization(input,
skip, gamma, beta, bias) is add_layer_norm(input, skip, n, gamma, beta, eps, skip_bias=bias).

    add_layer_norm(x, branch, normalized_shape, weight=None, bias=None, eps=1e-5, *, alpha=1.0,
                   branch_scale=None, skip_bias=None, return_sum=True, return_stats=False)
        -> y, h (the new residual stream) [, mean, rstd]      return_sum=False (post-norm): y [, mean, rstd]
    add_rms_norm(x, branch, normalized_shape, weight=None, eps=None, *, alpha=1.0,
                 branch_scale=None, skip_bias=None, add_unit_offset=False, return_sum=True,
                 return_stats=False)
        -> y, h [, rstd]                                      return_sum=False: y [, rstd]
    add_layer_norm_backward(dy, x, branch, normalized_shape, weight=None, mean=None, rstd=None,
                            eps=1e-5, *, h=None, dh=None, alpha=1.0, branch_scale=None,
                            skip_bias=None, need_...) -> AddLayerNormGrads
    add_rms_norm_backward(...) -> AddRMSNormGrads (no dbias)
    layer_scale(x, branch, scale) -> h = x + scale * branch
    layer_scale_backward(dh, branch, scale, need_dx=True, need_dbranch=True, need_dscale=True)
        -> (dx, dbranch, dscale)

The backwards take dy (the gradient of y) and dh (the gradient of h from above, None in a
post-norm block), and give, with G = dh + the norm's dx: dx = alpha * G, dbranch =
branch_scale * G, dbranch_scale = sum over rows of G * branch, dskip_bias = sum over rows of G,
and dweight, dbias of the norm. h: the forward's h, or None to recompute it from x, branch,
alpha, branch_scale and skip_bias (bitwise the same); with h given, x may be None, and branch
too unless dbranch_scale is wanted. Gradients not asked for are None; dbranch_scale and
dskip_bias are asked for by default exactly when branch_scale / skip_bias are given.
"""

from collections import namedtuple

from . import _lib
from ._arrays import (NO_TENSOR, address_or_none, as_float, grad, optional_output, output, param_address,
                      require_array, rows_in, rows_like, run, stat, stat_address)
from .functional import GAMMA_PLUS_ONE, rms_eps

__all__ = ["add_layer_norm", "add_layer_norm_backward", "add_rms_norm", "add_rms_norm_backward",
           "layer_scale", "layer_scale_backward", "AddLayerNormGrads", "AddRMSNormGrads"]

AddLayerNormGrads = namedtuple("AddLayerNormGrads", "dx dbranch dweight dbias dbranch_scale dskip_bias")
AddRMSNormGrads = namedtuple("AddRMSNormGrads", "dx dbranch dweight dbranch_scale dskip_bias")
for _cls in (AddLayerNormGrads, AddRMSNormGrads):
    _cls.__module__ = "keel"

_lib_ = _lib.lib


def _optional_rows(a, lay, shape, name, who):
    """(keel_tensor, array) of an optional input of x's shape; the absent tensor for None."""
    return (NO_TENSOR, None) if a is None else rows_like(a, lay, shape, name, who)


def _residual(tx, tb, lay, alpha, branch_scale, skip_bias, who):
    """keel_residual of the call, and the arrays it points to (keep them alive)."""
    scale = param_address(branch_scale, lay, "branch_scale", who)
    sbias = param_address(skip_bias, lay, "skip_bias", who)
    res = _lib.Residual(tx, tb, as_float(alpha, "alpha", who), scale, sbias)
    return res, (scale, sbias)


def _add_norm_forward(op, who, x, branch, normalized_shape, weight, bias, eps, alpha, branch_scale,
                      skip_bias, return_sum, return_stats, flags):
    tx, x, lay = rows_in(x, normalized_shape, who)
    tb, branch = rows_like(branch, lay, x.shape, "branch", who)
    res, keep = _residual(tx, tb, lay, alpha, branch_scale, skip_bias, who)
    p_weight = param_address(weight, lay, "weight", who)
    th, h = output(lay, x.shape) if return_sum else (NO_TENSOR, None)
    ty, y = output(lay, x.shape)
    rstd = stat(return_stats, lay.lead)
    if op == "layer_norm":
        p_bias = param_address(bias, lay, "bias", who)
        mean = stat(return_stats, lay.lead)
        run(_lib_.keel_add_layernorm_fwd, lay.rows, lay.dim, res, th, ty, p_weight,
            p_bias, as_float(eps, "eps", who), address_or_none(mean), address_or_none(rstd), flags)
        stats = (mean, rstd)
    else:
        run(_lib_.keel_add_rmsnorm_fwd, lay.rows, lay.dim, res, th, ty, p_weight,
            rms_eps(eps, lay, who), address_or_none(rstd), flags)
        stats = (rstd,)
    out = (y, h) if return_sum else (y,)
    out += stats if return_stats else ()
    return out if len(out) > 1 else y


def add_layer_norm(x, branch, normalized_shape, weight=None, bias=None, eps=1e-5, *, alpha=1.0,
                   branch_scale=None, skip_bias=None, return_sum=True, return_stats=False):
    """h = alpha * x + branch_scale * branch + skip_bias, y = layer_norm(h), in one pass.
    Returns (y, h) (pre-norm: h is the new residual stream), or y alone with return_sum=False
    (post-norm, DeepNorm: h is not written); return_stats appends mean and rstd."""
    return _add_norm_forward("layer_norm", "keel.add_layer_norm", x, branch, normalized_shape, weight, bias,
                             eps, alpha, branch_scale, skip_bias, return_sum, return_stats, 0)


def add_rms_norm(x, branch, normalized_shape, weight=None, eps=None, *, alpha=1.0, branch_scale=None,
                 skip_bias=None, add_unit_offset=False, return_sum=True, return_stats=False):
    """h = alpha * x + branch_scale * branch + skip_bias, y = rms_norm(h), in one pass.
    Returns (y, h), or y with return_sum=False; return_stats appends rstd. eps None: the machine
    epsilon of x's dtype. add_unit_offset: scale by (1 + weight) (Gemma)."""
    return _add_norm_forward("rms_norm", "keel.add_rms_norm", x, branch, normalized_shape, weight, None, eps,
                             alpha, branch_scale, skip_bias, return_sum, return_stats,
                             GAMMA_PLUS_ONE if add_unit_offset else 0)


def _add_norm_backward(op, who, dy, x, branch, normalized_shape, weight, mean, rstd, eps, h, dh, alpha,
                       branch_scale, skip_bias, need_dx, need_dbranch, need_dweight, need_dbias,
                       need_dbranch_scale, need_dskip_bias, flags):
    tdy, dy, lay = rows_in(dy, normalized_shape, who, "dy")
    shape = dy.shape
    tx, x = _optional_rows(x, lay, shape, "x", who)
    tb, branch = _optional_rows(branch, lay, shape, "branch", who)
    th, h = _optional_rows(h, lay, shape, "h", who)
    tdh, dh = _optional_rows(dh, lay, shape, "dh", who)
    res, keep = _residual(tx, tb, lay, alpha, branch_scale, skip_bias, who)
    p_weight = param_address(weight, lay, "weight", who)
    p_rstd = stat_address(rstd, lay, "rstd", who)
    tdx, dx = optional_output(need_dx, lay, shape)
    tdb, dbranch = optional_output(need_dbranch, lay, shape)
    if need_dbranch_scale is None:
        need_dbranch_scale = branch_scale is not None
    if need_dskip_bias is None:
        need_dskip_bias = skip_bias is not None
    dscale, dsbias = grad(need_dbranch_scale, lay.dims), grad(need_dskip_bias, lay.dims)
    grads = _lib.ResidualGrads(tdx, tdb, address_or_none(dscale), address_or_none(dsbias))
    dw = grad(need_dweight, lay.dims)
    if op == "layer_norm":
        p_mean = stat_address(mean, lay, "mean", who)
        db = grad(need_dbias, lay.dims)
        run(_lib_.keel_add_layernorm_bwd, lay.rows, lay.dim, tdy, tdh, res, th, p_mean,
            p_rstd, p_weight, as_float(eps, "eps", who), grads,
            address_or_none(dw), address_or_none(db), flags)
        return AddLayerNormGrads(dx, dbranch, dw, db, dscale, dsbias)
    run(_lib_.keel_add_rmsnorm_bwd, lay.rows, lay.dim, tdy, tdh, res, th, p_rstd,
        p_weight, rms_eps(eps, lay, who), grads, address_or_none(dw), flags)
    return AddRMSNormGrads(dx, dbranch, dw, dscale, dsbias)


def add_layer_norm_backward(dy, x, branch, normalized_shape, weight=None, mean=None, rstd=None, eps=1e-5, *,
                            h=None, dh=None, alpha=1.0, branch_scale=None, skip_bias=None, need_dx=True,
                            need_dbranch=True, need_dweight=True, need_dbias=True, need_dbranch_scale=None,
                            need_dskip_bias=None):
    """Gradients of add_layer_norm: AddLayerNormGrads(dx, dbranch, dweight, dbias,
    dbranch_scale, dskip_bias), None for the ones not asked for. dh: the gradient of h from
    above (None: 0, post-norm). mean, rstd: the forward's (both or neither: recomputed)."""
    return _add_norm_backward("layer_norm", "keel.add_layer_norm_backward", dy, x, branch, normalized_shape,
                              weight, mean, rstd, eps, h, dh, alpha, branch_scale, skip_bias, need_dx,
                              need_dbranch, need_dweight, need_dbias, need_dbranch_scale, need_dskip_bias, 0)


def add_rms_norm_backward(dy, x, branch, normalized_shape, weight=None, rstd=None, eps=None, *, h=None,
                          dh=None, alpha=1.0, branch_scale=None, skip_bias=None, add_unit_offset=False,
                          need_dx=True, need_dbranch=True, need_dweight=True, need_dbranch_scale=None,
                          need_dskip_bias=None):
    """Gradients of add_rms_norm: AddRMSNormGrads(dx, dbranch, dweight, dbranch_scale,
    dskip_bias), None for the ones not asked for. rstd: the forward's (None: recomputed)."""
    return _add_norm_backward("rms_norm", "keel.add_rms_norm_backward", dy, x, branch, normalized_shape,
                              weight, None, rstd, eps, h, dh, alpha, branch_scale, skip_bias, need_dx,
                              need_dbranch, need_dweight, False, need_dbranch_scale, need_dskip_bias,
                              GAMMA_PLUS_ONE if add_unit_offset else 0)


def _scale_shape(scale, who):
    return require_array(scale, "scale", who).shape


def layer_scale(x, branch, scale):
    """LayerScale (CaiT): h = x + scale * branch, scale a float32 array over x's trailing
    dimensions (its shape is the feature shape; CaiT initialises it to 0.1, 1e-5 at depth 24,
    1e-6 deeper). add_layer_norm(..., branch_scale=scale) fuses it with the norm after it."""
    who = "keel.layer_scale"
    tx, x, lay = rows_in(x, _scale_shape(scale, who), who)
    tb, branch = rows_like(branch, lay, x.shape, "branch", who)
    p_scale = param_address(scale, lay, "scale", who)
    th, h = output(lay, x.shape)
    run(_lib_.keel_layerscale_fwd, lay.rows, lay.dim, tx, tb, p_scale, th, 0)
    return h


def layer_scale_backward(dh, branch, scale, need_dx=True, need_dbranch=True, need_dscale=True):
    """Gradients of layer_scale: (dx, dbranch, dscale) = (dh, scale * dh, sum over rows of
    dh * branch), None for the ones not asked for. branch is read only for dscale (may be None
    otherwise)."""
    who = "keel.layer_scale_backward"
    tdh, dh, lay = rows_in(dh, _scale_shape(scale, who), who, "dh")
    tb, branch = _optional_rows(branch, lay, dh.shape, "branch", who)
    p_scale = param_address(scale, lay, "scale", who)
    tdx, dx = optional_output(need_dx, lay, dh.shape)
    tdb, dbranch = optional_output(need_dbranch, lay, dh.shape)
    dscale = grad(need_dscale, lay.dims)
    run(_lib_.keel_layerscale_bwd, lay.rows, lay.dim, tdh, tb, p_scale, tdx, tdb,
        address_or_none(dscale), 0)
    return dx, dbranch, dscale
