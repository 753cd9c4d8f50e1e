"""Float64 references (NumPy) of the block ops (docs/blocks.md) and the int8 forwards, on the same
float32 inputs. Like reference.py, each output is a pair (value, magnitude); the forwards also
exist as plain float64 functions (`*_f64`) for finite differences of a loss.
"""

import numpy as np

import reference as ref

F32 = np.float32


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


def residual_sum_f32(x, r, alpha=1.0, scale=None, sbias=None):
    """h exactly as keel computes it in float32: ((alpha * x) + (scale * r)) + bias."""
    h = F32(alpha) * x + (r if scale is None else scale * r)
    return h if sbias is None else h + sbias


def residual_sum_f64(x, r, alpha=1.0, scale=None, sbias=None):
    h = alpha * _f64(x) + (_f64(r) if scale is None else _f64(scale) * _f64(r))
    return h if sbias is None else h + _f64(sbias)


def _norm_backward(kind, dy, h, dims, w, eps):
    if kind == "layer_norm":
        return ref.layer_norm_backward(dy, h, dims, w, eps)
    return ref.rms_norm_backward(dy, h, dims, w, eps)


def add_norm_backward(kind, dy, h, dims, w, eps, dh=None, alpha=1.0, scale=None, r=None):
    """{dx, dbranch, dweight, [dbias], dbranch_scale, dskip_bias} of the fused backward at the
    float32 h: G = dh + norm_bwd(dy)."""
    out = _norm_backward(kind, dy, h, dims, w, eps)
    g, g_mag = out.pop("dx")
    if dh is not None:
        g, g_mag = g + _f64(dh), g_mag + np.abs(_f64(dh))
    lam = np.ones(dims) if scale is None else _f64(scale)
    out["dx"] = (alpha * g, abs(alpha) * g_mag)
    out["dbranch"] = (lam * g, np.abs(lam) * g_mag)
    lead_axes = tuple(range(g.ndim - len(dims)))
    out["dskip_bias"] = (g.sum(axis=lead_axes), g_mag.sum(axis=lead_axes))
    if r is not None:
        rr = _f64(r)
        out["dbranch_scale"] = ((g * rr).sum(axis=lead_axes), (g_mag * np.abs(rr)).sum(axis=lead_axes))
    return out


def layer_norm_f64(x, dims, w=None, b=None, eps=1e-5):
    return ref.layer_norm(x, dims, w, b, eps)["y"][0]


def rms_norm_f64(x, dims, w=None, eps=ref.F32_EPS):
    return ref.rms_norm(x, dims, w, eps)["y"][0]


def batch_norm(x, w=None, b=None, eps=1e-5, training=True, running_mean=None, running_var=None, momentum=0.1):
    """{y, save_mean, save_rstd, running_mean, running_var} over the rows of x (features last)."""
    c = x.shape[-1]
    xr = _f64(x).reshape(-1, c)
    n = xr.shape[0]
    w = np.ones(c) if w is None else _f64(w)
    b = np.zeros(c) if b is None else _f64(b)
    out = {}
    if training:
        mean = xr.mean(axis=0)
        var = ((xr - mean) ** 2).mean(axis=0)
        if running_mean is not None:
            m = momentum
            rm, rv = _f64(running_mean), _f64(running_var)
            out["running_mean"] = ((1 - m) * rm + m * mean, np.abs((1 - m) * rm) + np.abs(m * mean))
            unbiased = var * n / (n - 1)
            out["running_var"] = ((1 - m) * rv + m * unbiased, np.abs((1 - m) * rv) + np.abs(m * unbiased))
        mean_mag = np.abs(xr).mean(axis=0)
    else:
        mean, var = _f64(running_mean), _f64(running_var)
        mean_mag = np.abs(mean)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (xr - mean) * rstd
    out["y"] = ((xhat * w + b).reshape(x.shape), (np.abs(xhat * w) + np.abs(b)).reshape(x.shape))
    out["save_mean"] = (mean, mean_mag)
    out["save_rstd"] = (rstd, rstd)
    return out


def batch_norm_backward(dy, x, w=None, eps=1e-5, training=True, running_mean=None, running_var=None):
    """{dx, dweight, dbias}: training through the batch statistics, inference through the
    running ones (constants)."""
    c = x.shape[-1]
    xr, dyr = _f64(x).reshape(-1, c), _f64(dy).reshape(-1, c)
    w = np.ones(c) if w is None else _f64(w)
    if training:
        mean = xr.mean(axis=0)
        rstd = 1.0 / np.sqrt(((xr - mean) ** 2).mean(axis=0) + eps)
    else:
        mean, rstd = _f64(running_mean), 1.0 / np.sqrt(_f64(running_var) + eps)
    xhat = (xr - mean) * rstd
    g = dyr * w
    if training:
        dx = rstd * (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0))
        dx_mag = rstd * (np.abs(g) + np.abs(g).mean(axis=0) + np.abs(xhat) * np.abs(g * xhat).mean(axis=0))
    else:
        dx, dx_mag = rstd * g, rstd * np.abs(g)
    return {"dx": (dx.reshape(x.shape), dx_mag.reshape(x.shape)),
            "dweight": ((dyr * xhat).sum(axis=0), np.abs(dyr * xhat).sum(axis=0)),
            "dbias": (dyr.sum(axis=0), np.abs(dyr).sum(axis=0))}


def _sech2(u):
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(u) ** 2


def dyt(x, dims, alpha, w=None, b=None):
    """{y}: y = w * tanh(alpha x) + b."""
    t = np.tanh(alpha * _f64(x))
    w = np.ones(dims) if w is None else _f64(w)
    b = np.zeros(dims) if b is None else _f64(b)
    return {"y": (w * t + b, np.abs(w * t) + np.abs(b))}


def dyt_backward(dy, x, dims, alpha, w=None):
    """{dx, dalpha, dweight, dbias} of dyt."""
    xx, dyy = _f64(x), _f64(dy)
    u = alpha * xx
    t, s = np.tanh(u), _sech2(u)
    w = np.ones(dims) if w is None else _f64(w)
    lead_axes = tuple(range(xx.ndim - len(dims)))
    da = dyy * w * xx * s
    return {"dx": (dyy * w * alpha * s, np.abs(dyy * w * alpha * s)),
            "dalpha": (np.asarray(da.sum()), np.asarray(np.abs(da).sum())),
            "dweight": ((dyy * t).sum(axis=lead_axes), np.abs(dyy * t).sum(axis=lead_axes)),
            "dbias": (dyy.sum(axis=lead_axes), np.abs(dyy).sum(axis=lead_axes))}


def quantize_i8(y, scale=None):
    """keel's int8 quantization of a float32 y (..., dim): (q, row_scale or None), in float32
    exactly as keel.h says: s = max|y_row| / 127 (dynamic) or scale, q = clip(rint(y / s))."""
    y = np.asarray(y, np.float32)
    if scale is None:
        rows = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
        s = (np.abs(rows).max(axis=1) / F32(127)).astype(np.float32).reshape(y.shape[:-1])
        s_b = s[..., None]
    else:
        s = None
        s_b = F32(scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = y / s_b
    q = np.clip(np.rint(v), -127, 127)
    q = np.where(np.isnan(q) | (np.broadcast_to(s_b, y.shape) == 0), 0, q).astype(np.int8)
    return q, s
