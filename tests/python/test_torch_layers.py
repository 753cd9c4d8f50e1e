"""keel.torch_layers: the operators keel::batch_norm, layer_scale, dyt (and their backwards) and
the modules BatchNorm1d/2d/3d, LayerScale, DyT. Values, gradients and running statistics against
torch in float64; the modules against torch.nn's (state_dict, train/eval, momentum None); the
memory formats (channels_last read and written in place: keel's calls recorded); the refusal of
training batches of 0 and 1 value per channel; the fallbacks and their warnings; opcheck;
torch.compile, torch.export and torch.func; PyTorch's own OpInfo samples of batch_norm."""

import copy
import math
import warnings

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: keel.torch_layers tests need it")

import keel._torch_fallback  # noqa: E402
import keel.torch_layers as kl  # noqa: E402

F = torch.nn.functional
K = torch.ops.keel
F32_EPS = 2.0 ** -23
# Tolerances relative to the largest reference magnitude (at least 1): keel computes in float32
# (statistics in double) and rounds each output once; bf16 and f16 outputs are rounded once more.
RTOL = {torch.float32: 64 * F32_EPS, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -9}


@pytest.fixture(autouse=True)
def _fresh_fallback_warnings():
    """Each test sees the once-per-reason fallback warnings afresh."""
    seen = keel._torch_fallback._SEEN
    seen.clear()
    yield
    seen.clear()


def _row_copies():
    """How many tensors keel's torch operators have copied to or from contiguous rows so far."""
    return kl._ext.keel_torch_row_copies()


def _named(calls, name):
    return [c for c in calls if c.name == name]


def _close(actual, expected, rtol):
    """|actual - expected| <= rtol * max(1, max |expected|), elementwise; shapes equal."""
    assert actual.shape == expected.shape
    bound = rtol * max(1.0, expected.abs().max().item() if expected.numel() else 0.0)
    err = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    assert err <= bound, f"max error {err:.3g} > {bound:.3g}"


def _quiet(fn, *args, **kwargs):
    """fn(*args) with keel's fallback warnings silenced (tests of the float64 path)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kl.KeelFallbackWarning)
        return fn(*args, **kwargs)


# === BatchNorm =================================================================================

def _layout(x, kind):
    """x (N, C, ...) in a memory layout: "nchw" (contiguous), "channels_last" (2d, 3d), or
    "nlc" (a 3-dim (N, C, L) tensor whose memory is (N, L, C))."""
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    if kind == "nlc":
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return x.contiguous()


BN_SHAPES = [("BatchNorm1d", (16, 5), "nchw"), ("BatchNorm1d", (4, 5, 6), "nchw"), ("BatchNorm1d", (4, 5, 6), "nlc"),
             ("BatchNorm2d", (3, 5, 4, 6), "nchw"), ("BatchNorm2d", (3, 5, 4, 6), "channels_last"),
             ("BatchNorm3d", (2, 3, 2, 3, 4), "channels_last")]
BN_MODES = {"train": {}, "train momentum None": {"momentum": None}, "eval": {"eval": True},
            "no affine": {"affine": False}, "no running stats": {"track_running_stats": False},
            "no running stats, eval": {"track_running_stats": False, "eval": True}}


def _bn_pair(cls, C, seed, **kw):
    """(keel module in float32, torch.nn module in float64) with the same random parameters
    and running statistics."""
    mine = getattr(kl, cls)(C, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mine.parameters():
            p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
        if mine.running_mean is not None:
            mine.running_mean.copy_(torch.randn(C, generator=g))
            mine.running_var.copy_(0.5 + torch.rand(C, generator=g))
    theirs = getattr(torch.nn, cls)(C, **kw).double()
    theirs.load_state_dict(mine.state_dict())
    return mine, theirs


@pytest.mark.parametrize("mode", list(BN_MODES))
@pytest.mark.parametrize("cls,shape,layout", BN_SHAPES)
def test_batch_norm_module_matches_torch_float64(cls, shape, layout, mode):
    opts = dict(BN_MODES[mode])
    evaluate = opts.pop("eval", False)
    mine, theirs = _bn_pair(cls, shape[1], seed=len(shape), **opts)
    mine.train(not evaluate), theirs.train(not evaluate)
    g = torch.Generator().manual_seed(1)
    for step in range(3 if opts.get("momentum", 0) is None else 1):
        x = _layout(3.0 + 2.0 * torch.randn(shape, generator=g), layout)
        dy = torch.randn(shape, generator=g)
        x_mine, x_ref = x.clone().requires_grad_(), x.double().requires_grad_()
        y, y_ref = mine(x_mine), theirs(x_ref)
        y.backward(dy), y_ref.backward(dy.double())
        _close(y, y_ref, RTOL[torch.float32])
        assert y.stride() == x.stride(), "y keeps x's memory format"
        _close(x_mine.grad, x_ref.grad, RTOL[torch.float32])
    for name, p in mine.named_parameters():
        _close(p.grad, dict(theirs.named_parameters())[name].grad, RTOL[torch.float32])
    for name, b in mine.named_buffers():
        ref = dict(theirs.named_buffers())[name]
        assert b.dtype == (torch.int64 if name == "num_batches_tracked" else torch.float32)
        if name == "num_batches_tracked":
            assert b.item() == ref.item()
        else:
            _close(b, ref, 4 * F32_EPS)


@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0, None])
def test_running_stats_equal_torch_float32(momentum):
    mine, theirs = kl.BatchNorm2d(6, momentum=momentum), torch.nn.BatchNorm2d(6, momentum=momentum)
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        x = 1.0 + torch.randn(5, 6, 3, 3, generator=g)
        mine(x), theirs(x)
    assert mine.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 4
    torch.testing.assert_close(mine.running_mean, theirs.running_mean, rtol=4 * F32_EPS, atol=4 * F32_EPS)
    torch.testing.assert_close(mine.running_var, theirs.running_var, rtol=4 * F32_EPS, atol=4 * F32_EPS)


def test_state_dict_loads_from_torch_and_back():
    theirs = torch.nn.BatchNorm2d(4, momentum=None)
    for _ in range(2):
        theirs(torch.randn(3, 4, 5, 5))
    mine = kl.BatchNorm2d(4, momentum=None)
    assert isinstance(mine, torch.nn.BatchNorm2d)
    assert mine.state_dict().keys() == theirs.state_dict().keys()
    mine.load_state_dict(theirs.state_dict())
    assert mine.num_batches_tracked.item() == 2
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(mine.eval()(x), theirs.eval()(x))
    back = torch.nn.BatchNorm2d(4, momentum=None)
    back.load_state_dict(mine.state_dict())
    torch.testing.assert_close(back.running_var, theirs.running_var, rtol=0, atol=0)


def test_channels_last_is_read_and_written_in_place(keel_calls):
    bn = kl.BatchNorm2d(8)
    x = torch.randn(2, 8, 3, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    before = _row_copies()
    y = bn(x)
    assert _row_copies() == before, "keel reads x's own NHWC rows and writes y's"
    assert y.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn(2, 3, 5, 8).permute(0, 3, 1, 2)  # a channels_last gradient
    y.backward(dy)
    assert _row_copies() == before, "the backward reads dy and x and writes dx in place too"
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert [c.name for c in keel_calls] == ["batch_norm", "batch_norm_backward"]
    torch.testing.assert_close(y, F.batch_norm(x, None, None, bn.weight, bn.bias, True), rtol=1e-5, atol=1e-5)


def test_nchw_goes_through_a_copy():
    bn = kl.BatchNorm2d(8)
    x = torch.randn(2, 8, 3, 5)
    before = _row_copies()
    y = bn(x)
    assert _row_copies() == before + 2, "x copied to NHWC rows, y written through a staging copy"
    assert y.is_contiguous()
    torch.testing.assert_close(y, F.batch_norm(x, None, None, bn.weight, bn.bias, True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (0, 3), (0, 3, 4, 4), (2, 3, 0, 4)])
def test_training_refuses_0_and_1_values_per_channel(shape):
    bn = kl.BatchNorm2d(3) if len(shape) == 4 else kl.BatchNorm1d(3)
    before = copy.deepcopy(bn.state_dict())
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        bn(torch.randn(shape))
    for name, value in bn.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"
    with pytest.raises(ValueError, match="at least 2 values per channel"):
        kl.batch_norm(torch.randn(shape), None, None, training=True)
    y = bn.eval()(torch.randn(shape))  # inference needs no batch statistics
    assert y.shape == shape


def test_batch_norm_checks_arguments():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="needs running_mean and running_var"):
        kl.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="needs num_batches_tracked"):
        kl.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match="weight.shape"):
        kl.batch_norm(x, None, None, torch.ones(4), training=True)


def _op_info_samples():
    from torch.testing._internal.common_methods_invocations import op_db
    op = next(o for o in op_db if o.name == "nn.functional.batch_norm" and o.variant_test_name == "")
    return op, list(op.sample_inputs("cpu", torch.float32, requires_grad=True))


def _detached(args):
    return [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]


def test_op_info_samples_of_batch_norm(keel_calls):
    """PyTorch's OpInfo samples of nn.functional.batch_norm, float32, through keel.torch_layers'
    batch_norm: y, the running statistics and the gradients within torch's default float32
    tolerances. Training on 0 values per channel is refused (keel's rule); samples keel does not
    take (momentum outside [0, 1], 1-dim input) go through torch's computation."""
    pytest.importorskip("expecttest")
    op, samples = _op_info_samples()
    refused = 0
    for s in samples:
        mine_args, their_args = _detached(s.args), _detached(s.args)
        for a in (mine_args, their_args):
            for i in (2, 3):
                if i < len(a) and a[i] is not None:
                    a[i].requires_grad_()
        x_mine, x_theirs = s.input.detach().clone().requires_grad_(), s.input.detach().clone().requires_grad_()
        if s.kwargs.get("training") and x_mine.shape[0] * math.prod(x_mine.shape[2:]) < 2:
            with pytest.raises(ValueError):
                _quiet(kl.batch_norm, x_mine, *mine_args, **s.kwargs)
            refused += 1
            continue
        y = _quiet(kl.batch_norm, x_mine, *mine_args, **s.kwargs)
        y_ref = op.op(x_theirs, *their_args, **s.kwargs)
        torch.testing.assert_close(y, y_ref)
        for a, b in zip(mine_args, their_args):
            if isinstance(a, torch.Tensor):
                torch.testing.assert_close(a, b)  # running statistics updated alike
        if y.numel():
            dy = torch.randn_like(y)
            mine = torch.autograd.grad(y, [x_mine] + [a for a in mine_args[2:] if a is not None], dy)
            theirs = torch.autograd.grad(y_ref, [x_theirs] + [a for a in their_args[2:] if a is not None], dy)
            for a, b in zip(mine, theirs):
                torch.testing.assert_close(a, b)
    through_keel = len(_named(keel_calls, "batch_norm"))
    assert refused == 1
    assert through_keel >= 9 and through_keel > (len(samples) - refused) * 3 // 4, (through_keel, len(samples))


# === LayerScale ================================================================================

LS_CASES = [((7, 16), torch.float32, torch.float32), ((2, 3, 33), torch.float32, torch.float32),
            ((2, 3, 4, 5), torch.float32, torch.float32), ((5, 17), torch.bfloat16, torch.bfloat16),
            ((5, 17), torch.float16, torch.float16), ((5, 17), torch.bfloat16, torch.float32)]


def _ls_inputs(shape, gamma_dims, dtype, gamma_dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, f = (torch.randn(shape, generator=g).to(dtype) for _ in range(2))
    gamma = (0.3 * torch.randn(shape[len(shape) - gamma_dims:], generator=g)).to(gamma_dtype)
    return x, f, gamma


@pytest.mark.parametrize("shape,dtype,gamma_dtype", LS_CASES)
def test_layer_scale_matches_float64(shape, dtype, gamma_dtype):
    x, f, gamma = _ls_inputs(shape, 2 if len(shape) == 4 else 1, dtype, gamma_dtype)
    mine = [t.clone().requires_grad_() for t in (x, f, gamma)]
    ref = [t.double().requires_grad_() for t in (x, f, gamma)]
    h, h_ref = kl.layer_scale(*mine), ref[0] + ref[2] * ref[1]
    assert h.dtype == torch.promote_types(dtype, gamma_dtype)
    dh = torch.randn(shape).to(h.dtype)
    h.backward(dh), h_ref.backward(dh.double())
    _close(h, h_ref, RTOL[h.dtype])
    for t, r in zip(mine, ref):
        assert t.grad.dtype == t.dtype
        _close(t.grad, r.grad, RTOL[t.dtype])


def test_layer_scale_module_timm_and_fused():
    ls = kl.LayerScale(6, init_values=0.1)
    assert list(ls.state_dict()) == ["gamma"] and torch.equal(ls.gamma, torch.full((6,), 0.1))
    x, r = torch.randn(3, 6), torch.randn(3, 6)
    torch.testing.assert_close(ls(x), x * ls.gamma, rtol=0, atol=0)  # timm's single input
    torch.testing.assert_close(ls(x, r), r + ls.gamma * x, rtol=0, atol=0)  # the fused residual update
    inplace = kl.LayerScale(6, init_values=0.1, inplace=True)
    y = x.clone()
    assert inplace(y) is y and torch.equal(y, x * ls.gamma)


def test_layer_scale_skips_gradients_not_needed(keel_calls):
    x, f, gamma = _ls_inputs((4, 8), 1, torch.float32, torch.float32)
    f.requires_grad_()
    kl.layer_scale(x, f, gamma).sum().backward()
    (bwd,) = _named(keel_calls, "layer_scale_backward")
    assert bwd.mask == (True, False), "no dgamma computed for a frozen gamma"
    assert torch.equal(f.grad, gamma.expand(4, 8))


# === DyT =======================================================================================

DYT_CASES = [((4, 7), (7,), torch.float32), ((2, 3, 33), (33,), torch.float32), ((2, 3, 4, 5), (4, 5), torch.float32),
             ((3, 40), (40,), torch.bfloat16), ((3, 40), (40,), torch.float16)]


def _dyt_inputs(shape, dims, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (2 * torch.randn(shape, generator=g)).to(dtype)
    alpha = torch.tensor([0.7]).to(dtype)
    weight = (1 + 0.5 * torch.randn(dims, generator=g)).to(dtype)
    bias = (0.5 * torch.randn(dims, generator=g)).to(dtype)
    return x, alpha, weight, bias


@pytest.mark.parametrize("shape,dims,dtype", DYT_CASES)
def test_dyt_matches_float64(shape, dims, dtype):
    x, alpha, weight, bias = _dyt_inputs(shape, dims, dtype)
    mine = [t.clone().requires_grad_() for t in (x, alpha, weight, bias)]
    ref = [t.double().requires_grad_() for t in (x, alpha, weight, bias)]
    y = kl.dyt(mine[0], dims, *mine[1:])
    y_ref = ref[2] * torch.tanh(ref[1] * ref[0]) + ref[3]
    assert y.dtype == dtype
    dy = torch.randn(shape).to(dtype)
    y.backward(dy), y_ref.backward(dy.double())
    _close(y, y_ref, RTOL[dtype])
    for t, r in zip(mine, ref):
        assert t.grad.dtype == dtype and t.grad.shape == t.shape
        _close(t.grad, r.grad, RTOL[dtype])


class _ReferenceDynamicTanh(torch.nn.Module):
    """The DyT paper's reference module (channels last)."""

    def __init__(self, normalized_shape, alpha_init_value=0.5):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(1) * alpha_init_value)
        self.weight = torch.nn.Parameter(torch.ones(normalized_shape))
        self.bias = torch.nn.Parameter(torch.zeros(normalized_shape))

    def forward(self, x):
        return torch.tanh(self.alpha * x) * self.weight + self.bias


def test_dyt_module_matches_the_reference_module():
    ref = _ReferenceDynamicTanh(12, alpha_init_value=0.8)
    mine = kl.DyT(12, alpha_init_value=0.8)
    assert {k: v.shape for k, v in mine.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 12)
    torch.testing.assert_close(mine(x), ref(x), rtol=4 * F32_EPS, atol=4 * F32_EPS)


def _second_order_case(which, dtype):
    """(function of (x, params...), [x, params...]) for the gradients-of-gradients tests."""
    g = torch.Generator().manual_seed(5)

    def rand(*shape, loc=0.0):
        return (loc + torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()

    if which == "batch_norm":
        fn = lambda x, w, b: kl.batch_norm(x, None, None, w, b, training=True)  # noqa: E731
        return fn, [rand(6, 3), rand(3, loc=1), rand(3)]
    if which == "layer_scale":
        return kl.layer_scale, [rand(4, 3), rand(4, 3), rand(3)]
    return (lambda x, a, w, b: kl.dyt(x, 3, a, w, b)), [rand(4, 3), rand(1, loc=0.5), rand(3, loc=1), rand(3)]


def _hessian_vector(fn, inputs, seed=6):
    """d/d(inputs) of sum(v * d(sum(fn(inputs)^3))/d(inputs)) for a fixed random v."""
    out = fn(*inputs).pow(3).sum()
    firsts = torch.autograd.grad(out, inputs, create_graph=True)
    g = torch.Generator().manual_seed(seed)
    dot = sum((torch.randn(f.shape, generator=g, dtype=torch.float64).to(f.dtype) * f).sum() for f in firsts)
    return torch.autograd.grad(dot, inputs)


@pytest.mark.parametrize("which", ["batch_norm", "layer_scale", "dyt"])
def test_gradients_of_gradients(which):
    """create_graph=True: the first derivatives are keel's (bitwise those of a plain backward),
    nothing falls back; the second derivatives of the float32 path match float64's, and
    gradgradcheck passes."""
    fn, inputs = _second_order_case(which, torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mine = _hessian_vector(fn, inputs)
        plain = torch.autograd.grad(fn(*inputs).pow(3).sum(), inputs)
        graphed = torch.autograd.grad(fn(*inputs).pow(3).sum(), inputs, create_graph=True)
    assert not [w for w in caught if issubclass(w.category, kl.KeelFallbackWarning)]
    for a, b in zip(plain, graphed):
        assert torch.equal(a, b) and b.requires_grad
    ref_fn, ref_inputs = _second_order_case(which, torch.float64)
    for a, b in zip(mine, _quiet(_hessian_vector, ref_fn, ref_inputs)):
        _close(a, b, 1e-4)
    assert _quiet(torch.autograd.gradgradcheck, ref_fn, ref_inputs)


# === fallbacks =================================================================================

def _fallback_warnings(fn):
    """The KeelFallbackWarning messages fn() raises (every warning recorded)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if issubclass(w.category, kl.KeelFallbackWarning)]


def test_float64_falls_back_and_says_so_once():
    bn, dyt, ls = kl.BatchNorm2d(3).double(), kl.DyT(3).double(), kl.LayerScale(3, 0.1).double()
    ref = torch.nn.BatchNorm2d(3).double()

    def run_twice():
        for _ in range(2):
            x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
            y = bn(x)
            torch.testing.assert_close(y, ref(x))
            z = y.permute(0, 2, 3, 1)
            ls(dyt(z), z).sum().backward()

    said = _fallback_warnings(run_twice)
    ops = sorted(m.split(": ")[0] for m in said)
    assert ops == ["keel.torch." + op for op in ("batch_norm", "dyt", "layer_scale")], said
    assert all("dtype float64" in m for m in said)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    assert bn.num_batches_tracked.item() == ref.num_batches_tracked.item() == 2


def test_momentum_outside_0_1_falls_back():
    x, mine, theirs = torch.randn(4, 3), torch.zeros(3), torch.zeros(3)
    said = _fallback_warnings(lambda: kl.batch_norm(x, mine, torch.ones(3), training=True, momentum=-1.0))
    assert len(said) == 1 and "momentum outside [0, 1]" in said[0]
    F.batch_norm(x, theirs, torch.ones(3), training=True, momentum=-1.0)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("op", ["batch_norm", "layer_scale", "dyt"])
def test_gradcheck_float64(op):
    """The autograd formulas and backward operators, by finite differences (float64: the
    fallback's formulas; keel's own float32 gradients are compared with float64 above)."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)

    if op == "batch_norm":
        args = (rand(3, 2, 2), rand(2), rand(2))
        fns = [lambda x, w, b: kl.batch_norm(x, None, None, w, b, training=True),
               lambda x, w, b: kl.batch_norm(x, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                                             w, b, training=False)]
    elif op == "layer_scale":
        args, fns = (rand(3, 4), rand(3, 4), rand(4)), [kl.layer_scale]
    else:
        args, fns = (rand(3, 4), rand(1), rand(4), rand(4)), [lambda x, a, w, b: kl.dyt(x, 4, a, w, b)]
    for fn in fns:
        assert _quiet(torch.autograd.gradcheck, fn, args)


# === opcheck ===================================================================================

def _opcheck_samples():
    x = torch.randn(3, 4, 2, 2, requires_grad=True)
    w, b = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    stats = lambda: (torch.zeros(4), torch.ones(4), torch.tensor(0))  # noqa: E731
    f, gamma = torch.randn(3, 5, requires_grad=True), torch.randn(5, requires_grad=True)
    alpha = torch.tensor([0.7], requires_grad=True)
    return [
        ("batch_norm train", K.batch_norm.default, (x, w, b, *stats(), True, 0.1, 1e-5)),
        ("batch_norm channels_last, momentum None", K.batch_norm.default,
         (x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(), w, b, *stats(), True, None, 1e-5)),
        ("batch_norm eval", K.batch_norm.default, (x, w, b, *stats()[:2], None, False, 0.1, 1e-5)),
        ("batch_norm no affine, no stats", K.batch_norm.default, (x, None, None, None, None, None, True, 0.1, 1e-5)),
        ("batch_norm_backward", K.batch_norm_backward.default,
         (torch.randn(3, 4, 2, 2), x.detach(), w.detach(), torch.zeros(4), torch.ones(4), True, 1e-5,
          [True, True, False])),
        ("layer_scale", K.layer_scale.default, (torch.randn(3, 5, requires_grad=True), f, gamma)),
        ("layer_scale bf16", K.layer_scale.default,
         (torch.randn(3, 5).bfloat16().requires_grad_(), f.detach().bfloat16().requires_grad_(), gamma)),
        ("layer_scale_backward", K.layer_scale_backward.default, (torch.randn(3, 5), f.detach(), gamma.detach(),
                                                                 [True, False])),
        ("dyt", K.dyt.default, (torch.randn(3, 5, requires_grad=True), [5], alpha, gamma, torch.randn(5))),
        ("dyt f16 no affine", K.dyt.default,
         (torch.randn(2, 3, 5).half().requires_grad_(), [3, 5], alpha, None, None)),
        ("dyt_backward", K.dyt_backward.default, (torch.randn(3, 5), torch.randn(3, 5), [5], alpha.detach(),
                                                 gamma.detach(), [True, True, True, False])),
    ]


@pytest.mark.parametrize("name,op,args", _opcheck_samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


# === torch.compile, torch.export ===============================================================

class _Block(torch.nn.Module):
    """BatchNorm2d on channels_last input, then DyT and LayerScale on its rows of C."""

    def __init__(self, C=4):
        super().__init__()
        self.bn, self.dyt, self.ls = kl.BatchNorm2d(C), kl.DyT(C), kl.LayerScale(C, 0.1)

    def forward(self, x):
        z = self.bn(x).permute(0, 2, 3, 1)
        return self.ls(self.dyt(z), z)


def _block_input(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 3, 5, generator=g).contiguous(memory_format=torch.channels_last)


def _train_step(fn, model, x):
    """y = fn(x), x's gradient, and the gradients of model's parameters and its buffers after
    one step (fn: model or a compiled model)."""
    x = x.clone().requires_grad_()
    y = fn(x)
    y.pow(2).sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())


def _assert_same_step(a, b):
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    for d_a, d_b in zip(a[2:], b[2:]):
        assert d_a.keys() == d_b.keys()
        for k in d_a:
            torch.testing.assert_close(d_a[k], d_b[k])


def test_compile_fullgraph_holds_keel_ops():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    eager, model = _Block(), _Block()
    model.load_state_dict(eager.state_dict())
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    x = _block_input()
    _assert_same_step(_train_step(compiled, model, x), _train_step(eager, eager, x))
    forward, backward = graphs
    for name in ("keel.batch_norm.default", "keel.dyt.default", "keel.layer_scale.default"):
        assert name in forward
    for name in ("keel.batch_norm_backward.default", "keel.dyt_backward.default", "keel.layer_scale_backward.default"):
        assert name in backward
    model.eval(), eager.eval()
    torch.testing.assert_close(compiled(x), eager(x))


def test_compile_inductor_matches_eager():
    torch._dynamo.reset()
    eager, model = _Block(), _Block()
    model.load_state_dict(eager.state_dict())
    x = _block_input(1)
    _assert_same_step(_train_step(torch.compile(model, fullgraph=True), model, x), _train_step(eager, eager, x))


@pytest.mark.parametrize("training", [True, False])
def test_export_names_the_ops(training):
    model = _Block().train(training)
    x = _block_input(2)
    ep = torch.export.export(copy.deepcopy(model), (x,))
    for name in ("keel.batch_norm.default", "keel.dyt.default", "keel.layer_scale.default"):
        assert name in ep.graph_module.code
    decomposed = ep.run_decompositions()
    assert "keel.batch_norm.default" in decomposed.graph_module.code
    # the schema marks the running statistics as mutated: in inference they are written back unchanged
    mutated = set(decomposed.graph_signature.buffers_to_mutate.values())
    assert mutated == {"bn.running_mean", "bn.running_var"} | ({"bn.num_batches_tracked"} if training else set())
    exported = decomposed.module()
    torch.testing.assert_close(exported(x), model(x))
    for name, value in model.named_buffers():
        torch.testing.assert_close(exported.get_buffer(name), value)


# === torch.func ================================================================================

def _modules_and_calls():
    """(module, its inputs) for each of keel's modules."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 5, generator=g)
    return [(kl.BatchNorm1d(5), (x,)), (kl.DyT(5), (x,)), (kl.LayerScale(5, 0.3), (x, torch.randn(6, 5, generator=g)))]


@pytest.mark.parametrize("index", range(3), ids=["BatchNorm1d", "DyT", "LayerScale"])
def test_func_grad_matches_autograd(index):
    from torch.func import functional_call, grad
    module, inputs = _modules_and_calls()[index]
    twin = copy.deepcopy(module)
    params = {n: p.detach() for n, p in module.named_parameters()}
    grads = grad(lambda p: functional_call(module, p, inputs).pow(3).sum())(params)
    twin(*inputs).pow(3).sum().backward()
    for n, p in twin.named_parameters():
        torch.testing.assert_close(grads[n], p.grad)


def test_func_vmap_of_grad_gives_per_sample_gradients():
    from torch.func import functional_call, grad, vmap
    dyt, ls = kl.DyT(5), kl.LayerScale(5, 0.3)
    params = {"dyt." + n: p.detach() for n, p in dyt.named_parameters()}
    params["ls.gamma"] = ls.gamma.detach()

    def loss(p, x):
        z = functional_call(dyt, {k[4:]: v for k, v in p.items() if k.startswith("dyt.")}, (x,))
        return functional_call(ls, {"gamma": p["ls.gamma"]}, (z, x)).pow(2).sum()

    xs = torch.randn(3, 4, 5)
    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(3):
        one = grad(loss)(params, xs[i])
        for k in params:
            torch.testing.assert_close(per_sample[k][i], one[k])
    torch.testing.assert_close(vmap(dyt)(xs), dyt(xs))


def test_func_vmap_of_batch_norm():
    from torch.func import functional_call, grad, vmap
    xs = torch.randn(3, 4, 5)
    free = kl.BatchNorm1d(5, track_running_stats=False)  # as torch.func.replace_all_batch_norm_modules_ leaves it
    torch.testing.assert_close(vmap(free)(xs), torch.stack([free(x) for x in xs]))
    params = {n: p.detach() for n, p in free.named_parameters()}

    def loss(p, x):
        return functional_call(free, p, (x,)).pow(3).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(3):
        for k, g in grad(loss)(params, xs[i]).items():
            torch.testing.assert_close(per_sample[k][i], g)
    frozen = kl.BatchNorm1d(5).eval()
    torch.testing.assert_close(vmap(frozen)(xs), frozen(xs.reshape(12, 5)).reshape(3, 4, 5))
    with pytest.raises(NotImplementedError, match="running statistics"):
        vmap(kl.BatchNorm1d(5))(xs)


@pytest.mark.parametrize("which", ["batch_norm", "layer_scale", "dyt"])
def test_func_gradients_of_gradients(which):
    """Nested torch.func.grad on the float32 (keel) path against float64 autograd."""
    from torch.func import grad
    fn, inputs = _second_order_case(which, torch.float32)
    x, params = inputs[0].detach(), [p.detach() for p in inputs[1:]]

    def first(x):
        return grad(lambda x: fn(x, *params).pow(3).sum())(x)

    mine = _quiet(grad(lambda x: first(x).pow(2).sum()), x)
    xr, params64 = x.double().requires_grad_(), [p.double() for p in params]
    (g1,) = torch.autograd.grad(_quiet(fn, xr, *params64).pow(3).sum(), xr, create_graph=True)
    (ref,) = _quiet(torch.autograd.grad, g1.pow(2).sum(), xr)
    _close(mine, ref, 1e-4)
