"""Low precision for NumPy: LayerNorm / RMSNorm forwards writing int8 (for an int8 matmul
downstream) and what an eps becomes in a storage dtype (docs/low-precision.md).

    layer_norm_int8(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, scale=None,
                    smooth=None, return_stats=False)
        -> (q, row_scale) with scale None, q with a scale;  return_stats appends mean, rstd
    rms_norm_int8(x, normalized_shape, weight=None, eps=None, *, scale=None, smooth=None,
                  add_unit_offset=False, return_stats=False)
        -> (q, row_scale) or q;  return_stats appends rstd
    eps_check(dtype, eps) -> EpsInfo

q = clip(round_half_even(y / s), -127, 127) as int8 (a NaN y gives 0), y the float forward's
output: s = scale (a float > 0, one per tensor), or with scale None a per-row scale
row_scale = max|y_row| / 127 (float32, x's leading shape; a row of zeros gets 0, a row with NaN
gets NaN, and q = 0 there). smooth (float32, shape normalized_shape, each > 0): SmoothQuant's
per-feature factors, folded into the affine parameters (weight / smooth, bias / smooth). x may
be float32, float16 or bfloat16.

eps_check says what eps becomes in a dtype ("f32", "bf16", "f16" or a NumPy dtype: float32,
float16, ml_dtypes.bfloat16): EpsInfo(eps, eps_in_dtype, representable, subnormal_in_dtype,
max_amplification, dominance_variance, dtype_noise_variance, suggested_eps), the fields of
keel_eps_info (include/keel.h). keel itself always holds eps in float32.
"""

import ctypes
from collections import namedtuple

import numpy as np

from . import _lib
from ._arrays import BF16, F16, F32, I8, address_or_none, as_float, output, param_address, rows_in, run, stat
from ._errors import EINVAL, KeelTypeError, KeelValueError
from .functional import GAMMA_PLUS_ONE, rms_eps

__all__ = ["layer_norm_int8", "rms_norm_int8", "eps_check", "EpsInfo"]

EpsInfo = namedtuple("EpsInfo", "eps eps_in_dtype representable subnormal_in_dtype max_amplification "
                                "dominance_variance dtype_noise_variance suggested_eps")
EpsInfo.__module__ = "keel"

_lib_ = _lib.lib
_INT8 = np.dtype(np.int8)


def _quant(lay, scale, smooth, who):
    """keel_quant_i8 of the call, the row scales (None with a fixed scale) and the arrays
    the struct points to."""
    p_smooth = param_address(smooth, lay, "smooth", who)
    if scale is None:
        row_scale = stat(True, lay.lead)
        return _lib.QuantI8(0.0, address_or_none(row_scale), p_smooth), row_scale, p_smooth
    s = as_float(scale, "scale", who)
    if s == 0.0:
        raise KeelValueError(f"{who}: scale (0) must be > 0 (None: a dynamic per-row scale)", EINVAL)
    return _lib.QuantI8(s, None, p_smooth), None, p_smooth


def _result(q, row_scale, stats):
    out = (q,) if row_scale is None else (q, row_scale)
    out += stats
    return out if len(out) > 1 else q


def layer_norm_int8(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, scale=None, smooth=None,
                    return_stats=False):
    """layer_norm's y quantized to int8: (q, row_scale) with a dynamic per-row scale (scale
    None), or q with a fixed scale; return_stats appends mean and rstd."""
    who = "keel.layer_norm_int8"
    tx, x, lay = rows_in(x, normalized_shape, who)
    p_weight, p_bias = param_address(weight, lay, "weight", who), param_address(bias, lay, "bias", who)
    quant, row_scale, keep = _quant(lay, scale, smooth, who)
    ty, q = output(lay, x.shape, _INT8)
    mean, rstd = stat(return_stats, lay.lead), stat(return_stats, lay.lead)
    run(_lib_.keel_layernorm_fwd_i8, lay.rows, lay.dim, tx, ty, p_weight, p_bias,
        as_float(eps, "eps", who), quant, address_or_none(mean), address_or_none(rstd), 0)
    return _result(q, row_scale, (mean, rstd) if return_stats else ())


def rms_norm_int8(x, normalized_shape, weight=None, eps=None, *, scale=None, smooth=None, add_unit_offset=False,
                  return_stats=False):
    """rms_norm's y quantized to int8: (q, row_scale) with scale None, or q; return_stats
    appends rstd. add_unit_offset: scale by (1 + weight) (Gemma)."""
    who = "keel.rms_norm_int8"
    tx, x, lay = rows_in(x, normalized_shape, who)
    p_weight = param_address(weight, lay, "weight", who)
    quant, row_scale, keep = _quant(lay, scale, smooth, who)
    ty, q = output(lay, x.shape, _INT8)
    rstd = stat(return_stats, lay.lead)
    run(_lib_.keel_rmsnorm_fwd_i8, lay.rows, lay.dim, tx, ty, p_weight, rms_eps(eps, lay, who),
        quant, address_or_none(rstd), GAMMA_PLUS_ONE if add_unit_offset else 0)
    return _result(q, row_scale, (rstd,) if return_stats else ())


_DTYPE_NAMES = {"f32": F32, "fp32": F32, "float32": F32, "bf16": BF16, "bfloat16": BF16, "f16": F16,
                "fp16": F16, "float16": F16, "half": F16, "i8": I8, "int8": I8}


def _keel_dtype(dtype, who):
    name = dtype if isinstance(dtype, str) else None
    if name is None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    code = _DTYPE_NAMES.get(name.lower()) if name is not None else None
    if code is None:
        raise KeelTypeError(f"{who}: dtype {dtype!r} is not one of f32, bf16, f16 (or a NumPy float32, "
                            f"float16, bfloat16 dtype)", EINVAL)
    return code


def eps_check(dtype, eps):
    """What eps becomes when stored in dtype (keel_eps_check): an EpsInfo."""
    who = "keel.eps_check"
    info = _lib.EpsInfo()
    _lib.check(_lib_.keel_eps_check(_keel_dtype(dtype, who), as_float(eps, "eps", who), ctypes.byref(info)))
    return EpsInfo(info.eps, info.eps_in_dtype, bool(info.representable), bool(info.subnormal_in_dtype),
                   info.max_amplification, info.dominance_variance, info.dtype_noise_variance, info.suggested_eps)
