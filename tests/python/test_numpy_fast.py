"""The NumPy API's compiled entry (keel/_numpy_ext.py, csrc/numpy_fast.c) against its ctypes
path: the same arrays, bit for bit, the same errors, for the cases the entry takes, and the
ctypes path for the cases it hands over (bfloat16, copies, zero rows, bad arguments)."""

import numpy as np
import pytest

import keel
import keel._numpy_ext as ext
import keel.functional as functional


def test_the_compiled_entry_is_in_use():
    assert ext.fast is not None, ext.reason


def _both(fn, *args, **kwargs):
    """fn's result through the compiled entry and through the ctypes path."""
    fast = fn(*args, **kwargs)
    saved, functional._fast = functional._fast, None
    try:
        slow = fn(*args, **kwargs)
    finally:
        functional._fast = saved
    return fast, slow


def _same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for p, q in zip(a, b):
            _same(p, q)
        return
    if a is None:
        assert b is None
        return
    assert a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous
    assert a.tobytes() == b.tobytes(), "not the same bits"


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    d = shape[-1]
    return x, dy, rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)


LAYOUTS = {
    "contiguous": lambda a: a,
    "strided rows": lambda a: np.concatenate([a, a], axis=-1)[..., : a.shape[-1]],
    "transposed leads": lambda a: np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1),
    "every other row": lambda a: np.repeat(a, 2, axis=0)[::2],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [1, 15, 16, 17, 64, 768])
def test_forwards_and_backwards_match_the_ctypes_path(layout, dtype, dim):
    x, dy, w, b = _inputs((3, 4, dim), dtype, seed=dim)
    x, dy = LAYOUTS[layout](x), LAYOUTS[layout](dy)
    _same(*_both(keel.layer_norm, x, dim, w, b))
    y, mean, rstd = keel.layer_norm(x, dim, w, b, return_stats=True)
    _same(*_both(keel.layer_norm, x, dim, None, None, eps=0.5, return_stats=True))
    _same(*_both(keel.rms_norm, x, dim, w, return_stats=True, add_unit_offset=True))
    _same(*_both(keel.rms_norm, x, (dim,), None))
    for need in ((True, True, True), (True, False, False), (False, True, True)):
        _same(*_both(keel.layer_norm_backward, dy, x, dim, w, mean, rstd, 1e-5, *need))
        _same(*_both(keel.layer_norm_backward, dy, x, dim, None, None, None, 1e-5, *need))
    _, rstd = keel.rms_norm(x, dim, w, return_stats=True)
    _same(*_both(keel.rms_norm_backward, dy, x, dim, w, rstd))
    _same(*_both(keel.rms_norm_backward, dy, x, dim, w, None, None, True, False, True))


def test_several_normalized_dims_and_no_leading_dims():
    x, dy, _, _ = _inputs((2, 3, 4, 5), np.float32)
    w = np.arange(20, dtype=np.float32).reshape(4, 5)
    _same(*_both(keel.layer_norm, x, (4, 5), w, None, return_stats=True))
    _same(*_both(keel.layer_norm, x[0, 0], (4, 5), w, w, return_stats=True))  # mean, rstd: 0-d


HANDED_OVER = {
    "zero rows": lambda: keel.layer_norm(np.zeros((0, 8), np.float32), 8),
    "a Fortran-order weight": lambda: keel.layer_norm(np.ones((2, 2, 3), np.float32), (2, 3),
                                                      np.asfortranarray(np.ones((2, 3), np.float32))),
    "a list normalized_shape": lambda: keel.rms_norm(np.ones((2, 8), np.float32), [8]),
    "reversed rows": lambda: keel.rms_norm(np.arange(16, dtype=np.float32).reshape(2, 8)[::-1], 8),
    "a float64 weight": lambda: keel.layer_norm(np.ones((2, 8), np.float32), 8, np.ones(8)),
}


@pytest.mark.parametrize("case", sorted(HANDED_OVER))
def test_cases_it_hands_over_give_the_ctypes_paths_answer(case):
    try:
        fast = HANDED_OVER[case]()
    except Exception as e:  # the same error either way
        saved, functional._fast = functional._fast, None
        try:
            with pytest.raises(type(e), match=str(e).replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
                HANDED_OVER[case]()
        finally:
            functional._fast = saved
        return
    saved, functional._fast = functional._fast, None
    try:
        slow = HANDED_OVER[case]()
    finally:
        functional._fast = saved
    _same(fast, slow)


def test_errors_are_keels_with_its_message():
    x = np.ones((2, 8), np.float32)
    for fn, args in ((keel.layer_norm, (x, 8)), (keel.rms_norm, (x, 8))):
        with pytest.raises(keel.KeelValueError, match=r"eps \(-1\) must be finite and >= 0"):
            fn(*args, eps=-1.0)
    with pytest.raises(keel.KeelTypeError, match="float64 is not supported"):
        keel.layer_norm(x.astype(np.float64), 8)
    with pytest.raises(keel.KeelValueError, match="does not match the trailing dimensions"):
        keel.layer_norm(x, 7)
    with pytest.raises(keel.KeelValueError, match=r"dy.shape \(2, 4\) != x.shape \(2, 8\)"):
        keel.layer_norm_backward(np.ones((2, 4), np.float32), x, 8)
