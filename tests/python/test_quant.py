"""keel.layer_norm_int8 / rms_norm_int8 (bitwise keel's quantization of its own float forward)
and keel.eps_check."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keel
import reference_blocks as rb


@st.composite
def problems(draw):
    lead = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
    dim = draw(st.integers(1, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (draw(st.sampled_from([0.0, 7.0])) + rng.standard_normal(lead + (dim,))).astype(np.float32)
    w = rng.standard_normal(dim).astype(np.float32) if draw(st.booleans()) else None
    b = rng.standard_normal(dim).astype(np.float32) if draw(st.booleans()) else None
    smooth = (rng.random(dim) + 0.5).astype(np.float32) if draw(st.booleans()) else None
    scale = draw(st.sampled_from([None, 0.02, 0.1]))
    return x, dim, w, b, smooth, scale


def _folded(p, smooth, absent):
    """p / smooth (float32 divisions), SmoothQuant's folding; absent: p's value when None."""
    if smooth is None:
        return p
    if p is None:
        return None if absent == 0 else np.float32(absent) / smooth
    return p / smooth


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@given(problems())
def test_int8_is_keels_float_forward_quantized(kind, p):
    x, dim, w, b, smooth, scale = p
    if kind == "layer_norm":
        out = keel.layer_norm_int8(x, dim, w, b, scale=scale, smooth=smooth, return_stats=True)
        y, *stats = keel.layer_norm(x, dim, _folded(w, smooth, 1), _folded(b, smooth, 0), return_stats=True)
    else:
        out = keel.rms_norm_int8(x, dim, w, scale=scale, smooth=smooth, return_stats=True)
        y, *stats = keel.rms_norm(x, dim, _folded(w, smooth, 1), return_stats=True)
    if scale is None:
        q, row_scale, got_stats = out[0], out[1], out[2:]
    else:
        q, row_scale, got_stats = out[0], None, out[1:]
    assert q.dtype == np.int8 and q.shape == x.shape
    want_q, want_s = rb.quantize_i8(y.reshape(-1, dim), scale)
    assert np.array_equal(q.reshape(-1, dim), want_q)
    if scale is None:
        assert row_scale.dtype == np.float32 and row_scale.shape == x.shape[:-1]
        assert np.array_equal(row_scale.reshape(-1), want_s)
    for a, c in zip(got_stats, stats):
        assert np.array_equal(a, c)


def test_int8_return_forms_and_special_rows():
    x = np.zeros((3, 8), np.float32)
    x[1] = np.arange(8)
    x[2, 3] = np.nan
    q, s = keel.rms_norm_int8(x, 8)
    assert s[0] == 0 and q[0].tolist() == [0] * 8  # a row of zeros: scale 0, q 0
    assert np.isnan(s[2]) and q[2].tolist() == [0] * 8  # NaN row: scale NaN, q 0
    assert q[1].max() == 127
    q = keel.layer_norm_int8(x[:2], 8, scale=0.05)
    assert isinstance(q, np.ndarray) and q.dtype == np.int8


def test_int8_from_half_precision():
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float16)
    q, s = keel.layer_norm_int8(x, 32)
    want_q, want_s = rb.quantize_i8(keel.layer_norm(x.astype(np.float32), 32), None)
    assert np.array_equal(q, want_q) and np.array_equal(s, want_s)  # f16 widens exactly


def test_int8_gemma():
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    w = np.full(16, -0.5, np.float32)
    q, s = keel.rms_norm_int8(x, 16, w, add_unit_offset=True)
    q2, s2 = keel.rms_norm_int8(x, 16, w + 1)
    assert np.array_equal(q, q2) and np.array_equal(s, s2)


@pytest.mark.parametrize("dtype,eps,eps_in_dtype,representable,suggested", [
    ("f16", 1e-12, 0.0, False, 1e-4),
    (np.float16, 1e-5, np.float16(1e-5), True, 1e-4),
    ("bf16", 1e-12, None, True, 1e-5),
    ("f32", 1e-5, np.float32(1e-5), True, 1e-14),
    (np.float32, 0.0, 0.0, False, 1e-14),
])
def test_eps_check(dtype, eps, eps_in_dtype, representable, suggested):
    info = keel.eps_check(dtype, eps)
    assert isinstance(info, keel.EpsInfo) and info.eps == np.float32(eps)
    if eps_in_dtype is not None:
        assert info.eps_in_dtype == np.float32(eps_in_dtype)
    assert info.representable is representable
    assert info.suggested_eps == np.float32(suggested)
    assert info.max_amplification == pytest.approx(1 / np.sqrt(np.float32(eps)) if eps else np.inf)
    assert info.dominance_variance == pytest.approx(np.float32(eps))


def test_eps_check_bfloat16_dtype_object():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert keel.eps_check(ml_dtypes.bfloat16, 1e-12) == keel.eps_check("bf16", 1e-12)


def test_eps_check_errors():
    with pytest.raises(ValueError, match=r"keel_eps_check: .*eps"):
        keel.eps_check("f16", -1.0)
    with pytest.raises(TypeError, match=r"keel_eps_check: .*i8"):
        keel.eps_check("i8", 1e-5)
    for bad in ("float64", np.float64, "nope", 3):
        with pytest.raises(TypeError, match=r"keel\.eps_check: dtype .* is not one of f32, bf16, f16"):
            keel.eps_check(bad, 1e-5)
