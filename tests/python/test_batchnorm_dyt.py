"""keel.batch_norm and keel.dyt (forward, backward) against the float64 reference, with finite
differences of the reference and the running statistics' updates."""

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


@st.composite
def batches(draw):
    """(x, w, b, eps, momentum, rng): x of shape (..., C) with at least 2 rows."""
    lead = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    if int(np.prod(lead)) < 2:
        lead = lead + (2,)
    c = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset = draw(st.sampled_from([0.0, 5.0, -1e3]))
    x = (offset + rng.standard_normal(lead + (c,))).astype(np.float32)
    w = rng.standard_normal(c).astype(np.float32) if draw(st.booleans()) else None
    b = rng.standard_normal(c).astype(np.float32) if draw(st.booleans()) else None
    return x, w, b, draw(st.sampled_from([1e-5, 1e-3])), draw(st.sampled_from([0.1, 0.0, 1.0, 0.3])), rng


@given(batches())
def test_batch_norm_training(p):
    x, w, b, eps, momentum, rng = p
    c = x.shape[-1]
    rm0, rv0 = rng.standard_normal(c).astype(np.float32), rng.random(c).astype(np.float32) + 0.5
    rm, rv = rm0.copy(), rv0.copy()
    y, mean, rstd = keel.batch_norm(x, rm, rv, w, b, training=True, momentum=momentum, eps=eps,
                                    return_stats=True)
    want = rb.batch_norm(x, w, b, eps, True, rm0, rv0, momentum)
    ref.assert_all_close(dict(y=y, save_mean=mean, save_rstd=rstd, running_mean=rm, running_var=rv), want,
                         FWD_RTOL)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dw, db = keel.batch_norm_backward(dy, x, mean, rstd, w, eps, training=True)
    ref.assert_all_close(dict(dx=dx, dweight=dw, dbias=db), rb.batch_norm_backward(dy, x, w, eps), BWD_RTOL)
    again = keel.batch_norm_backward(dy, x, None, None, w, eps, training=True)  # statistics recomputed
    for a, c2 in zip((dx, dw, db), again):
        assert np.array_equal(a, c2)


@given(batches())
def test_batch_norm_inference(p):
    x, w, b, eps, _, rng = p
    c = x.shape[-1]
    rm, rv = rng.standard_normal(c).astype(np.float32), rng.random(c).astype(np.float32) + 0.5
    before = rm.copy(), rv.copy()
    y, mean, rstd = keel.batch_norm(x, rm, rv, w, b, training=False, eps=eps, return_stats=True)
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])  # nothing updated
    want = rb.batch_norm(x, w, b, eps, False, rm, rv)
    ref.assert_all_close(dict(y=y, save_rstd=rstd), want, FWD_RTOL)
    assert np.array_equal(mean, rm)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dw, db = keel.batch_norm_backward(dy, x, mean, rstd, w, eps, training=False)
    want = rb.batch_norm_backward(dy, x, w, eps, False, rm, rv)
    ref.assert_all_close(dict(dx=dx, dweight=dw, dbias=db), want, BWD_RTOL)


def test_batch_norm_cumulative_average_and_untracked():
    rng = np.random.default_rng(1)
    rm, rv, n = np.zeros(4, np.float32), np.ones(4, np.float32), np.zeros(1, np.int64)
    xs = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(3)]
    for x in xs:
        keel.batch_norm(x, rm, rv, training=True, momentum=None, num_batches_tracked=n)
    assert n[0] == 3
    np.testing.assert_allclose(rm, np.mean([x.mean(axis=0) for x in xs], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, np.mean([x.var(axis=0, ddof=1) for x in xs], axis=0), rtol=1e-5)
    y = keel.batch_norm(xs[0], None, None, training=True)  # no running statistics tracked
    np.testing.assert_allclose(y, (xs[0] - xs[0].mean(0)) / np.sqrt(xs[0].var(0) + 1e-5), rtol=1e-5, atol=1e-5)


def test_batch_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)  # NCHW
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    xt = torch.from_numpy(x).double().requires_grad_(True)
    yt = bn(xt)
    yt.backward(torch.ones_like(yt) * xt.detach())
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    w, b = bn.weight.detach().float().numpy(), bn.bias.detach().float().numpy()
    nhwc = x.transpose(0, 2, 3, 1)  # features last: a view the binding copies to rows of 3
    y, mean, rstd = keel.batch_norm(nhwc, rm, rv, w, b, training=True, return_stats=True)
    np.testing.assert_allclose(y.transpose(0, 3, 1, 2), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-5)
    dx, dw, db = keel.batch_norm_backward(nhwc, nhwc, mean, rstd, w)
    np.testing.assert_allclose(dx.transpose(0, 3, 1, 2), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw, bn.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db, bn.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_finite_differences(training):
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((7, 5)), rng.standard_normal((7, 5)).astype(np.float32)
    x = x.astype(np.float32)
    w, b = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    rm, rv = rng.standard_normal(5).astype(np.float32), rng.random(5).astype(np.float32) + 0.5

    def loss(x, w, b):
        y = rb.batch_norm(x, w, b, 1e-5, training, rm, rv)["y"][0]
        return np.sum(dy * y)

    _, mean, rstd = keel.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, return_stats=True)
    grads = keel.batch_norm_backward(dy, x, mean, rstd, w, training=training)
    point = [np.float64(a) for a in (x, w, b)]
    for i, grad in enumerate(grads):
        v = rng.standard_normal(point[i].shape)
        plus, minus = list(point), list(point)
        plus[i], minus[i] = point[i] + 1e-6 * v, point[i] - 1e-6 * v
        numeric = (loss(*plus) - loss(*minus)) / 2e-6
        analytic = np.sum(grad * v)
        assert abs(numeric - analytic) <= 1e-5 * np.sum(np.abs(grad * v)) + 1e-7, (i, numeric, analytic)


@st.composite
def dyt_problems(draw):
    lead = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
    dims = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 10.0, 100.0]))  # 100: saturated tanh, s near 0
    x = (scale * rng.standard_normal(lead + dims)).astype(np.float32)
    w = rng.standard_normal(dims).astype(np.float32) if draw(st.booleans()) else None
    b = rng.standard_normal(dims).astype(np.float32) if draw(st.booleans()) else None
    return x, dims, draw(st.sampled_from([0.5, 0.05, -1.3])), w, b, rng


@given(dyt_problems())
def test_dyt(p):
    x, dims, alpha, w, b, rng = p
    y = keel.dyt(x, dims, alpha, w, b)
    # keel's tanh: within 2 ulps; y = w * t + b: a few ulps of |w t| + |b|
    ref.assert_close(y, rb.dyt(x, dims, alpha, w, b)["y"], FWD_RTOL)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dalpha, dw, db = keel.dyt_backward(dy, x, dims, alpha, w)
    assert isinstance(dalpha, np.float32)
    ref.assert_all_close(dict(dx=dx, dalpha=np.asarray(dalpha), dweight=dw, dbias=db),
                         rb.dyt_backward(dy, x, dims, alpha, w), BWD_RTOL)


def test_dyt_finite_differences():
    rng = np.random.default_rng(4)
    x, dy = (rng.standard_normal((6, 9)).astype(np.float32) for _ in range(2))
    w, b = rng.standard_normal(9).astype(np.float32), rng.standard_normal(9).astype(np.float32)
    alpha = 0.7

    def loss(x, alpha, w, b):
        return np.sum(dy * rb.dyt(x, (9,), alpha, w, b)["y"][0])

    dx, dalpha, dw, db = keel.dyt_backward(dy, x, 9, alpha, w)
    point = [np.float64(x), np.float64(alpha), np.float64(w), np.float64(b)]
    for i, grad in enumerate((dx, dalpha, dw, db)):
        v = rng.standard_normal(np.shape(point[i]))
        plus, minus = list(point), list(point)
        plus[i], minus[i] = point[i] + 1e-6 * v, point[i] - 1e-6 * v
        numeric = (loss(*plus) - loss(*minus)) / 2e-6
        analytic = np.sum(np.float64(grad) * v)
        assert abs(numeric - analytic) <= 1e-5 * np.sum(np.abs(grad * v)) + 1e-7, (i, numeric, analytic)


def test_dyt_nan_stays_in_its_element_and_skips():
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    x[1, 2] = np.nan
    y = keel.dyt(x, 4, 0.5)
    assert np.isnan(y[1, 2]) and np.isfinite(np.delete(y.ravel(), 6)).all()
    dx, dalpha, dw, db = keel.dyt_backward(np.ones_like(x), x, 4, 0.5, need_dx=False, need_dalpha=False)
    assert dx is None and dalpha is None and db.tolist() == [3, 3, 3, 3]
