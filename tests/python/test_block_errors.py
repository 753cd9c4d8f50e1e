"""Bad arguments to the block, BatchNorm, DyT and int8 bindings raise keel's exceptions with
keel's (or the binding's) message; nothing crashes, and arrays updated in place stay unchanged."""

import numpy as np
import pytest

import keel

X = np.arange(8, dtype=np.float32).reshape(2, 4)
W = np.ones(4, np.float32)


def raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, keel.KeelError)
    return info.value


@pytest.mark.parametrize("fn", [keel.add_layer_norm, keel.add_rms_norm])
def test_add_norm_shapes_and_dtypes(fn):
    raises(ValueError, r"branch\.shape \(2, 3\) != x\.shape \(2, 4\)", fn, X, X[:, :3], 4)
    raises(ValueError, r"normalized_shape \(5,\) does not match", fn, X, X, 5)
    raises(TypeError, r"branch\.dtype float64 is not supported", fn, X, X.astype(np.float64), 4)
    raises(TypeError, r"x\.dtype int32 is not supported", fn, X.astype(np.int32), X, 4)
    raises(TypeError, r"branch must be a numpy\.ndarray", fn, X, [[0.0] * 4] * 2, 4)
    raises(ValueError, r"branch_scale\.shape \(3,\) != normalized_shape \(4,\)", fn, X, X, 4,
           branch_scale=np.ones(3, np.float32))
    raises(TypeError, r"skip_bias\.dtype float64", fn, X, X, 4, skip_bias=np.ones(4))
    raises(TypeError, r"alpha \('a'\) must be a float", fn, X, X, 4, alpha="a")
    raises(ValueError, r"alpha \(inf\) must be finite", fn, X, X, 4, alpha=float("inf"))
    raises(ValueError, r"eps \(-1\) must be finite and >= 0", fn, X, X, 4, eps=-1.0)


def test_add_norm_half_precision_is_keels_or_computed():
    # The bindings hand float16 to keel with its dtype. A keel whose fused ops take float32 only
    # answers KEEL_EUNSUPPORTED (TypeError); one that takes float16 computes y and h in float16.
    x16 = X.astype(np.float16)
    try:
        y, h = keel.add_layer_norm(x16, x16, 4)
    except TypeError as e:
        assert isinstance(e, keel.KeelTypeError) and e.status == 3, e
        assert "keel_add_layernorm_fwd: res->x.dtype f16 is not supported" in str(e), e
        return
    assert y.dtype == h.dtype == np.float16
    y32, h32 = keel.add_layer_norm(X, X, 4)
    np.testing.assert_allclose(y.astype(np.float32), y32, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(h.astype(np.float32), h32, rtol=1e-2, atol=1e-2)


def test_add_norm_backward_arguments():
    y, h, mean, rstd = keel.add_layer_norm(X, X, 4, return_stats=True)
    raises(ValueError, r"mean \(.*\) and rstd \(.*\) must be given both or neither",
           keel.add_layer_norm_backward, X, X, X, 4, mean=mean)
    raises(ValueError, r"rstd has 3 values, x has 2 rows", keel.add_rms_norm_backward, X, X, X, 4,
           rstd=np.ones(3, np.float32))
    raises(ValueError, r"dh\.shape \(1, 4\) != x\.shape \(2, 4\)", keel.add_layer_norm_backward, X, X, X, 4,
           dh=X[:1])
    raises(ValueError, r"keel_add_layernorm_bwd: res->x", keel.add_layer_norm_backward, X, None, X, 4)


def test_layer_scale_errors():
    raises(TypeError, r"scale must be a numpy\.ndarray", keel.layer_scale, X, X, 0.1)
    raises(ValueError, r"normalized_shape \(3,\) does not match", keel.layer_scale, X, X, np.ones(3, np.float32))
    raises(ValueError, r"keel_layerscale_bwd: f", keel.layer_scale_backward, X, None, W)


def test_batch_norm_errors_leave_running_stats_unchanged():
    rm, rv, n = np.full(4, 2.0, np.float32), np.full(4, 3.0, np.float32), np.zeros(1, np.int64)
    before = rm.copy(), rv.copy(), n.copy()

    def unchanged():
        assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1]) and np.array_equal(n, before[2])

    raises(ValueError, r"rows \(1\): training needs more than one value", keel.batch_norm, X[:1], rm, rv,
           training=True)
    unchanged()
    raises(ValueError, r"momentum \(1\.5\) must be in \[0, 1\]", keel.batch_norm, X, rm, rv, training=True,
           momentum=1.5)
    unchanged()
    raises(ValueError, r"num_batches_tracked is NULL with momentum NAN", keel.batch_norm, X, rm, rv,
           training=True, momentum=None)
    unchanged()
    raises(ValueError, r"eps", keel.batch_norm, X, rm, rv, training=True, eps=float("nan"), num_batches_tracked=n)
    unchanged()
    raises(ValueError, r"running_mean and running_var are NULL in inference", keel.batch_norm, X, None, None)
    raises(ValueError, r"running_mean \(.*\) and running_var \(.*\) must be given both or neither",
           keel.batch_norm, X, rm, None, training=True)
    unchanged()
    # arrays updated in place are never copied: a wrong dtype or layout is refused
    raises(TypeError, r"running_mean\.dtype float64 is not supported \(it must be float32\)", keel.batch_norm,
           X, rm.astype(np.float64), rv, training=True)
    raises(ValueError, r"running_var is updated in place: it must be a writeable, C-contiguous",
           keel.batch_norm, X, rm, np.ones(8, np.float32)[::2], training=True)
    ro = rv.copy()
    ro.flags.writeable = False
    raises(ValueError, r"running_var is updated in place", keel.batch_norm, X, rm, ro, training=True)
    raises(TypeError, r"num_batches_tracked\.dtype int32", keel.batch_norm, X, rm, rv, training=True,
           momentum=None, num_batches_tracked=np.zeros(1, np.int32))
    raises(ValueError, r"running_mean\.shape \(3,\) != \(4,\)", keel.batch_norm, X, rm[:3], rv)
    unchanged()
    raises(ValueError, r"x is 0-dimensional", keel.batch_norm, np.ones((), np.float32), rm, rv)


def test_batch_norm_backward_errors():
    raises(ValueError, r"mean and rstd are NULL in inference mode", keel.batch_norm_backward, X, X,
           training=False)
    raises(ValueError, r"mean\.shape \(2,\) != normalized_shape \(4,\)", keel.batch_norm_backward, X, X,
           np.ones(2, np.float32), W)


def test_dyt_errors():
    raises(ValueError, r"keel_dyt_fwd: alpha \(nan\) must be finite", keel.dyt, X, 4, float("nan"))
    raises(TypeError, r"alpha \(None\) must be a float", keel.dyt, X, 4, None)
    raises(ValueError, r"dy\.shape", keel.dyt_backward, X[:1], X, 4, 0.5)
    raises(TypeError, r"weight\.dtype float16", keel.dyt, X, 4, 0.5, np.ones(4, np.float16))


def test_int8_errors():
    raises(ValueError, r"scale \(0\) must be > 0 \(None: a dynamic per-row scale\)", keel.layer_norm_int8, X, 4,
           scale=0)
    raises(ValueError, r"keel_layernorm_fwd_i8: quant->scale \(-1\) must be finite", keel.layer_norm_int8, X, 4,
           scale=-1.0)
    raises(ValueError, r"keel_rmsnorm_fwd_i8: quant->smooth\[1\] \(0\) must be finite and > 0",
           keel.rms_norm_int8, X, 4, smooth=np.array([1, 0, 1, 1], np.float32))
    raises(ValueError, r"smooth\.shape \(3,\)", keel.rms_norm_int8, X, 4, smooth=np.ones(3, np.float32))
    raises(TypeError, r"keel_rmsnorm_fwd_i8: x\.dtype i8 is not supported", keel.rms_norm_int8,
           X.astype(np.int8), 4)


def test_non_native_byte_order_is_refused():
    big = X.astype(">f4")
    raises(TypeError, r"x\.dtype float32 \(non-native byte order\) is not supported", keel.layer_norm, big, 4)
    raises(TypeError, r"non-native byte order", keel.add_rms_norm, X, big, 4)


def test_float_normalized_shape_is_refused_even_after_int_calls():
    keel.layer_norm(X, 4)  # caches the layout of (4, shape, strides, dtype)
    raises(TypeError, "must be an int or a sequence of ints", keel.layer_norm, X, 4.0)
    raises(TypeError, "must be an int or a sequence of ints", keel.add_layer_norm, X, X, (4.0,))
    assert np.array_equal(keel.layer_norm(X, [4]), keel.layer_norm(X, np.int64(4)))
