"""Float64 references (NumPy) for the tests: the formulas of keel.h, on the same float32 inputs.

Each function returns pairs (value, magnitude): the magnitude is the same formula taken on
absolute values, the scale of the terms that cancel into the value. A float32 result is then
correct to a few ulps when |got - value| <= rtol * magnitude (assert_close), which stays
meaningful where the value itself cancels to nearly 0.
"""

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)


def _rows(a, dims):
    return np.asarray(a, np.float64).reshape(-1, int(np.prod(dims)))


def _param(p, dim):
    return np.ones(dim) if p is None else np.asarray(p, np.float64).reshape(-1)


def _zeros_if_none(p, dim):
    return np.zeros(dim) if p is None else np.asarray(p, np.float64).reshape(-1)


def layer_norm(x, dims, w=None, b=None, eps=1e-5):
    """{y, mean, rstd}: (value, magnitude) each, in float64."""
    xr = _rows(x, dims)
    lead = x.shape[: x.ndim - len(dims)]
    mean = xr.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((xr - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (xr - mean) * rstd
    w, b = _param(w, xr.shape[1]), _zeros_if_none(b, xr.shape[1])
    return {
        "y": ((xhat * w + b).reshape(x.shape), (np.abs(xhat * w) + np.abs(b)).reshape(x.shape)),
        "mean": (mean.reshape(lead), np.abs(xr).mean(axis=1).reshape(lead)),
        "rstd": (rstd.reshape(lead), rstd.reshape(lead)),
    }


def layer_norm_backward(dy, x, dims, w=None, eps=1e-5):
    """{dx, dweight, dbias}: (value, magnitude) each, statistics recomputed in float64."""
    xr, dyr = _rows(x, dims), _rows(dy, dims)
    mean = xr.mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(((xr - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    xhat = (xr - mean) * rstd
    g = dyr * _param(w, xr.shape[1])
    dx = rstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    dx_mag = rstd * (np.abs(g) + np.abs(g).mean(axis=1, keepdims=True)
                     + np.abs(xhat) * np.abs(g * xhat).mean(axis=1, keepdims=True))
    return {
        "dx": (dx.reshape(x.shape), dx_mag.reshape(x.shape)),
        "dweight": ((dyr * xhat).sum(axis=0).reshape(dims), np.abs(dyr * xhat).sum(axis=0).reshape(dims)),
        "dbias": (dyr.sum(axis=0).reshape(dims), np.abs(dyr).sum(axis=0).reshape(dims)),
    }


def rms_norm(x, dims, w=None, eps=F32_EPS):
    """{y, rstd}: (value, magnitude) each, in float64."""
    xr = _rows(x, dims)
    lead = x.shape[: x.ndim - len(dims)]
    rstd = 1.0 / np.sqrt((xr * xr).mean(axis=1, keepdims=True) + eps)
    y = xr * rstd * _param(w, xr.shape[1])
    return {"y": (y.reshape(x.shape), np.abs(y).reshape(x.shape)),
            "rstd": (rstd.reshape(lead), rstd.reshape(lead))}


def rms_norm_backward(dy, x, dims, w=None, eps=F32_EPS):
    """{dx, dweight}: (value, magnitude) each, in float64."""
    xr, dyr = _rows(x, dims), _rows(dy, dims)
    rstd = 1.0 / np.sqrt((xr * xr).mean(axis=1, keepdims=True) + eps)
    xhat = xr * rstd
    g = dyr * _param(w, xr.shape[1])
    dx = rstd * (g - xhat * (g * xhat).mean(axis=1, keepdims=True))
    dx_mag = rstd * (np.abs(g) + np.abs(xhat) * np.abs(g * xhat).mean(axis=1, keepdims=True))
    return {
        "dx": (dx.reshape(x.shape), dx_mag.reshape(x.shape)),
        "dweight": ((dyr * xhat).sum(axis=0).reshape(dims), np.abs(dyr * xhat).sum(axis=0).reshape(dims)),
    }


def assert_close(got, want, rtol, what="", floor=1e-12):
    """got (an array) against want = (value, magnitude): |got - value| <= rtol * magnitude + floor
    (floor: where the terms cancel exactly, a float64 reference keeps its own rounding error)."""
    value, magnitude = want
    got = np.asarray(got, np.float64)
    assert got.shape == value.shape, (what, got.shape, value.shape)
    if value.size == 0:
        return
    err = np.abs(got - value)
    bound = rtol * magnitude + floor
    bad = ~(err <= bound)
    if np.any(bad):
        i = np.unravel_index(np.argmax(np.where(bad, err / bound, 0)), value.shape)
        raise AssertionError(f"{what}: |got - want| = {err[i]:.3g} > {bound[i]:.3g} at {i} "
                             f"(want {value[i]:.9g}, got {got[i]:.9g}, {int(bad.sum())} of {bad.size} bad)")


def assert_all_close(got, want, rtol):
    """Each named output of a keel call against the reference's dict."""
    for name, array in got.items():
        assert_close(array, want[name], rtol, what=name)
