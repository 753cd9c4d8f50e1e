"""keel's NumPy API against the float64 reference: values, gradients, layouts, threads."""

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keel
import reference as ref

F32_EPS = float(np.finfo(np.float32).eps)
# Errors allowed, relative to the magnitude of the terms (reference.py): a few float32 ulps.
FWD_RTOL = 4 * F32_EPS
BWD_RTOL = 16 * F32_EPS


@st.composite
def problems(draw, max_norm_dims=2):
    """(x, dims, w, b, eps): random leading and normalized shapes, offsets and scales."""
    lead = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    dims = tuple(draw(st.lists(st.integers(1, 70), min_size=1, max_size=max_norm_dims)))
    seed = draw(st.integers(0, 2**32 - 1))
    offset = draw(st.sampled_from([0.0, 1.0, -30.0, 1e4]))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e3]))
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal(lead + dims)).astype(np.float32)
    w = rng.standard_normal(dims).astype(np.float32) if draw(st.booleans()) else None
    b = rng.standard_normal(dims).astype(np.float32) if draw(st.booleans()) else None
    eps = draw(st.sampled_from([1e-5, 1e-6, 0.1, 0.0]))
    return x, dims, w, b, eps


def _nonconstant(x, dims):
    """eps 0 on a constant row is 0/0 by definition: skip such draws."""
    rows = x.reshape(-1, int(np.prod(dims)))
    return rows.shape[1] > 1 and np.all(rows.max(axis=1) > rows.min(axis=1))


@given(problems())
def test_layer_norm_matches_float64(p):
    x, dims, w, b, eps = p
    if eps == 0.0 and not _nonconstant(x, dims):
        return
    y, mean, rstd = keel.layer_norm(x, dims, w, b, eps=eps, return_stats=True)
    assert y.dtype == np.float32 and y.shape == x.shape and mean.shape == x.shape[: x.ndim - len(dims)]
    ref.assert_all_close(dict(y=y, mean=mean, rstd=rstd), ref.layer_norm(x, dims, w, b, eps), FWD_RTOL)
    assert np.array_equal(keel.layer_norm(x, dims, w, b, eps=eps), y)


@given(problems())
def test_layer_norm_backward_matches_float64(p):
    x, dims, w, _, eps = p
    if eps == 0.0 and not _nonconstant(x, dims):
        return
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    _, mean, rstd = keel.layer_norm(x, dims, w, eps=eps, return_stats=True)
    dx, dw, db = keel.layer_norm_backward(dy, x, dims, w, mean, rstd, eps=eps)
    ref.assert_all_close(dict(dx=dx, dweight=dw, dbias=db), ref.layer_norm_backward(dy, x, dims, w, eps), BWD_RTOL)
    # without the saved statistics keel recomputes them: bitwise the same (keel.h)
    again = keel.layer_norm_backward(dy, x, dims, w, eps=eps)
    for a, b in zip((dx, dw, db), again):
        assert np.array_equal(a, b)


@given(problems())
def test_rms_norm_matches_float64(p):
    x, dims, w, _, eps = p
    rows = x.reshape(-1, int(np.prod(dims)))
    if eps == 0.0 and rows.size and not np.all(np.abs(rows).max(axis=1) > 0):
        return
    y, rstd = keel.rms_norm(x, dims, w, eps=eps, return_stats=True)
    ref.assert_all_close(dict(y=y, rstd=rstd), ref.rms_norm(x, dims, w, eps), FWD_RTOL)
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    dx, dw = keel.rms_norm_backward(dy, x, dims, w, rstd, eps=eps)
    ref.assert_all_close(dict(dx=dx, dweight=dw), ref.rms_norm_backward(dy, x, dims, w, eps), BWD_RTOL)


def test_rms_norm_default_eps_is_float32_epsilon():
    x = np.full((2, 8), 1e-4, np.float32)
    y, rstd = keel.rms_norm(x, 8, return_stats=True)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(1e-8 + F32_EPS), rtol=1e-6)
    assert keel.FLOAT32_EPS == F32_EPS


def test_large_offset_is_exact():
    # x = 1e6 + small noise: float32 x - mean must not cancel catastrophically.
    rng = np.random.default_rng(3)
    x = (1e6 + rng.standard_normal((16, 256))).astype(np.float32)
    y, mean, rstd = keel.layer_norm(x, 256, return_stats=True)
    ref.assert_all_close(dict(y=y, rstd=rstd), ref.layer_norm(x, (256,)), FWD_RTOL)


def test_constant_rows():
    x = np.full((3, 10), 7.25, np.float32)
    b = np.linspace(-1, 1, 10).astype(np.float32)
    y, mean, rstd = keel.layer_norm(x, 10, np.ones(10, np.float32), b, eps=1e-5, return_stats=True)
    assert np.array_equal(y, np.broadcast_to(b, x.shape))  # exactly beta (keel.h)
    assert np.all(mean == 7.25)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(1e-5), rtol=1e-6)
    assert np.all(keel.rms_norm(np.zeros((2, 5), np.float32), 5) == 0)


def test_nan_row_stays_in_its_row():
    x = np.random.default_rng(4).standard_normal((4, 16)).astype(np.float32)
    x[2, 5] = np.nan
    y = keel.layer_norm(x, 16)
    assert np.all(np.isnan(y[2])) and np.all(np.isfinite(np.delete(y, 2, axis=0)))


def test_directional_finite_difference():
    # d/dh sum(dy * layer_norm(x + h v)) = <dx, v>, and likewise for weight and bias.
    rng = np.random.default_rng(5)
    x, dy, v = (rng.standard_normal((6, 33)).astype(np.float32) for _ in range(3))
    w, b, vw = (rng.standard_normal(33).astype(np.float32) for _ in range(3))

    def loss(x_, w_, b_):
        return float(np.sum(dy.astype(np.float64) * keel.layer_norm(x_, 33, w_, b_)))

    dx, dw, db = keel.layer_norm_backward(dy, x, 33, w)
    h = np.float32(1e-2)
    cases = [
        ((x + h * v, w, b), (x - h * v, w, b), np.sum(dx * v)),
        ((x, w + h * vw, b), (x, w - h * vw, b), np.sum(dw * vw)),
        ((x, w, b + h * vw), (x, w, b - h * vw), np.sum(db * vw)),
    ]
    for plus, minus, analytic in cases:
        numeric = (loss(*plus) - loss(*minus)) / (2 * h)
        assert abs(numeric - analytic) <= 1e-2 * max(1.0, abs(analytic)), (numeric, analytic)


def _strided_cases():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((5, 4, 48)).astype(np.float32)
    return {
        "contiguous": base,
        "row slice (stride > dim, no copy)": base[:, :, :32],
        "every other row": base[::2],
        "transposed leading dims": base.transpose(1, 0, 2),
        "reversed rows": base[::-1],
        "fortran order": np.asfortranarray(base),
        "broadcast rows (stride 0)": np.broadcast_to(base[0, 0], (3, 48)),
        "non-contiguous normalized dims": base[:, :, ::2],
    }


@pytest.mark.parametrize("name", list(_strided_cases()))
def test_strided_inputs_equal_contiguous(name):
    x = _strided_cases()[name]
    dim = x.shape[-1]
    dy = np.ones(x.shape, np.float32) * np.linspace(-1, 1, dim, dtype=np.float32)
    want = keel.layer_norm(np.ascontiguousarray(x), dim, return_stats=True)
    got = keel.layer_norm(x, dim, return_stats=True)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    want = keel.layer_norm_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), dim)
    got = keel.layer_norm_backward(np.broadcast_to(dy[..., :1, :], dy.shape), x, dim)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    assert np.array_equal(keel.rms_norm(x, dim), keel.rms_norm(np.ascontiguousarray(x), dim))


def test_unaligned_input_is_copied():
    base = np.random.default_rng(7).standard_normal((3, 8)).astype(np.float32)
    raw = np.zeros(base.nbytes + 1, np.uint8)
    x = raw[1:].view(np.float32).reshape(3, 8)
    x[...] = base
    assert not x.flags.aligned
    assert np.array_equal(keel.layer_norm(x, 8), keel.layer_norm(base, 8))
    w = np.zeros(33, np.uint8)[1:].view(np.float32)  # a misaligned weight too
    w[:] = 2
    assert np.array_equal(keel.layer_norm(base, 8, w), keel.layer_norm(base, 8, w.copy()))


def test_multi_dim_normalized_shape_and_empty_batch():
    x = np.random.default_rng(8).standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert np.array_equal(keel.layer_norm(x, (4, 5)), keel.layer_norm(x.reshape(2, 3, 20), 20).reshape(x.shape))
    y, mean, rstd = keel.layer_norm(np.zeros((0, 3, 7), np.float32), 7, return_stats=True)
    assert y.shape == (0, 3, 7) and mean.shape == (0, 3)
    assert keel.layer_norm_backward(np.zeros((0, 7), np.float32), np.zeros((0, 7), np.float32), 7)[1].shape == (7,)
    y = keel.layer_norm(np.arange(4, dtype=np.float32), 4)  # no leading dims
    assert y.shape == (4,)


def test_skipped_gradients_are_none():
    x = np.random.default_rng(9).standard_normal((4, 8)).astype(np.float32)
    dx, dw, db = keel.layer_norm_backward(x, x, 8, need_dx=False, need_dbias=False)
    assert dx is None and db is None and dw.shape == (8,)
    dx, dw = keel.rms_norm_backward(x, x, 8, need_dweight=False)
    assert dw is None and dx.shape == x.shape


def test_thread_count_does_not_change_results():
    x = np.random.default_rng(10).standard_normal((300, 200)).astype(np.float32)
    before = keel.get_num_threads()
    try:
        keel.set_num_threads(1)
        assert keel.get_num_threads() == 1
        one = keel.layer_norm_backward(x, x, 200)
        keel.set_num_threads(3)
        assert keel.get_num_threads() == 3
        three = keel.layer_norm_backward(x, x, 200)
    finally:
        keel.set_num_threads(before)
    for a, b in zip(one, three):
        assert np.array_equal(a, b)


def test_concurrent_python_threads():
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((64, 96)).astype(np.float32) for _ in range(8)]
    want = [keel.layer_norm(x, 96) for x in inputs]
    got = [None] * len(inputs)
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got[i] = keel.layer_norm(inputs[i], 96)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


def _fork_input():
    return np.random.default_rng(12).standard_normal((4096, 1024)).astype(np.float32)  # big enough to split


def _child(conn):
    conn.send(keel.layer_norm(_fork_input(), 1024).sum(dtype=np.float64))


def test_fork_after_use():
    # A forked child (e.g. a torch DataLoader worker) gets a fresh context, not the parent's,
    # whose worker threads do not exist in the child.
    import multiprocessing
    before = keel.get_num_threads()
    keel.set_num_threads(2)
    want = keel.layer_norm(_fork_input(), 1024).sum(dtype=np.float64)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child,))
    p.start()
    answered = parent.poll(60)
    if not answered:
        p.kill()
    keel.set_num_threads(before)
    assert answered, "the forked child did not answer (it hangs on the parent's thread pool)"
    assert parent.recv() == want
    p.join(10)
    assert p.exitcode == 0


def test_version_and_library():
    assert keel.__version__ == "0.2.0"
    assert keel.library_path.endswith(("libkeel.so", "libkeel.dylib", "keel.dll"))
    assert keel.isa() in ("scalar", "avx2", "avx512", "neon")
