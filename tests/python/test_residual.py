"""keel.add_layer_norm / add_rms_norm / layer_scale and their backwards against the float64
reference: h bitwise the float32 sum keel.h defines, y bitwise the plain norm of h, gradients to a
few ulps of the magnitudes, and directional finite differences of the float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keel
import reference as ref
import reference_blocks as rb

F32_EPS = float(np.finfo(np.float32).eps)
FWD_RTOL = 4 * F32_EPS
BWD_RTOL = 16 * F32_EPS
KINDS = ["layer_norm", "rms_norm"]


@st.composite
def blocks(draw):
    """(x, branch, dims, w, b, eps, alpha, scale, sbias, rng): random shapes and options."""
    lead = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
    dims = tuple(draw(st.lists(st.integers(1, 50), min_size=1, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset = draw(st.sampled_from([0.0, 3.0, -1e3]))

    def arr(shape, loc=0.0, scale=1.0):
        return (loc + scale * rng.standard_normal(shape)).astype(np.float32)

    x, branch = arr(lead + dims, offset), arr(lead + dims)
    w, b = (arr(dims, 1.0, 0.5) if draw(st.booleans()) else None for _ in range(2))
    alpha = draw(st.sampled_from([1.0, 2.63, 0.5]))
    scale = arr(dims, 0.0, 0.1) if draw(st.booleans()) else None
    sbias = arr(dims) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([1e-5, 1e-6, 0.1]))
    return x, branch, dims, w, b, eps, alpha, scale, sbias, rng


def _forward(kind, x, branch, dims, w, b, eps, **kw):
    if kind == "layer_norm":
        return keel.add_layer_norm(x, branch, dims, w, b, eps, **kw)
    return keel.add_rms_norm(x, branch, dims, w, eps, **kw)


def _plain(kind, h, dims, w, b, eps):
    if kind == "layer_norm":
        return keel.layer_norm(h, dims, w, b, eps, return_stats=True)
    return keel.rms_norm(h, dims, w, eps, return_stats=True)


@pytest.mark.parametrize("kind", KINDS)
@given(blocks())
def test_add_norm_forward(kind, p):
    x, branch, dims, w, b, eps, alpha, scale, sbias, _ = p
    out = _forward(kind, x, branch, dims, w, b, eps, alpha=alpha, branch_scale=scale, skip_bias=sbias,
                   return_stats=True)
    y, h, stats = out[0], out[1], out[2:]
    assert h.dtype == y.dtype == np.float32 and h.shape == y.shape == x.shape
    # h: exactly ((alpha*x) + (scale*branch)) + skip_bias in float32 (keel.h)
    assert np.array_equal(h, rb.residual_sum_f32(x, branch, alpha, scale, sbias))
    # y and the statistics: bitwise the plain norm of that h
    for got, want in zip((y,) + stats, _plain(kind, h, dims, w, b, eps)):
        assert np.array_equal(got, want, equal_nan=True)
    want = ref.layer_norm(h, dims, w, b, eps) if kind == "layer_norm" else ref.rms_norm(h, dims, w, eps)
    ref.assert_close(y, want["y"], FWD_RTOL, "y")
    # post-norm: h not returned, y the same
    post = _forward(kind, x, branch, dims, w, b, eps, alpha=alpha, branch_scale=scale, skip_bias=sbias,
                    return_sum=False)
    assert isinstance(post, np.ndarray) and np.array_equal(post, y)


@pytest.mark.parametrize("kind", KINDS)
@given(blocks(), st.booleans(), st.booleans())
def test_add_norm_backward(kind, p, with_dh, saved_h):
    x, branch, dims, w, b, eps, alpha, scale, sbias, rng = p
    out = _forward(kind, x, branch, dims, w, b, eps, alpha=alpha, branch_scale=scale, skip_bias=sbias,
                   return_stats=True)
    h, stats = out[1], out[2:]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dh = rng.standard_normal(x.shape).astype(np.float32) if with_dh else None
    kw = dict(alpha=alpha, branch_scale=scale, skip_bias=sbias, dh=dh, h=h if saved_h else None,
              need_dbranch_scale=True, need_dskip_bias=True)
    if kind == "layer_norm":
        g = keel.add_layer_norm_backward(dy, x, branch, dims, w, *stats, eps, **kw)
        got = dict(dx=g.dx, dbranch=g.dbranch, dweight=g.dweight, dbias=g.dbias,
                   dbranch_scale=g.dbranch_scale, dskip_bias=g.dskip_bias)
    else:
        g = keel.add_rms_norm_backward(dy, x, branch, dims, w, *stats, eps, **kw)
        got = dict(dx=g.dx, dbranch=g.dbranch, dweight=g.dweight, dbranch_scale=g.dbranch_scale,
                   dskip_bias=g.dskip_bias)
    want = rb.add_norm_backward(kind, dy, h, dims, w, eps, dh, alpha, scale, branch)
    ref.assert_all_close(got, want, BWD_RTOL)
    # h recomputed, statistics recomputed: bitwise the same (keel.h)
    kw.update(h=None)
    again = (keel.add_layer_norm_backward(dy, x, branch, dims, w, eps=eps, **kw) if kind == "layer_norm"
             else keel.add_rms_norm_backward(dy, x, branch, dims, w, eps=eps, **kw))
    for a, c in zip(g, again):
        assert np.array_equal(a, c)


def test_plain_residual_backward_is_norm_backward_plus_dh():
    # alpha 1, no scale: dx is bitwise the norm's dx added (in float32) to dh
    rng = np.random.default_rng(1)
    x, r, dy, dh = (rng.standard_normal((5, 40)).astype(np.float32) for _ in range(4))
    y, h = keel.add_layer_norm(x, r, 40)
    g = keel.add_layer_norm_backward(dy, x, r, 40, h=h, dh=dh)
    dx, dw, db = keel.layer_norm_backward(dy, h, 40)
    assert np.array_equal(g.dx, dh + dx) and np.array_equal(g.dbranch, g.dx)
    assert np.array_equal(g.dweight, dw) and np.array_equal(g.dbias, db)
    assert g.dbranch_scale is None and g.dskip_bias is None  # not asked for: no scale, no bias given


@pytest.mark.parametrize("kind", KINDS)
def test_add_norm_finite_differences(kind):
    # d/dt loss(p + t v) at t = 0 of the float64 reference forward, against keel's gradients,
    # for every input and parameter (v random); loss = sum(dy * y) + sum(dh * h).
    rng = np.random.default_rng(2)
    n, dims = 33, (33,)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, r, dy, dh = f(4, n), f(4, n), f(4, n), f(4, n)
    w, b, scale, sbias = f(n) + 1, f(n), 0.1 * f(n), f(n)
    alpha, eps = 1.7, 1e-5

    def loss(x, r, w, b, scale, sbias):
        h = rb.residual_sum_f64(x, r, alpha, scale, sbias)
        y = rb.layer_norm_f64(h, dims, w, b, eps) if kind == "layer_norm" else rb.rms_norm_f64(h, dims, w, eps)
        return np.sum(dy * y) + np.sum(dh * h)

    if kind == "layer_norm":
        g = keel.add_layer_norm_backward(dy, x, r, dims, w, eps=eps, dh=dh, alpha=alpha, branch_scale=scale,
                                         skip_bias=sbias)
        grads = [g.dx, g.dbranch, g.dweight, g.dbias, g.dbranch_scale, g.dskip_bias]
    else:
        g = keel.add_rms_norm_backward(dy, x, r, dims, w, eps=eps, dh=dh, alpha=alpha, branch_scale=scale,
                                       skip_bias=sbias)
        grads = [g.dx, g.dbranch, g.dweight, None, g.dbranch_scale, g.dskip_bias]
    point = [np.float64(a) for a in (x, r, w, b, scale, sbias)]
    for i, grad in enumerate(grads):
        if grad is None:
            continue
        v = rng.standard_normal(point[i].shape)
        step = 1e-6
        plus, minus = list(point), list(point)
        plus[i], minus[i] = point[i] + step * v, point[i] - step * v
        numeric = (loss(*plus) - loss(*minus)) / (2 * step)
        analytic = np.sum(grad * v)
        assert abs(numeric - analytic) <= 1e-5 * np.sum(np.abs(grad * v)) + 1e-7, (i, numeric, analytic)


def test_gemma_unit_offset():
    rng = np.random.default_rng(3)
    x, r = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal((3, 16)).astype(np.float32)
    w = (0.1 * rng.standard_normal(16)).astype(np.float32)
    y, h = keel.add_rms_norm(x, r, 16, w, add_unit_offset=True)
    assert np.array_equal(y, keel.add_rms_norm(x, r, 16, np.float32(1) + w)[0])
    assert np.array_equal(y, keel.rms_norm(h, 16, w, add_unit_offset=True))
    dy = rng.standard_normal((3, 16)).astype(np.float32)
    g1 = keel.add_rms_norm_backward(dy, x, r, 16, w, add_unit_offset=True)
    g2 = keel.add_rms_norm_backward(dy, x, r, 16, np.float32(1) + w)
    for a, c in zip(g1, g2):
        assert np.array_equal(a, c)
    dx, dw = keel.rms_norm_backward(dy, h, 16, w, add_unit_offset=True)
    assert np.array_equal(dw, g1.dweight) and np.array_equal(dx, g1.dx)


def test_in_place_x_gone_after_forward():
    # With h saved, the backward needs neither x nor (without dbranch_scale) the branch.
    rng = np.random.default_rng(4)
    x, r, dy = (rng.standard_normal((6, 24)).astype(np.float32) for _ in range(3))
    y, h = keel.add_layer_norm(x, r, 24, alpha=2.0)
    g = keel.add_layer_norm_backward(dy, None, None, 24, h=h, alpha=2.0)
    want = keel.add_layer_norm_backward(dy, x, r, 24, alpha=2.0)
    for a, c in zip(g, want):
        assert np.array_equal(a, c)


def test_skipped_gradients_are_none():
    x = np.random.default_rng(5).standard_normal((4, 8)).astype(np.float32)
    g = keel.add_layer_norm_backward(x, x, x, 8, need_dx=False, need_dbias=False, need_dweight=False)
    assert g.dx is None and g.dbias is None and g.dweight is None and g.dbranch.shape == x.shape
    g = keel.add_rms_norm_backward(x, x, x, 8, need_dbranch=False)
    assert g.dbranch is None and g.dx.shape == x.shape and g.dweight.shape == (8,)


@given(blocks())
def test_layer_scale(p):
    x, branch, dims, _, _, _, _, scale, _, rng = p
    scale = rng.standard_normal(dims).astype(np.float32) if scale is None else scale
    h = keel.layer_scale(x, branch, scale)
    assert np.array_equal(h, rb.residual_sum_f32(x, branch, 1.0, scale))
    assert np.array_equal(h, keel.add_layer_norm(x, branch, dims, branch_scale=scale)[1])  # the fused h
    dh = rng.standard_normal(x.shape).astype(np.float32)
    dx, db, ds = keel.layer_scale_backward(dh, branch, scale)
    assert np.array_equal(dx, dh) and np.array_equal(db, scale * dh)
    lead_axes = tuple(range(x.ndim - len(dims)))
    want = ((np.float64(dh) * branch).sum(axis=lead_axes), np.abs(np.float64(dh) * branch).sum(axis=lead_axes))
    ref.assert_close(ds, want, BWD_RTOL, "dscale")
    dx, db, ds = keel.layer_scale_backward(dh, None, scale, need_dscale=False)
    assert ds is None and np.array_equal(db, scale * dh)


def test_strided_inputs_equal_contiguous():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((6, 64)).astype(np.float32)
    x, r = base[:, :32], base[::-1, 32:]  # row stride 64 in place; reversed rows copied
    got = keel.add_layer_norm(x, r, 32, return_stats=True)
    want = keel.add_layer_norm(x.copy(), r.copy(), 32, return_stats=True)
    for a, c in zip(got, want):
        assert np.array_equal(a, c)
    g = keel.add_rms_norm_backward(r, x, r, 32, dh=base[:, 32:])
    w = keel.add_rms_norm_backward(r.copy(), x.copy(), r.copy(), 32, dh=base[:, 32:].copy())
    for a, c in zip(g, w):
        assert np.array_equal(a, c)


def test_threads_do_not_change_gradients():
    rng = np.random.default_rng(7)
    x, r, dy = (rng.standard_normal((300, 96)).astype(np.float32) for _ in range(3))
    scale = rng.standard_normal(96).astype(np.float32)
    before = keel.get_num_threads()
    try:
        keel.set_num_threads(1)
        one = keel.add_layer_norm_backward(dy, x, r, 96, branch_scale=scale, need_dskip_bias=True)
        keel.set_num_threads(3)
        three = keel.add_layer_norm_backward(dy, x, r, 96, branch_scale=scale, need_dskip_bias=True)
    finally:
        keel.set_num_threads(before)
    for a, c in zip(one, three):
        assert np.array_equal(a, c)
