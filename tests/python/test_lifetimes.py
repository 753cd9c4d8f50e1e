"""Arrays made in the call expression (referenced by nothing but the binding) stay alive until
keel has read them: a binding that dropped its last reference before the call would hand keel
freed memory, which the outputs allocated next reuse when they have the same size (NumPy caches
small blocks by size): here rows == dim, so mean and rstd are the size of weight and bias."""

import numpy as np

import keel

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 64)).astype(np.float32)
W = RNG.standard_normal(64).astype(np.float32)
B = RNG.standard_normal(64).astype(np.float32)


def test_parameters_and_statistics_given_as_temporaries():
    y_want, mean, rstd = keel.layer_norm(X, 64, W, B, return_stats=True)
    bwd_want = keel.layer_norm_backward(X, X, 64, W, mean, rstd)
    rms_want = keel.rms_norm_backward(X, X, 64, W, rstd)
    add_want = keel.add_layer_norm(X, X, 64, W, B, branch_scale=W, skip_bias=B)[:2]
    for _ in range(300):
        got = keel.layer_norm(X.copy(), 64, W.copy(), B.copy(), return_stats=True)
        assert np.array_equal(got[0], y_want) and np.array_equal(got[2], rstd)
        got = keel.layer_norm_backward(X.copy(), X.copy(), 64, W.copy(), mean.copy(), rstd.copy())
        assert all(np.array_equal(a, b) for a, b in zip(got, bwd_want))
        got = keel.rms_norm_backward(X.copy(), X.copy(), 64, W.copy(), rstd.copy())
        assert all(np.array_equal(a, b) for a, b in zip(got, rms_want))
        got = keel.add_layer_norm(X.copy(), X.copy(), 64, W.copy(), B.copy(), branch_scale=W.copy(),
                                  skip_bias=B.copy())[:2]
        assert all(np.array_equal(a, b) for a, b in zip(got, add_want))
        assert np.array_equal(keel.layer_scale(X, X, W.copy()), keel.layer_scale(X, X, W))
        assert np.array_equal(keel.dyt(X, 64, 0.5, W.copy(), B.copy()), keel.dyt(X, 64, 0.5, W, B))
        assert np.array_equal(keel.rms_norm_int8(X, 64, W.copy(), smooth=np.abs(W) + 1)[0],
                              keel.rms_norm_int8(X, 64, W, smooth=np.abs(W) + 1)[0])


def test_strided_parameters_are_copied_and_kept():
    wide = np.repeat(W, 2)  # W[j] at wide[2j]: a strided view, copied for the call
    for _ in range(100):
        assert np.array_equal(keel.layer_norm(X, 64, np.repeat(W, 2)[::2]), keel.layer_norm(X, 64, W))
    assert np.array_equal(keel.layer_norm(X, 64, wide[::2]), keel.layer_norm(X, 64, W))
