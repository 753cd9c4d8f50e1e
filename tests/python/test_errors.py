"""Bad arguments raise the right exception, with keel's message; nothing crashes."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keel

X = np.ones((2, 4), np.float32) * np.arange(4, dtype=np.float32)


def raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, keel.KeelError)
    return info.value


def _half_types():
    types = [("f16", np.float16)]
    try:
        import ml_dtypes
        types.append(("bf16", ml_dtypes.bfloat16))
    except ImportError:  # NumPy has no bfloat16 of its own
        pass
    return types


@pytest.mark.parametrize("name,dtype", _half_types())
def test_half_types_are_handed_to_keel(name, dtype):
    # keel 0.1.0 answers KEEL_EUNSUPPORTED (a TypeError saying only f32 is supported); a keel
    # with bf16/f16 storage computes them, in their dtype. Either is right; nothing else is.
    x = X.astype(dtype)
    try:
        y = keel.layer_norm(x, 4)
    except TypeError as e:
        assert isinstance(e, keel.KeelTypeError) and e.status == 3, e  # KEEL_EUNSUPPORTED
        assert f"keel_layernorm_fwd: x.dtype {name} is not supported" in str(e), e
        for fn, who in [(keel.rms_norm, "keel_rmsnorm_fwd: x.dtype"),
                        (lambda x, n: keel.layer_norm_backward(x, X, n), "keel_layernorm_bwd: dy.dtype")]:
            raises(TypeError, who + f" {name} is not supported", fn, x, 4)
        return
    assert y.dtype == x.dtype
    want = keel.layer_norm(x.astype(np.float32), 4)
    np.testing.assert_allclose(y.astype(np.float32), want, rtol=1e-2, atol=1e-2)
    dx, dw, db = keel.layer_norm_backward(x, x, 4)
    assert dx.dtype == x.dtype and dw.dtype == np.float32


def test_int8_input_is_keels_unsupported():
    raises(TypeError, r"keel_layernorm_fwd: x\.dtype i8 is not supported", keel.layer_norm, X.astype(np.int8), 4)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.complex64, bool])
def test_other_dtypes_are_refused_not_converted(dtype):
    raises(TypeError, r"keel\.layer_norm: x\.dtype \w+ is not supported \(this version: float32 only",
           keel.layer_norm, X.astype(dtype), 4)


def test_parameter_dtypes_and_shapes():
    w64 = np.ones(4)
    raises(TypeError, r"weight\.dtype float64 is not supported \(it must be float32\)", keel.layer_norm, X, 4, w64)
    raises(ValueError, r"keel\.layer_norm: bias\.shape \(3,\) != normalized_shape \(4,\)",
           keel.layer_norm, X, 4, None, np.ones(3, np.float32))
    raises(TypeError, r"weight must be a numpy\.ndarray \(got list\)", keel.rms_norm, X, 4, [1, 1, 1, 1])
    raises(TypeError, r"x must be a numpy\.ndarray", keel.layer_norm, [[1.0, 2.0]], 2)


@pytest.mark.parametrize("shape", [5, (3, 4), (8,), (1, 2, 4)])
def test_wrong_normalized_shape(shape):
    raises(ValueError, r"keel\.layer_norm: normalized_shape .* does not match the trailing dimensions of x\.shape \(2, 4\)",
           keel.layer_norm, X, shape)


def test_malformed_normalized_shape():
    raises(ValueError, "normalized_shape is empty", keel.layer_norm, X, ())
    raises(ValueError, "negative dimension", keel.layer_norm, X, (-4,))
    raises(TypeError, "must be an int or a sequence of ints", keel.layer_norm, X, 4.0)
    raises(TypeError, "must be an int or a sequence of ints", keel.layer_norm, X, None)


def test_dim_zero_is_keels_einval():
    e = raises(ValueError, r"keel_layernorm_fwd: dim is 0", keel.layer_norm, np.zeros((3, 0), np.float32), 0)
    assert e.status == 2  # KEEL_EINVAL


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf"), 1e40])
def test_bad_eps_is_keels_einval(eps):
    raises(ValueError, r"keel_layernorm_fwd: eps \(.*\) must be finite and >= 0", keel.layer_norm, X, 4, eps=eps)
    raises(ValueError, r"keel_rmsnorm_fwd: eps \(.*\) must be finite and >= 0", keel.rms_norm, X, 4, eps=eps)
    raises(ValueError, r"keel_layernorm_bwd: eps", keel.layer_norm_backward, X, X, 4, eps=eps)
    raises(ValueError, r"keel_rmsnorm_bwd: eps", keel.rms_norm_backward, X, X, 4, eps=eps)


def test_eps_must_be_a_number():
    raises(TypeError, r"eps \('a'\) must be a float", keel.layer_norm, X, 4, eps="a")
    raises(TypeError, r"eps \(None\) must be a float", keel.layer_norm, X, 4, eps=None)


def test_backward_arguments():
    _, mean, rstd = keel.layer_norm(X, 4, return_stats=True)
    raises(ValueError, r"keel_layernorm_bwd: mean \(.*\) and rstd \(.*\) must be given both or neither",
           keel.layer_norm_backward, X, X, 4, mean=mean)
    raises(ValueError, r"mean has 3 values, x has 2 rows", keel.layer_norm_backward, X, X, 4,
           mean=np.zeros(3, np.float32), rstd=rstd)
    raises(ValueError, r"dy\.shape \(4, 2\) != x\.shape \(2, 4\)", keel.layer_norm_backward, X.T.copy(), X, 4)
    raises(TypeError, r"dy\.dtype float64", keel.rms_norm_backward, X.astype(np.float64), X, 4)
    raises(TypeError, r"rstd\.dtype float64", keel.rms_norm_backward, X, X, 4, rstd=np.ones(2))


def test_exception_hierarchy():
    assert issubclass(keel.KeelValueError, ValueError) and issubclass(keel.KeelValueError, keel.KeelError)
    assert issubclass(keel.KeelTypeError, TypeError)
    assert issubclass(keel.KeelMemoryError, MemoryError)
    assert issubclass(keel.KeelRuntimeError, RuntimeError)
    from keel._errors import error_for_status
    for status, cls in [(1, ValueError), (2, ValueError), (5, ValueError), (3, TypeError),
                        (4, MemoryError), (6, RuntimeError), (9, RuntimeError),
                        (10, RuntimeError)]:  # 10: KEEL_EBUSY
        e = error_for_status(status, "m")
        assert isinstance(e, cls) and e.status == status and str(e) == "m"


def test_set_num_threads_is_fine_with_any_int():
    before = keel.get_num_threads()
    keel.set_num_threads(0)  # one per core
    assert keel.get_num_threads() >= 1
    keel.set_num_threads(-(2**40))  # any n <= 0: one per core, even beyond C's int
    assert keel.get_num_threads() >= 1
    keel.set_num_threads(np.int64(1))
    assert keel.get_num_threads() == 1
    keel.set_num_threads(before)


def test_thread_count_is_capped_before_ctypes_cuts_it():
    # Issue 23, finding 7: ctypes passed 2**40 to keel_ctx_set_threads as 0 (one thread per
    # core), 2**32 + 2 as 2. Over KEEL_MAX_THREADS (1024) is refused before the call, by name.
    from keel._context import MAX_THREADS, Context
    before = keel.get_num_threads()
    for n in (2**40, 2**32 + 2, MAX_THREADS + 1, 10**6):
        e = raises(ValueError, rf"set_num_threads: nthreads \({n}\) is more than KEEL_MAX_THREADS \(1024\)",
                   keel.set_num_threads, n)
        assert e.status == 2  # KEEL_EINVAL
        assert keel.get_num_threads() == before
        raises(ValueError, rf"keel_ctx_create: nthreads \({n}\)", Context, n)
    for bad in (2.5, "4", None, True):
        e = raises(TypeError, r"set_num_threads: nthreads \(.*\) must be an int", keel.set_num_threads, bad)
        assert e.status == 2
        assert keel.get_num_threads() == before


def test_thread_cap_is_the_librarys():
    # The library refuses the same counts itself (KEEL_EINVAL naming nthreads and its value),
    # and MAX_THREADS is its KEEL_MAX_THREADS: one over it is refused, it is named as the cap.
    import ctypes

    from keel import _lib
    from keel._context import MAX_THREADS
    handle = ctypes.c_void_p()
    assert _lib.lib.keel_ctx_create(ctypes.byref(handle), MAX_THREADS + 1) == 2
    assert not handle.value
    msg = _lib.lib.keel_last_error().decode()
    assert f"nthreads ({MAX_THREADS + 1}) is more than KEEL_MAX_THREADS ({MAX_THREADS})" in msg, msg


def _run_python(code, **env):
    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
    full_env = dict(os.environ, PYTHONPATH=os.path.join(root, "python"), **env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True)


def test_unavailable_isa_is_a_runtime_error():
    # The context is created on first use; KEEL_ISA naming no path makes that fail (KEEL_EISA).
    r = _run_python("import numpy as np, keel\n"
                    "try:\n keel.layer_norm(np.ones((1, 4), np.float32), 4)\n"
                    "except RuntimeError as e:\n print(type(e).__name__, e.status, e)\n",
                    KEEL_ISA="no-such-isa")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("KeelRuntimeError 6 "), r.stdout


def test_keel_library_must_exist():
    r = _run_python("import keel", KEEL_LIBRARY="/nonexistent/libkeel.so")
    assert r.returncode != 0 and "KEEL_LIBRARY='/nonexistent/libkeel.so' is not a file" in r.stderr
