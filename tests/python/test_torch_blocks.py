"""keel.torch's fused residual add + norm (add_layer_norm, add_rms_norm, AddLayerNorm, AddRMSNorm)
against torch's own composition `h = alpha * x + branch_scale * branch + skip_bias; y = norm(h)`
in float64: y, h and every gradient (random dy and dh), on (B, T, D) shapes around the vector
widths, pre-norm, post-norm, DeepNorm, LayerScale and skip_bias, Gemma's unit offset; what the
autograd function saves and which gradients it skips (keel's calls recorded); bf16/f16 and mixed
dtypes; the fallback; the modules' state_dict; a small pre-norm stack trained both ways."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: keel.torch tests need it (pip install torch)")

import keel.torch as kt  # noqa: E402
import reference as ref  # noqa: E402
import reference_blocks as rb  # noqa: E402

F = torch.nn.functional
F32_EPS = float(np.finfo(np.float32).eps)
# Relative to the largest magnitude in the row (for a parameter gradient: in the vector). keel
# computes from the float32 h, the reference from the exact one: h's rounding (2 ulps of its
# terms) moves y and the gradients by a few ulps of the row's scale (measured: at most 1.9 over
# these shapes, options and 5 seeds). A real bug (a wrong term, a missing dh, alpha or
# branch_scale) is off by 1e-3 or more.
FWD_RTOL = BWD_RTOL = 8 * F32_EPS
KINDS = ["layer_norm", "rms_norm"]
DIMS = [1, 15, 16, 17, 33, 1025]
CASES = {
    "pre-norm": {},
    "post-norm": {"return_sum": False},
    "deepnorm": {"alpha": 2.63, "return_sum": False},
    "layerscale+skip_bias": {"alpha": 0.7, "branch_scale": True, "skip_bias": True},
    "post-norm layerscale": {"branch_scale": True, "skip_bias": True, "return_sum": False},
    "no affine": {"affine": False},
    "gemma": {"add_unit_offset": True},
}
_NAMES = ["x", "branch", "weight", "bias", "branch_scale", "skip_bias"]


def _eps(kind):
    return 1e-5 if kind == "layer_norm" else F32_EPS


def _inputs(kind, lead, dims, seed, affine=True, branch_scale=False, skip_bias=False, dtype=torch.float32):
    """{x, branch, weight, bias, branch_scale, skip_bias}: random tensors (None where absent)."""
    g = torch.Generator().manual_seed(seed)

    def rand(shape, loc=0.0, scale=1.0):
        return (loc + scale * torch.randn(shape, generator=g)).to(dtype)

    return {"x": rand(lead + dims), "branch": rand(lead + dims),
            "weight": rand(dims, 1.0, 0.5) if affine else None,
            "bias": rand(dims, 0.0, 0.5) if affine and kind == "layer_norm" else None,
            "branch_scale": rand(dims, 0.0, 0.3) if branch_scale else None,
            "skip_bias": rand(dims, 0.0, 0.5) if skip_bias else None}


def _keel(kind, t, dims, eps=None, **kw):
    """keel.torch's function on the tensors of _inputs."""
    common = dict(branch_scale=t["branch_scale"], skip_bias=t["skip_bias"], **kw)
    if kind == "layer_norm":
        return kt.add_layer_norm(t["x"], t["branch"], dims, t["weight"], t["bias"], eps or 1e-5, **common)
    return kt.add_rms_norm(t["x"], t["branch"], dims, t["weight"], eps, **common)


def _torch(kind, t, dims, eps, alpha=1.0, add_unit_offset=False, return_sum=True):
    """torch's composition, the lines a fused call replaces."""
    h = alpha * t["x"] + (t["branch"] if t["branch_scale"] is None else t["branch_scale"] * t["branch"])
    if t["skip_bias"] is not None:
        h = h + t["skip_bias"]
    if kind == "layer_norm":
        y = F.layer_norm(h, dims, t["weight"], t["bias"], eps)
    else:
        w = t["weight"]
        y = F.rms_norm(h, dims, 1 + w if add_unit_offset and w is not None else w, eps)
    return (y, h) if return_sum else y


def _leaves(t, dtype=None):
    """Copies of the tensors as leaves that require a gradient (dtype: converted first)."""
    return {k: None if v is None else (v if dtype is None else v.to(dtype)).detach().clone().requires_grad_(True)
            for k, v in t.items()}


def _grads(outputs, t, grad_outputs):
    """{name: gradient} of the present tensors of t (None where the outputs do not depend on it)."""
    names = [k for k in _NAMES if t[k] is not None]
    got = torch.autograd.grad(outputs, [t[k] for k in names], grad_outputs, allow_unused=True)
    return dict(zip(names, got))


def _assert_close(got, want, magnitude, dim, rtol, what):
    """|got - want| <= rtol * (the largest magnitude of the row) + 1e-9, elementwise; rows of
    dim. (1e-9: torch's float64 is itself off by ~1e-16 * |h| / std, ~1e-13 on a row of one
    feature, where rstd = 1/sqrt(eps); far below float32's ulps.)"""
    got = got.detach().double().reshape(-1, dim)
    want = want.detach().double().reshape(-1, dim)
    mag = torch.as_tensor(np.asarray(magnitude, np.float64)).reshape(-1, dim)
    if got.numel() == 0:
        return
    bound = rtol * mag.amax(dim=1, keepdim=True) + 1e-9
    err = (got - want).abs()
    ratio = (err / bound).max().item()
    assert ratio <= 1, f"{what}: error {ratio:.3g} x the bound ({rtol / F32_EPS:.0f} float32 ulps of the row's scale)"


def _check_against_float64(kind, lead, dims, seed, case):
    opts = dict(case)
    affine = opts.pop("affine", True)
    t = _inputs(kind, lead, dims, seed, affine, opts.pop("branch_scale", False), opts.pop("skip_bias", False))
    alpha, return_sum = opts.get("alpha", 1.0), opts.get("return_sum", True)
    unit = opts.get("add_unit_offset", False)
    eps = _eps(kind)
    mine, theirs = _leaves(t), _leaves(t, torch.float64)
    out = _keel(kind, mine, dims, eps, **opts)
    want = _torch(kind, theirs, dims, eps, **opts)
    y, h = out if return_sum else (out, None)
    y64, h64 = want if return_sum else (want, _torch(kind, theirs, dims, eps, alpha, unit)[1])
    assert y.dtype is torch.float32 and y.shape == lead + dims
    g = torch.Generator().manual_seed(seed + 1)
    dy = torch.randn(lead + dims, generator=g)
    dh = torch.randn(lead + dims, generator=g) if return_sum else None
    if return_sum:
        got = _grads((y, h), mine, (dy, dh))
        exp = _grads(want, theirs, (dy.double(), dh.double()))
    else:
        got, exp = _grads(y, mine, dy), _grads(want, theirs, dy.double())

    # magnitudes of the terms (reference.py's convention), at the exact h
    dim = int(np.prod(dims))
    n = lambda v: None if v is None else v.detach().double().numpy()  # noqa: E731
    hn, w = n(h64), n(theirs["weight"])
    w_eff = (1 + w) if unit and w is not None else w
    scale, sbias = n(theirs["branch_scale"]), n(theirs["skip_bias"])
    h_mag = (abs(alpha) * np.abs(n(theirs["x"])) + np.abs(n(theirs["branch"]) * (1 if scale is None else scale))
             + (0 if sbias is None else np.abs(sbias)))
    if kind == "layer_norm":
        y_mag = ref.layer_norm(hn, dims, w_eff, n(theirs["bias"]), eps)["y"][1]
    else:
        y_mag = ref.rms_norm(hn, dims, w_eff, eps)["y"][1]
    mags = rb.add_norm_backward(kind, dy.double().numpy(), hn, dims, w_eff, eps,
                                dh=None if dh is None else dh.double().numpy(), alpha=alpha, scale=scale,
                                r=n(theirs["branch"]))
    _assert_close(y, y64, y_mag, dim, FWD_RTOL, "y")
    if return_sum:
        _assert_close(h, h64, h_mag, dim, FWD_RTOL, "h")
    mag_of = {"x": "dx", "branch": "dbranch", "weight": "dweight", "bias": "dbias",
              "branch_scale": "dbranch_scale", "skip_bias": "dskip_bias"}
    assert got.keys() == exp.keys()
    for name, grad in got.items():
        assert grad is not None and grad.dtype is torch.float32, name
        _assert_close(grad, exp[name], mags[mag_of[name]][1], dim, BWD_RTOL, "d" + name)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("kind, case", [(k, c) for k in KINDS for c in CASES
                                        if k == "rms_norm" or not CASES[c].get("add_unit_offset")])
def test_matches_torch_float64(kind, dim, case):
    _check_against_float64(kind, (3, 5), (dim,), seed=dim * 7 + len(case), case=CASES[case])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lead, dims", [((), (9,)), ((2,), (3, 5)), ((2, 2, 3), (4, 8)), ((0, 4), (17,)),
                                        ((64,), (96,))])
def test_other_shapes_match_torch_float64(kind, lead, dims):
    for case in ("pre-norm", "layerscale+skip_bias", "deepnorm"):
        _check_against_float64(kind, lead, dims, seed=len(lead) + sum(dims), case=CASES[case])


@pytest.mark.parametrize("kind", KINDS)
def test_h_is_the_float32_sum_and_y_the_plain_norm(kind):
    # keel.h: h = ((alpha*x) + (scale*branch)) + skip_bias in float32, y bitwise the norm of h
    t = _inputs(kind, (4, 6), (33,), 3, branch_scale=True, skip_bias=True)
    y, h = _keel(kind, t, 33, alpha=0.7)
    assert torch.equal(h, (0.7 * t["x"] + t["branch_scale"] * t["branch"]) + t["skip_bias"])
    plain = kt.layer_norm(h, 33, t["weight"], t["bias"]) if kind == "layer_norm" else kt.rms_norm(h, 33, t["weight"])
    assert torch.equal(y, plain)
    assert torch.equal(_keel(kind, t, 33, alpha=0.7, return_sum=False), y)


# --- what the autograd function saves, calls and skips --------------------------------------

def _bwd(calls):
    """The last fused backward operator's call (its arguments by name, and .mask)."""
    call = calls[-1]
    assert call.name in ("add_layer_norm_backward", "add_rms_norm_backward"), call.name
    return call


def _mask(call):
    """A fused backward's output_mask by gradient name (RMSNorm's has no dbias)."""
    names = ["dx", "dbranch", "dweight", "dbias", "dbranch_scale", "dskip_bias"]
    if call.name == "add_rms_norm_backward":
        names.remove("dbias")
    return dict(zip(names, call.mask))


@pytest.mark.parametrize("kind", KINDS)
def test_pre_norm_saves_h_and_statistics(kind, keel_calls):
    calls = keel_calls
    t = _leaves(_inputs(kind, (2, 3), (16,), 0))
    y, h = _keel(kind, t, 16)
    assert [c.name for c in calls] == ["add_" + kind]
    (y.sum() + h.pow(2).sum()).backward()
    assert len(calls) == 2  # no second forward: nothing recomputed
    b = _bwd(calls)
    assert b["h"].data_ptr() == h.data_ptr() and b["rstd"] is not None  # the forward's h and statistics
    assert b["x"] is None and b["branch"] is None  # x and branch not read again
    assert b["dh"] is not None and _mask(b)["dx"]
    if kind == "layer_norm":
        assert b["mean"] is not None


@pytest.mark.parametrize("kind", KINDS)
def test_post_norm_recomputes_h_from_x_and_branch(kind, keel_calls):
    calls = keel_calls
    t = _leaves(_inputs(kind, (2, 3), (16,), 0, skip_bias=True))
    y = _keel(kind, t, 16, alpha=2.0, return_sum=False)
    assert isinstance(y, torch.Tensor)
    assert calls[-1]["return_sum"] is False  # the forward writes no h
    y.pow(2).sum().backward()
    b = _bwd(calls)
    assert b["h"] is None and b["dh"] is None and b["rstd"] is not None
    assert b["x"].data_ptr() == t["x"].data_ptr() and b["branch"].data_ptr() == t["branch"].data_ptr()
    assert b["alpha"] == 2.0 and b["skip_bias"] is not None
    assert _mask(b)["dx"] and _mask(b)["dbranch"]  # alpha 2: different


def test_frozen_and_unneeded_gradients_are_not_computed(keel_calls):
    calls = keel_calls
    t = _leaves(_inputs("layer_norm", (2, 3), (16,), 0, branch_scale=True, skip_bias=True))
    t["weight"].requires_grad_(False)
    t["branch_scale"].requires_grad_(False)
    t["x"] = t["x"].detach()  # the stream needs no gradient here
    y, h = _keel("layer_norm", t, 16)
    (y.sum() + h.sum()).backward()
    b = _bwd(calls)
    assert _mask(b) == dict(dx=False, dbranch=True, dweight=False, dbias=True, dbranch_scale=False, dskip_bias=True)
    assert b["branch"] is None  # branch not saved: dbranch_scale is not wanted
    assert t["weight"].grad is None and t["branch_scale"].grad is None and t["bias"].grad is not None
    # only the parameters: no row gradient at all
    t = _leaves(_inputs("rms_norm", (2, 3), (16,), 0, branch_scale=True))
    t["x"], t["branch"] = t["x"].detach(), t["branch"].detach()
    y, h = _keel("rms_norm", t, 16)
    y.sum().backward()
    b = _bwd(calls)
    assert _mask(b) == dict(dx=False, dbranch=False, dweight=True, dbranch_scale=True, dskip_bias=False)
    assert b["branch"].data_ptr() == t["branch"].data_ptr()  # branch kept for dbranch_scale
    assert b["dh"] is None  # h unused: no dh read


@pytest.mark.parametrize("kind", KINDS)
def test_only_h_or_only_y_used(kind):
    t = _inputs(kind, (3, 4), (17,), 5, skip_bias=True)
    mine, theirs = _leaves(t), _leaves(t, torch.float64)
    # only h reaches the loss: dy is 0, so dx = dbranch = dskip_bias rows = dh; dweight = 0
    y, h = _keel(kind, mine, 17, _eps(kind))
    dh = torch.randn(3, 4, 17)
    h.backward(dh)
    assert torch.equal(mine["x"].grad, dh) and torch.equal(mine["branch"].grad, dh)
    assert torch.equal(mine["weight"].grad, torch.zeros(17))
    torch.testing.assert_close(mine["skip_bias"].grad, dh.sum((0, 1)))
    # only y reaches the loss: no dh (as with return_sum=False)
    mine = _leaves(t)
    y, _ = _keel(kind, mine, 17, _eps(kind))
    y64, _ = _torch(kind, theirs, (17,), _eps(kind))
    dy = torch.randn(3, 4, 17)
    y.backward(dy)
    y64.backward(dy.double())
    for name in ("x", "branch", "weight", "skip_bias"):
        torch.testing.assert_close(mine[name].grad, theirs[name].grad.float(), rtol=1e-5, atol=1e-5)


def test_dx_and_dbranch_computed_once_when_equal(keel_calls):
    # alpha 1, no branch_scale: dx = dbranch = G; keel writes it once, both leaves get it, and
    # accumulating into one leaf's .grad does not touch the other's
    calls = keel_calls
    t = _leaves(_inputs("layer_norm", (2, 3), (16,), 1))
    y, h = _keel("layer_norm", t, 16)
    (y.pow(2).sum() + h.sum()).backward()
    assert not _mask(_bwd(calls))["dbranch"]
    first = t["x"].grad.clone()
    assert torch.equal(t["branch"].grad, first)
    y, h = _keel("layer_norm", t, 16)
    (y.pow(2).sum() + h.sum()).backward()
    assert torch.equal(t["x"].grad, 2 * first) and torch.equal(t["branch"].grad, 2 * first)
    t["x"].grad.zero_()
    assert torch.equal(t["branch"].grad, 2 * first)


@pytest.mark.parametrize("kind", KINDS)
def test_no_grad_saves_nothing(kind, keel_calls):
    calls = keel_calls
    t = _leaves(_inputs(kind, (2, 3), (16,), 0))
    y1, h1 = _keel(kind, t, 16)
    with torch.no_grad():
        y, h = _keel(kind, t, 16)
    assert y.grad_fn is None and h.grad_fn is None and not y.requires_grad
    assert torch.equal(y, y1.detach()) and torch.equal(h, h1.detach())
    assert [c.name for c in calls] == ["add_" + kind] * 2  # no backward pending: nothing saved


# --- dtypes ------------------------------------------------------------------------------------

def _ulp_scale(v):
    return torch.exp2(torch.floor(torch.log2(v.detach().abs().clamp_min(1e-3))))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_sum", [True, False])
def test_low_precision_goes_through_keel(kind, dtype, return_sum, keel_calls):
    """bf16/f16 tensors and module, through keel: y and h within 1 ulp of the dtype of float64 on
    the same bf16/f16 values (one rounding of the float32 result); the gradients within 1 ulp of
    the dtype of the magnitude of their terms (reference.py's convention: dx = dh + the norm's dx
    may cancel). The pre-norm backward reads the stored bf16/f16 h with the forward's
    statistics: that moves it by less than half an ulp of those terms (measured 0.47)."""
    calls = keel_calls
    cls = kt.AddLayerNorm if kind == "layer_norm" else kt.AddRMSNorm
    m = cls(64, dtype=dtype, return_sum=return_sum)
    t = _inputs(kind, (5, 7), (64,), 2, dtype=dtype)
    with torch.no_grad():
        m.weight.copy_(t["weight"])
        if kind == "layer_norm":
            m.bias.copy_(t["bias"])
    x, branch = (t[k].requires_grad_(True) for k in ("x", "branch"))
    out = m(x, branch)
    assert calls, "keel was not called"
    theirs = _leaves({**t, "weight": m.weight, "bias": getattr(m, "bias", None)}, torch.float64)
    want = _torch(kind, theirs, (64,), _eps(kind), return_sum=return_sum)
    outs, wants = (out, want) if return_sum else ((out,), (want,))
    ulp = torch.finfo(dtype).eps  # the spacing at 1: scaled to each value's binade
    for got, exp in zip(outs, wants):
        assert got.dtype is dtype
        assert ((got.double() - exp).abs() <= ulp * _ulp_scale(exp)).all()
    g = torch.Generator().manual_seed(3)
    douts = [torch.randn(exp.shape, generator=g).to(dtype) for exp in wants]
    torch.autograd.backward(outs, douts)
    torch.autograd.backward(wants, [d.double() for d in douts])
    h64 = (theirs["x"] + theirs["branch"]).detach().numpy()
    mags = rb.add_norm_backward(kind, douts[0].double().numpy(), h64, (64,), theirs["weight"].detach().numpy(),
                                _eps(kind), dh=douts[1].double().numpy() if return_sum else None)
    for name, got, exp in (("dx", x.grad, theirs["x"].grad), ("dbranch", branch.grad, theirs["branch"].grad),
                           ("dweight", m.weight.grad, theirs["weight"].grad)):
        assert got.dtype is dtype
        assert ((got.double() - exp).abs().numpy() <= ulp * mags[name][1]).all(), name
    if kind == "layer_norm":
        assert m.bias.grad.dtype is dtype
        assert ((m.bias.grad.double() - theirs["bias"].grad).abs().numpy() <= ulp * mags["dbias"][1]).all()


def test_mixed_dtypes_float32_stream_bf16_branch():
    # a float32 residual stream and a bf16 sublayer output: h, y in float32 (as x + branch),
    # dbranch in bf16
    t = _inputs("layer_norm", (3, 4), (33,), 4, branch_scale=True)
    t["branch"] = t["branch"].bfloat16()
    mine, theirs = _leaves(t), _leaves(t, torch.float64)
    y, h = _keel("layer_norm", mine, 33)
    y64, h64 = _torch("layer_norm", theirs, (33,), 1e-5)
    assert y.dtype is h.dtype is torch.float32
    torch.testing.assert_close(h.double(), h64, rtol=2 * F32_EPS, atol=1e-6)
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=1e-5)
    dy, dh = torch.randn(3, 4, 33), torch.randn(3, 4, 33)
    got, exp = _grads((y, h), mine, (dy, dh)), _grads((y64, h64), theirs, (dy.double(), dh.double()))
    assert got["branch"].dtype is torch.bfloat16 and got["x"].dtype is torch.float32
    for name, grad in got.items():
        atol = 2 ** -7 * exp[name].abs().max().item() if name == "branch" else 1e-4
        torch.testing.assert_close(grad.double(), exp[name], rtol=0, atol=atol)


# --- fallback -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, case", [(k, c) for k in KINDS for c in ("pre-norm", "layerscale+skip_bias", "deepnorm")]
                         + [("rms_norm", "gemma")])
def test_float64_falls_back_to_the_torch_composition(kind, case, keel_calls):
    calls = keel_calls
    opts = dict(CASES[case])
    t = _inputs(kind, (2, 3), (16,), 6, True, opts.pop("branch_scale", False), opts.pop("skip_bias", False),
                dtype=torch.float64)
    eps = _eps(kind)
    mine, theirs = _leaves(t), _leaves(t)
    out, want = _keel(kind, mine, 16, eps, **opts), _torch(kind, theirs, (16,), eps, **opts)
    outs, wants = (out, want) if opts.get("return_sum", True) else ((out,), (want,))
    assert all(torch.equal(a, b) for a, b in zip(outs, wants)) and not calls
    douts = [torch.randn_like(w) for w in wants]
    got, exp = _grads(outs, mine, douts), _grads(wants, theirs, douts)
    assert all(torch.equal(got[k], exp[k]) for k in got) and not calls


def test_meta_device_and_compile_fall_back():
    m = kt.AddLayerNorm(8, device="meta")
    y, h = m(torch.empty(2, 8, device="meta"), torch.empty(2, 8, device="meta"))
    assert y.device.type == h.device.type == "meta"
    m = kt.AddRMSNorm(8, branch_scale_init=0.5)
    x, r = torch.randn(3, 8, requires_grad=True), torch.randn(3, 8)
    y, h = torch.compile(m, backend="eager", fullgraph=True)(x, r)
    (y.sum() + h.sum()).backward()
    want_y, want_h = m(x, r)
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(h, want_h)
    assert x.grad.shape == x.shape and m.branch_scale.grad is not None


# --- modules ------------------------------------------------------------------------------------

def test_modules_load_torch_state_dicts():
    for kw in [{}, {"bias": False}, {"elementwise_affine": False}, {"eps": 1e-6}]:
        theirs = torch.nn.LayerNorm(24, **kw)
        with torch.no_grad():
            for p in theirs.parameters():
                p.normal_()
        mine = kt.AddLayerNorm(24, **kw)
        assert mine.state_dict().keys() == theirs.state_dict().keys()
        mine.load_state_dict(theirs.state_dict())  # strict
        torch.nn.LayerNorm(24, **kw).load_state_dict(mine.state_dict())
        x, r = torch.randn(2, 5, 24), torch.randn(2, 5, 24)
        y, h = mine(x, r)
        torch.testing.assert_close(h, x + r, rtol=0, atol=0)
        torch.testing.assert_close(y, theirs(x + r), rtol=1e-5, atol=1e-5)
    for kw in [{}, {"eps": 1e-6}, {"elementwise_affine": False}]:
        theirs, mine = torch.nn.RMSNorm(24, **kw), kt.AddRMSNorm(24, **kw)
        with torch.no_grad():
            for p in theirs.parameters():
                p.normal_()
        mine.load_state_dict(theirs.state_dict())
        x, r = torch.randn(4, 24), torch.randn(4, 24)
        torch.testing.assert_close(mine(x, r)[0], theirs(x + r), rtol=1e-5, atol=1e-5)


def test_module_options():
    m = kt.AddLayerNorm((4, 6), alpha=2.0, branch_scale_init=1e-5, return_sum=False, dtype=torch.float64)
    assert m.normalized_shape == (4, 6) and m.weight.dtype is torch.float64
    assert dict(m.named_parameters()).keys() == {"weight", "bias", "branch_scale"}
    assert torch.equal(m.branch_scale, torch.full((4, 6), 1e-5, dtype=torch.float64))
    assert repr(m) == ("AddLayerNorm((4, 6), eps=1e-05, elementwise_affine=True, bias=True, alpha=2.0, "
                       "branch_scale_init=1e-05, return_sum=False)")
    x, r = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(m(x, r), F.layer_norm(2 * x + 1e-5 * r, (4, 6)))
    g = kt.AddRMSNorm(8, add_unit_offset=True)
    assert torch.equal(g.weight, torch.zeros(8)) and repr(g).endswith("add_unit_offset=True)")
    x, r = torch.randn(2, 8), torch.randn(2, 8)
    torch.testing.assert_close(g(x, r)[0], F.rms_norm(x + r, (8,), eps=F32_EPS))
    assert repr(kt.AddRMSNorm(8)) == repr(torch.nn.RMSNorm(8)).replace("RMSNorm", "AddRMSNorm")
    assert repr(kt.AddLayerNorm(8)) == repr(torch.nn.LayerNorm(8)).replace("LayerNorm", "AddLayerNorm")


def test_strided_inputs():
    m = kt.AddLayerNorm(16)
    base, other = torch.randn(6, 5, 32), torch.randn(5, 6, 16)
    for x, r in ((base[:, :, :16], other.transpose(0, 1)), (base[::2, :, 16:], other.transpose(0, 1)[::2]),
                 (base[:, :, ::2], other.transpose(0, 1))):
        y, h = m(x, r)
        y2, h2 = m(x.contiguous(), r.contiguous())
        assert torch.equal(y, y2) and torch.equal(h, h2)


def test_errors():
    with pytest.raises(ValueError, match=r"branch.shape \(2, 7\) != x.shape \(2, 8\)"):
        kt.add_layer_norm(torch.randn(2, 8), torch.randn(2, 7), 8)
    with pytest.raises(ValueError, match=r"branch_scale.shape \(4,\) != normalized_shape \(8,\)"):
        kt.add_rms_norm(torch.randn(2, 8), torch.randn(2, 8), 8, branch_scale=torch.ones(4))
    with pytest.raises(ValueError, match="does not match the trailing dimensions"):
        kt.AddLayerNorm(8)(torch.randn(2, 7), torch.randn(2, 7))
    with pytest.raises(ValueError, match="alpha"):
        kt.add_layer_norm(torch.randn(2, 8), torch.randn(2, 8), 8, alpha=float("inf"))


# --- a pre-norm stack trained both ways -----------------------------------------------------------

class _Stack(torch.nn.Module):
    """Pre-norm residual MLP blocks: h = x + f(norm(x)) chained, the fused module or torch's lines."""

    def __init__(self, fused, kind, width=32, depth=3):
        super().__init__()
        self.fused = fused
        cls = {(True, "layer_norm"): kt.AddLayerNorm, (True, "rms_norm"): kt.AddRMSNorm,
               (False, "layer_norm"): torch.nn.LayerNorm, (False, "rms_norm"): torch.nn.RMSNorm}[fused, kind]
        eps = {} if kind == "layer_norm" else {"eps": F32_EPS}
        self.norms = torch.nn.ModuleList(cls(width, **eps) for _ in range(depth + 1))
        self.mlps = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(),
                                                            torch.nn.Linear(2 * width, width))
                                        for _ in range(depth))
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x):
        if self.fused:
            y, h = self.norms[0](x, torch.zeros_like(x))
            for mlp, norm in zip(self.mlps, self.norms[1:]):
                y, h = norm(h, mlp(y))
        else:
            h = x
            y = self.norms[0](h)
            for mlp, norm in zip(self.mlps, self.norms[1:]):
                h = h + mlp(y)
                y = norm(h)
        return self.head(y)


@pytest.mark.parametrize("kind", KINDS)
def test_pre_norm_stack_trains_like_torch(kind):
    # same weights, data and SGD steps: the losses differ by float32 rounding inside the norms
    # only; a wrong dh path or dweight moves them by far more than 1e-5
    losses = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = _Stack(fused, kind)
        with torch.no_grad():
            for norm in model.norms:
                norm.weight.normal_(1.0, 0.2)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        x, target = torch.randn(8, 12, 32, generator=g), torch.randn(8, 12, 1, generator=g)
        run = []
        for _ in range(15):
            opt.zero_grad()
            loss = F.mse_loss(model(x), target)
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(np.array(run))
    assert losses[0][-1] < 0.7 * losses[0][0]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
