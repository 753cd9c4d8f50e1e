"""keel.torch against torch: values and gradients (vs torch in float64), the modules' API,
frozen parameters, no_grad, fallbacks, patch(), and a small transformer trained both ways."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="PyTorch is not installed: keel.torch tests need it (pip install torch)")

import keel.torch as kt  # noqa: E402
import reference as ref  # noqa: E402

F32_EPS = float(np.finfo(np.float32).eps)
FWD_RTOL, BWD_RTOL = 4 * F32_EPS, 16 * F32_EPS  # relative to the terms' magnitude (reference.py)


@st.composite
def shapes(draw):
    lead = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    dims = tuple(draw(st.lists(st.integers(1, 40), min_size=1, max_size=2)))
    offset = draw(st.sampled_from([0.0, 3.0, -1e3]))
    affine = draw(st.sampled_from(["weight+bias", "weight", "none"]))
    return lead, dims, offset, affine, draw(st.integers(0, 2**31 - 1))


def _make(kind, dims, affine, seed):
    """(keel module, torch module) with the same random parameters."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(elementwise_affine=affine != "none")
    if kind == "layer_norm":
        kw["bias"] = affine == "weight+bias"
        mine, theirs = kt.LayerNorm(dims, **kw), torch.nn.LayerNorm(dims, **kw)
    else:
        # eps None is float32's epsilon for keel; in float64 torch would take float64's
        mine, theirs = kt.RMSNorm(dims, **kw), torch.nn.RMSNorm(dims, eps=F32_EPS, **kw)
    with torch.no_grad():
        for p in mine.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    theirs.load_state_dict(mine.state_dict())
    return mine, theirs


def _grads(module, x, dy):
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.backward(dy)
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
@given(shapes())
def test_modules_match_torch_float64(kind, shape):
    lead, dims, offset, affine, seed = shape
    mine, theirs = _make(kind, dims, affine, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = offset + torch.randn(lead + dims, generator=g)
    dy = torch.randn(lead + dims, generator=g)
    y, dx, dp = _grads(mine, x, dy)
    y64, dx64, dp64 = _grads(theirs.double(), x.double(), dy.double())
    # magnitudes of the terms (the reference's formula on absolute values) bound the error
    w = mine.weight.detach().numpy() if mine.weight is not None else None
    b = getattr(mine, "bias", None)
    b = b.detach().numpy() if b is not None else None
    xn, dyn = x.numpy(), dy.numpy()
    if kind == "layer_norm":
        fwd, bwd = ref.layer_norm(xn, dims, w, b), ref.layer_norm_backward(dyn, xn, dims, w)
    else:
        fwd, bwd = ref.rms_norm(xn, dims, w), ref.rms_norm_backward(dyn, xn, dims, w)
    # torch's float64 result is itself off by ~1e-16 * |x| / std: up to ~1e-10 on a constant
    # row at offset 1e3 (rstd = 1/sqrt(eps)); 1e-9 absolute covers that, far below float32's ulps
    ref.assert_close(y.numpy(), (y64.numpy(), fwd["y"][1]), FWD_RTOL, "y", floor=1e-9)
    ref.assert_close(dx.numpy(), (dx64.numpy(), bwd["dx"][1]), BWD_RTOL, "dx", floor=1e-9)
    for name, grad in dp.items():
        ref.assert_close(grad.numpy(), (dp64[name].numpy(), bwd["d" + name][1]), BWD_RTOL, "d" + name, floor=1e-9)


def test_large_offset_beats_torch_float32():
    # x = 1e4 + noise: keel's statistics are exact; torch's float32 kernel loses digits.
    g = torch.Generator().manual_seed(0)
    x = 1e4 + torch.randn(64, 512, generator=g)
    y = kt.layer_norm(x, (512,))
    y64 = torch.nn.functional.layer_norm(x.double(), (512,))
    y32 = torch.nn.functional.layer_norm(x, (512,))
    keel_err = (y.double() - y64).abs().max().item()
    torch_err = (y32.double() - y64).abs().max().item()
    assert keel_err <= 4 * F32_EPS * y64.abs().max().item()
    assert keel_err <= torch_err + 1e-12


def test_constant_rows_give_bias():
    m = kt.LayerNorm(6)
    with torch.no_grad():
        m.bias.copy_(torch.arange(6.0))
    y = m(torch.full((3, 6), -2.5, requires_grad=True))
    assert torch.equal(y.detach(), torch.arange(6.0).expand(3, 6))
    y.sum().backward()  # finite gradients on a constant row (rstd = 1/sqrt(eps))
    assert torch.isfinite(m.weight.grad).all() and torch.isfinite(m.bias.grad).all()


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
def test_gradcheck_float32(kind):
    # torch.autograd.gradcheck on keel's float32 path: finite differences of the forward against
    # the backward's Jacobian; float32 allows differences of ~1e-3 with a step of 1e-2.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 5, generator=g, requires_grad=True)
    w = torch.randn(5, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)
    if kind == "layer_norm":
        fn, inputs = (lambda x, w, b: kt.layer_norm(x, 5, w, b)), (x, w, b)
    else:
        fn, inputs = (lambda x, w: kt.rms_norm(x, 5, w)), (x, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not a double precision" inputs
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-2, atol=2e-3, rtol=2e-2)


def test_module_api_matches_torch():
    for args, kw in [((8,), {}), (((4, 8),), {"eps": 1e-3}), ((8,), {"elementwise_affine": False}),
                     ((8,), {"bias": False}), ((8,), {"dtype": torch.float64})]:
        mine, theirs = kt.LayerNorm(*args, **kw), torch.nn.LayerNorm(*args, **kw)
        assert isinstance(mine, torch.nn.LayerNorm)
        assert repr(mine) == repr(theirs)
        assert {k: v.dtype for k, v in mine.state_dict().items()} == {k: v.dtype for k, v in theirs.state_dict().items()}
        mine.load_state_dict(theirs.state_dict())
    for kw in [{}, {"eps": 1e-6}, {"elementwise_affine": False}]:
        mine, theirs = kt.RMSNorm(16, **kw), torch.nn.RMSNorm(16, **kw)
        assert repr(mine) == repr(theirs)
        assert mine.state_dict().keys() == theirs.state_dict().keys()
    m = kt.LayerNorm(8, elementwise_affine=False)
    x = torch.randn(2, 8)
    torch.testing.assert_close(m(x), torch.nn.functional.layer_norm(x, (8,)))


def _keel_ops(calls):
    """The keel operators run, as ("forward", op) and ("backward", op, *output_mask)."""
    out = []
    for c in calls:
        if c.name.endswith("_backward"):
            out.append(("backward", c.name[:-len("_backward")]) + c.mask)
        else:
            out.append(("forward", c.name))
    return out


def test_frozen_parameters_skip_their_gradients(keel_calls):
    calls = keel_calls
    m = kt.LayerNorm(8)
    m.weight.requires_grad_(False)
    x = torch.randn(4, 8, requires_grad=True)
    m(x).pow(2).sum().backward()
    assert _keel_ops(calls)[-1] == ("backward", "layer_norm", True, False, True)
    assert m.weight.grad is None and m.bias.grad is not None and x.grad is not None
    m.requires_grad_(False)
    x.grad = None
    m(x).pow(2).sum().backward()
    assert _keel_ops(calls)[-1] == ("backward", "layer_norm", True, False, False)
    r = kt.RMSNorm(8)
    r(torch.randn(4, 8)).sum().backward()  # input needs no gradient: only dweight
    assert _keel_ops(calls)[-1] == ("backward", "rms_norm", False, True) and r.weight.grad is not None


def test_no_grad_and_inference_mode(keel_calls):
    calls = keel_calls
    m = kt.LayerNorm(8)
    x = torch.randn(3, 8, requires_grad=True)
    with_grad = m(x)
    with torch.no_grad():
        y = m(x)
    assert y.grad_fn is None and not y.requires_grad and torch.equal(y, with_grad.detach())
    assert _keel_ops(calls)[-1] == ("forward", "layer_norm")
    with torch.inference_mode():
        assert torch.equal(m(x), y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_goes_through_keel(dtype, keel_calls):
    """bf16/f16 CPU tensors are computed by keel (float32 inside, one rounding at the output): the
    output and the gradients are within 1 ulp of the dtype of a float64 computation on the same
    bf16/f16 values, and keel is really called."""
    calls = keel_calls
    torch.manual_seed(0)
    for cls, ref in ((kt.LayerNorm, torch.nn.LayerNorm), (kt.RMSNorm, torch.nn.RMSNorm)):
        m = cls(64, dtype=dtype)
        with torch.no_grad():
            m.weight.copy_(torch.randn(64) * 0.5 + 1)
        x = (torch.randn(5, 7, 64) * 3 + 20).to(dtype).requires_grad_(True)
        y = m(x)
        assert y.dtype is dtype and calls, "keel was not called"
        r = ref(64, dtype=torch.float64)
        with torch.no_grad():
            r.weight.copy_(m.weight.double())
            if getattr(m, "bias", None) is not None:
                r.bias.copy_(m.bias.double())
        x64 = x.detach().double().requires_grad_(True)
        y64 = r(x64)
        ulp = torch.finfo(dtype).eps  # spacing at 1; scale by the magnitude of each value
        scale = torch.exp2(torch.floor(torch.log2(y64.detach().abs().clamp_min(1e-3))))
        assert ((y.double() - y64).abs() <= ulp * scale).all()
        dy = torch.randn_like(y64)
        y.backward(dy.to(dtype))
        y64.backward(dy.to(dtype).double())
        assert x.grad.dtype is dtype and m.weight.grad.dtype is dtype
        gscale = torch.exp2(torch.floor(torch.log2(x64.grad.abs().clamp_min(1e-3))))
        assert ((x.grad.double() - x64.grad).abs() <= ulp * gscale + 1e-6 * x64.grad.abs().max()).all()
        wscale = torch.exp2(torch.floor(torch.log2(r.weight.grad.abs().clamp_min(1e-3))))
        # a column sum that cancels to far below the others carries float32's absolute error
        assert ((m.weight.grad.double() - r.weight.grad).abs()
                <= ulp * wscale + 1e-6 * r.weight.grad.abs().max()).all()
        calls.clear()


@pytest.mark.parametrize("dtype", [torch.float64])
def test_other_dtypes_fall_back_to_torch(dtype, keel_calls):
    calls = keel_calls
    m, r = kt.LayerNorm(8, dtype=dtype), torch.nn.LayerNorm(8, dtype=dtype)
    x = torch.randn(3, 8, dtype=dtype, requires_grad=True)
    with pytest.warns(kt.KeelFallbackWarning, match="dtype torch.float64 .* runs torch's own computation"):
        y = m(x)
    assert torch.equal(y, r(x)) and not calls
    y.sum().backward()
    rm, rr = kt.RMSNorm(8, dtype=dtype), torch.nn.RMSNorm(8, dtype=dtype)
    assert torch.equal(rm(x), rr(x)) and not calls
    assert any(op == "layer_norm" and why.startswith("dtype torch.float64") for op, why in kt.fallbacks())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the second call is quiet
        m(x)


def test_meta_device_falls_back():
    m = kt.LayerNorm(8, device="meta")
    assert m(torch.empty(2, 8, device="meta")).device.type == "meta"
    assert any(op == "layer_norm" and why.startswith("device meta") for op, why in kt.fallbacks())


def test_func_transforms_and_fake_tensors_keep_keel(keel_calls):
    """torch.func's vmap and grad, and fake tensors, run keel's operators (not torch's)."""
    calls = keel_calls
    m = kt.LayerNorm(8)
    x = torch.randn(3, 4, 8)
    torch.testing.assert_close(torch.func.vmap(m)(x), m(x))
    assert calls and all(c.name == "layer_norm" for c in calls)
    calls.clear()
    g = torch.func.grad(lambda x: m(x).pow(2).sum())(x)
    ref = torch.func.grad(lambda x: torch.nn.functional.layer_norm(x, (8,), m.weight, m.bias).pow(2).sum())(x)
    torch.testing.assert_close(g, ref)
    assert [c.name for c in calls] == ["layer_norm", "layer_norm_backward"]
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode(allow_non_fake_inputs=True):
        y = m(torch.empty(2, 8))
        assert y.shape == (2, 8) and y.dtype is torch.float32


def test_strided_tensors_and_zero_rows():
    m = kt.LayerNorm(16)
    base = torch.randn(6, 5, 32)
    for x in (base[:, :, :16], base[::2, :, 16:], base[:, :, :16].transpose(0, 1), base[:, :, ::2]):
        assert torch.equal(m(x), m(x.contiguous()))
    x = base[:, :, :16].clone().requires_grad_(True)
    view = x.transpose(0, 1)
    m(view).sum().backward()  # dy is an expanded (stride 0) tensor: copied
    x2 = x.detach().clone().requires_grad_(True)
    m(x2.transpose(0, 1).contiguous()).sum().backward()
    assert torch.equal(x.grad, x2.grad)
    z = torch.zeros(0, 16, requires_grad=True)
    m.zero_grad()
    m(z).sum().backward()
    assert z.grad.shape == (0, 16) and torch.equal(m.weight.grad, torch.zeros(16))


def test_misaligned_tensor_is_copied():
    raw = np.zeros(4 * 16 + 1, np.uint8)
    a = raw[1:].view(np.float32)
    a[:] = np.arange(16)
    t = torch.from_numpy(a.reshape(2, 8))
    assert t.data_ptr() % 4 != 0
    assert torch.equal(kt.layer_norm(t, (8,)), kt.layer_norm(t.clone(), (8,)))


def test_errors_carry_keels_message():
    m = kt.LayerNorm(8)
    with pytest.raises(ValueError, match=r"normalized_shape \(8,\) does not match the trailing dimensions"):
        m(torch.randn(2, 7))
    bad = kt.LayerNorm(8, eps=-1.0)
    with pytest.raises(ValueError, match=r"keel_layernorm_fwd: eps \(-1\) must be finite and >= 0"):
        bad(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"keel_rmsnorm_fwd: eps"):
        kt.rms_norm(torch.randn(2, 8), 8, eps=float("nan"))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm(8)
        self.blocks = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8, bias=False),
                                          torch.nn.RMSNorm(8), torch.nn.ReLU())
        self.other = torch.nn.GroupNorm(2, 8)


def test_patch_swaps_in_place():
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(4, 8)
    want = net.blocks(net.norm(x))
    params = dict(net.named_parameters())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert kt.patch(net) == 3
    # in place: the modules stay torch's (hooks, isinstance, state_dict), their forward is keel's
    assert type(net.norm) is torch.nn.LayerNorm and type(net.blocks[2]) is torch.nn.RMSNorm
    assert all("forward" in m.__dict__ for m in (net.norm, net.blocks[1], net.blocks[2]))
    assert "forward" not in net.other.__dict__ and type(net.other) is torch.nn.GroupNorm
    assert net.blocks[1].bias is None
    for name, p in net.named_parameters():  # the same Parameter objects: optimizers stay valid
        assert p is params[name]
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    torch.testing.assert_close(net.blocks(net.norm(x)), want, rtol=1e-5, atol=1e-5)
    assert kt.patch(net) == 0  # already patched


def _train(norm_first, use_keel, dtype=torch.float32, steps=20):
    """Losses of a 2-layer transformer encoder (d_model 64) trained on a fixed random task."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0,
                                             batch_first=True, norm_first=norm_first)
    model = torch.nn.Sequential(
        torch.nn.TransformerEncoder(layer, num_layers=2, norm=torch.nn.LayerNorm(64),
                                    enable_nested_tensor=False),
        torch.nn.Linear(64, 1)).to(dtype)
    if use_keel:
        assert kt.patch(model) == 5  # 2 per layer, and the final norm
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, 64, generator=g).to(dtype)  # the same numbers in either dtype
    target = torch.randn(8, 16, 1, generator=g).to(dtype)
    losses = []
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("norm_first", [True, False])
def test_training_matches_torch(norm_first):
    # Same seed, same initial weights, same data, no dropout: the runs differ only by float32
    # rounding inside the 5 norms (a few ulps per value; keel's statistics are exact where
    # torch's are rounded). Through 20 SGD steps that stays at the level of float32 rounding of
    # the whole network: measured <= 2.5e-7 relative on the losses, and torch float32 is itself
    # ~2.5e-7 from a float64 run. rtol 1e-5 leaves a 40x margin over that, yet catches a wrong
    # gradient: dweight or dbias off by 1% moves the losses by 3.5e-5 to 2e-4, dx off by 0.1%
    # by 8e-4 (measured). Adam would hide the 1% errors (it normalizes each gradient's scale).
    theirs = _train(norm_first, use_keel=False)
    mine = _train(norm_first, use_keel=True)
    exact = _train(norm_first, use_keel=False, dtype=torch.float64)
    assert theirs[-1] < 0.5 * theirs[0]  # it learns
    np.testing.assert_allclose(mine, theirs, rtol=1e-5)
    np.testing.assert_allclose(mine, exact, rtol=1e-5)
