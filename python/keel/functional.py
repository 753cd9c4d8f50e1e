"""The NumPy API, shaped like torch.nn.functional: layer_norm, rms_norm and their backwards.

Arrays have any leading shape and are normalized over the trailing `normalized_shape`. x, dy:
float32; float16 and bfloat16 (ml_dtypes) arrays are handed to keel with their dtype (a keel
without low-precision storage answers KEEL_EUNSUPPORTED: TypeError; one with it computes, and
y/dx come back in x's dtype). float64 and other dtypes raise TypeError here, never converted
silently (call `x.astype(np.float32)` yourself). weight, bias, mean, rstd and the parameter
gradients are float32. Outputs are new C-contiguous arrays; mean and rstd have x's leading shape.
"""

import numpy as np

from . import _context, _lib
from ._errors import EINVAL, EUNSUPPORTED, KeelTypeError, KeelValueError
from ._layout import normalized_tuple, row_stride, split_shape

F32, BF16, F16, I8 = 0, 1, 2, 3
# keel_dtype by NumPy type number (a fast lookup); bfloat16 (ml_dtypes) is found by its name
_DTYPE_CODES = {np.dtype(np.float32).num: F32, np.dtype(np.float16).num: F16, np.dtype(np.int8).num: I8}

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # torch's RMSNorm default eps for float32
# RMSNorm's eps=None, as torch: the machine epsilon of x's dtype
_MACHINE_EPS = {F32: FLOAT32_EPS, F16: 2.0 ** -10, BF16: 2.0 ** -7}

_NULL_ROW = np.zeros(1, np.float32)  # a valid address for empty tensors; never read or written


def _dtype_code(a, name, who):
    code = _DTYPE_CODES.get(a.dtype.num)
    if code is None and a.dtype.name == "bfloat16":
        code = BF16
    if code is None:
        raise KeelTypeError(
            f"{who}: {name}.dtype {a.dtype.name} is not supported (this version: float32 only; "
            f"convert with .astype(numpy.float32))", EUNSUPPORTED)
    return code


def _array(a, name, who):
    if not isinstance(a, np.ndarray):
        raise KeelTypeError(f"{who}: {name} must be a numpy.ndarray (got {type(a).__name__})", EINVAL)
    return a


def _rows_view(a, k, dim, code):
    """keel_tensor of array a, reading its rows in place when they are evenly strided, else
    those of a contiguous copy (which the keel_tensor keeps alive)."""
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        stride = dim
    elif flags.aligned and all(s % a.itemsize == 0 for s in a.strides):
        stride = row_stride(a.shape, [s // a.itemsize for s in a.strides], k, dim)
    else:
        stride = None
    if stride is None:
        a = np.ascontiguousarray(a)
        stride = dim
    ptr = a.ctypes.data if a.size else _NULL_ROW.ctypes.data
    return _lib.Tensor(ptr, code, stride, owner=a)


def _param(p, name, who, shape=None, size=None):
    """p (weight, bias, mean, rstd) as a dense float32 array, or None."""
    if p is None:
        return None
    p = _array(p, name, who)
    if p.dtype != np.float32:
        raise KeelTypeError(f"{who}: {name}.dtype {p.dtype.name} is not supported (it must be float32)",
                            EUNSUPPORTED)
    if shape is not None and p.shape != shape:
        raise KeelValueError(f"{who}: {name}.shape {p.shape} != normalized_shape {shape}", EINVAL)
    if size is not None and p.size != size:
        raise KeelValueError(f"{who}: {name} has {p.size} values, x has {size} rows", EINVAL)
    p = np.ascontiguousarray(p)
    return p if p.flags.aligned else p.copy()


def _out(x, code):
    return np.empty(x.shape, np.float32 if code == F32 else x.dtype)


def _eps(eps, who):
    try:
        return float(eps)
    except (TypeError, ValueError):
        raise KeelTypeError(f"{who}: eps ({eps!r}) must be a float", EINVAL) from None


def _prepare(x, normalized_shape, who):
    x = _array(x, "x", who)
    dims = normalized_tuple(normalized_shape, who)
    code = _dtype_code(x, "x", who)
    lead, rows, dim = split_shape(x.shape, dims, who)
    tx = _rows_view(x, len(dims), dim, code)
    return x, tx, dims, lead, rows, dim, code


def _stat(needed, lead):
    return np.empty(lead, np.float32) if needed else None


def _addr(a):
    return None if a is None else (a.ctypes.data if a.size else _NULL_ROW.ctypes.data)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, return_stats=False):
    """y = (x - mean) * rstd * weight + bias over the trailing normalized_shape.
    With return_stats: (y, mean, rstd), mean and rstd of x's leading shape (for the backward)."""
    who = "keel.layer_norm"
    x, tx, dims, lead, rows, dim, code = _prepare(x, normalized_shape, who)
    weight = _param(weight, "weight", who, shape=dims)
    bias = _param(bias, "bias", who, shape=dims)
    y = _out(x, code)
    ty = _lib.Tensor(_addr(y), code, dim)
    mean, rstd = _stat(return_stats, lead), _stat(return_stats, lead)
    _context.default().call(_lib.lib.keel_layernorm_fwd, rows, dim, tx, ty, _addr(weight),
                            _addr(bias), _eps(eps, who), _addr(mean), _addr(rstd), 0)
    return (y, mean, rstd) if return_stats else y


def rms_norm(x, normalized_shape, weight=None, eps=None, return_stats=False):
    """y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps); eps None: the machine epsilon
    of x's dtype (as torch; float32: 1.1920929e-07). With return_stats: (y, rstd)."""
    who = "keel.rms_norm"
    x, tx, dims, lead, rows, dim, code = _prepare(x, normalized_shape, who)
    weight = _param(weight, "weight", who, shape=dims)
    y = _out(x, code)
    ty = _lib.Tensor(_addr(y), code, dim)
    rstd = _stat(return_stats, lead)
    eps = _MACHINE_EPS.get(code, FLOAT32_EPS) if eps is None else eps
    _context.default().call(_lib.lib.keel_rmsnorm_fwd, rows, dim, tx, ty, _addr(weight),
                            _eps(eps, who), _addr(rstd), 0)
    return (y, rstd) if return_stats else y


def _prepare_backward(dy, x, normalized_shape, who):
    x, tx, dims, lead, rows, dim, code = _prepare(x, normalized_shape, who)
    dy = _array(dy, "dy", who)
    if dy.shape != x.shape:
        raise KeelValueError(f"{who}: dy.shape {dy.shape} != x.shape {x.shape}", EINVAL)
    tdy = _rows_view(dy, len(dims), dim, _dtype_code(dy, "dy", who))
    return x, tx, tdy, dims, rows, dim, code


def _grads(need_dx, x, code, dim, dims, *need_params):
    dx = _out(x, code) if need_dx else None
    tdx = _lib.Tensor(_addr(dx), code, dim) if need_dx else _lib.Tensor(None, F32, 0)
    # zeros, not empty: with 0 rows keel writes nothing, and a sum over no rows is 0
    params = [np.zeros(dims, np.float32) if need else None for need in need_params]
    return dx, tdx, params


def layer_norm_backward(dy, x, normalized_shape, weight=None, mean=None, rstd=None, eps=1e-5,
                        need_dx=True, need_dweight=True, need_dbias=True):
    """Gradients of layer_norm: (dx, dweight, dbias), None for the ones not asked for.
    mean, rstd: the forward's statistics (both or neither; neither: recomputed from x with eps).
    dweight is computed whenever asked, also with weight None (the gradient at weight = 1)."""
    who = "keel.layer_norm_backward"
    x, tx, tdy, dims, rows, dim, code = _prepare_backward(dy, x, normalized_shape, who)
    weight = _param(weight, "weight", who, shape=dims)
    mean = _param(mean, "mean", who, size=rows)
    rstd = _param(rstd, "rstd", who, size=rows)
    dx, tdx, (dw, db) = _grads(need_dx, x, code, dim, dims, need_dweight, need_dbias)
    _context.default().call(_lib.lib.keel_layernorm_bwd, rows, dim, tdy, tx, _addr(mean),
                            _addr(rstd), _addr(weight), _eps(eps, who), tdx, _addr(dw), _addr(db), 0)
    return dx, dw, db


def rms_norm_backward(dy, x, normalized_shape, weight=None, rstd=None, eps=None, need_dx=True,
                      need_dweight=True):
    """Gradients of rms_norm: (dx, dweight), None for the ones not asked for.
    rstd: the forward's statistic (None: recomputed from x with eps)."""
    who = "keel.rms_norm_backward"
    x, tx, tdy, dims, rows, dim, code = _prepare_backward(dy, x, normalized_shape, who)
    weight = _param(weight, "weight", who, shape=dims)
    rstd = _param(rstd, "rstd", who, size=rows)
    eps = _MACHINE_EPS.get(code, FLOAT32_EPS) if eps is None else eps
    dx, tdx, (dw,) = _grads(need_dx, x, code, dim, dims, need_dweight)
    _context.default().call(_lib.lib.keel_rmsnorm_bwd, rows, dim, tdy, tx, _addr(rstd),
                            _addr(weight), _eps(eps, who), tdx, _addr(dw), 0)
    return dx, dw
