"""keel.torch.patch: the norms of current transformer families (tiny random models of
transformers, no downloads) recognised by what they compute and patched in place: all of them,
logits and gradients as before the patch to float32 rounding, keel computing every norm call,
hooks, state_dict and Parameter objects kept. Norm forms written here (LayerNorm with or without
weight and bias, RMSNorm with weight or (1 + weight), rounding at different points) in each dtype
mix: the output dtype is the original's. Norm-looking modules that compute something else are
left alone with one warning; the probe leaves parameters and the random state alone; unpatch;
deepcopy and pickling; torch.compile."""

import copy
import io
import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the transformers models are built from configs: nothing to fetch
torch = pytest.importorskip("torch", reason="PyTorch is not installed: keel.torch tests need it (pip install torch)")

import keel.torch as kt  # noqa: E402
from keel._patch import patch, unpatch  # noqa: E402

nn = torch.nn


# --- norm forms, written out as models write them ---------------------------------------------

class WeightAfterCastRMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to x's dtype, then scaled by the weight."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


class UnitOffsetRMSNorm(nn.Module):
    """RMSNorm scaled by (1 + weight), the weight starting at zero; computed in float32 and
    rounded once to x's dtype."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).type_as(x)


class WeightDtypeRMSNorm(nn.Module):
    """RMSNorm whose result takes a half weight's dtype (float32 for a float32 weight)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        h = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            h = h.to(self.weight.dtype)
        return self.weight * h


class PlainLayerNorm(nn.Module):
    """LayerNorm without weight or bias, eps hardcoded (not the default 1e-5), computed in float32."""

    def __init__(self, dim):
        super().__init__()
        self.normalized_shape = (dim,)

    def forward(self, x):
        return nn.functional.layer_norm(x.float(), self.normalized_shape, eps=1e-6).to(x.dtype)


class BiasedLayerNorm(nn.Module):
    """LayerNorm written out, weight and bias, eps an attribute."""

    def __init__(self, dim, eps=1e-12):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.variance_epsilon)) + self.bias


FORMS = {  # form -> (module, the formula patch reports)
    "weight after cast": (lambda: WeightAfterCastRMSNorm(16), "rms_norm(weight, eps=1e-06)"),
    "unit offset": (lambda: UnitOffsetRMSNorm(16), "rms_norm(1 + weight, eps=1e-06)"),
    "weight dtype": (lambda: WeightDtypeRMSNorm(16), "rms_norm(weight, eps=1e-06)"),
    "plain layer norm": (lambda: PlainLayerNorm(16), "layer_norm(eps=1e-06)"),
    "biased layer norm": (lambda: BiasedLayerNorm(16), "layer_norm(weight, bias, eps=1e-12)"),
}


def _randomize(module, seed=0):
    """Random weight and bias (all the norm parameters: zeros and ones would hide a wrong form)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))
    return module


def _spy(monkeypatch):
    """Count the calls of keel.torch.layer_norm and rms_norm (what patched norms call)."""
    calls = []
    for op in ("layer_norm", "rms_norm"):
        def spy(*args, _op=getattr(kt, op), **kwargs):
            calls.append(_op.__name__)
            return _op(*args, **kwargs)
        monkeypatch.setattr(kt, op, spy)
    return calls


def _input(shape, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (1.5 + torch.randn(shape, generator=g)).to(dtype)


@pytest.mark.parametrize("form", list(FORMS))
def test_forms_recognised_and_computed_by_keel(form, monkeypatch):
    make, formula = FORMS[form]
    model = nn.Sequential(nn.Linear(16, 16), _randomize(make()))
    want = copy.deepcopy(model)
    result = patch(model)
    assert result == 1 and result.patched == [("1", type(model[1]).__name__, formula)] and result.skipped == []
    calls = _spy(monkeypatch)
    x = _input((2, 3, 16))
    torch.testing.assert_close(model(x), want(x), rtol=1e-5, atol=1e-5)
    assert len(calls) == 1


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("w_dtype", [torch.float32, torch.bfloat16])
def test_dtypes_as_the_original(form, x_dtype, w_dtype, monkeypatch):
    # The output dtype is the original's; the values differ by the original's extra roundings at
    # most: 2 ulps of the coarsest dtype of x, weight and output, relative to the row's largest value.
    norm = _randomize(FORMS[form][0]()).to(w_dtype)
    want = copy.deepcopy(norm)
    assert patch(norm) == 1
    calls = _spy(monkeypatch)
    x = _input((3, 16), x_dtype)
    got, expected = norm(x), want(x)
    assert got.dtype == expected.dtype and len(calls) == 1
    ulp = max(torch.finfo(dtype).eps for dtype in (x_dtype, w_dtype, expected.dtype))
    tol = 2 * ulp * expected.abs().amax(-1, keepdim=True).float()
    assert ((got.float() - expected.float()).abs() <= tol).all()


def test_what_keel_does_not_take_goes_to_the_original(monkeypatch):
    # float64 inputs, a float64 result (float64 weight), keyword arguments: the module's own
    # forward, bitwise.
    norm = _randomize(WeightAfterCastRMSNorm(16))
    want = copy.deepcopy(norm)
    patch(norm)
    calls = _spy(monkeypatch)
    x = _input((3, 16))
    assert torch.equal(norm(x.double()), want(x.double()))
    assert torch.equal(copy.deepcopy(norm).double()(x), copy.deepcopy(want).double()(x))
    assert torch.equal(norm(x=x), want(x=x))
    assert calls == []


def test_autocast_goes_through_keel_in_the_originals_dtype(monkeypatch):
    """Under CPU bf16 autocast a patched norm is keel's, returning what the module returns there
    (learned under autocast), within an ulp of x's dtype (the module rounds to it in between)."""
    norm = _randomize(WeightAfterCastRMSNorm(16))
    want = copy.deepcopy(norm)
    patch(norm)
    calls = _spy(monkeypatch)
    for x in (_input((3, 16)), _input((3, 16)).bfloat16()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, expected = norm(x), want(x)
        assert got.dtype == expected.dtype
        ulp = max(torch.finfo(x.dtype).eps, torch.finfo(expected.dtype).eps)
        torch.testing.assert_close(got.float(), expected.float(), rtol=2 * ulp, atol=1e-6)
    assert len(calls) == 2


def test_torch_nn_norms_and_others():
    net = nn.Sequential(nn.LayerNorm(8), nn.LayerNorm(8, bias=False), nn.LayerNorm(8, elementwise_affine=False),
                        nn.RMSNorm(8), nn.RMSNorm(8, eps=1e-5), nn.Linear(8, 8), nn.GroupNorm(2, 8),
                        nn.BatchNorm1d(8), kt.LayerNorm(8))
    _randomize(net)
    want = copy.deepcopy(net)
    result = patch(net)
    assert result == 5 and [name for name, _, _ in result.patched] == ["0", "1", "2", "3", "4"]
    assert [formula for _, _, formula in result.patched] == [
        "layer_norm(weight, bias, eps=1e-05)", "layer_norm(weight, eps=1e-05)", "layer_norm(eps=1e-05)",
        "rms_norm(weight, eps=None)", "rms_norm(weight, eps=1e-05)"]
    assert result.skipped == [("8", "LayerNorm", "a keel module")]  # batch and group norms: not examined
    assert all(type(m) is type(w) for m, w in zip(net, want))
    x = _input((4, 8))
    torch.testing.assert_close(net.eval()(x), want.eval()(x), rtol=1e-5, atol=1e-5)
    again = patch(net)
    assert again == 0 and [reason for _, _, reason in again.skipped] == ["already patched"] * 5 + ["a keel module"]
    assert patch(nn.RMSNorm(8)).patched == [("", "RMSNorm", "rms_norm(weight, eps=None)")]  # the model itself


class AbsNorm(nn.Module):
    """Looks like an RMSNorm (weight, eps) but divides by the mean absolute value."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return self.weight * x / (x.abs().mean(-1, keepdim=True) + self.eps)


class TwiceCenteredRMSNorm(AbsNorm):
    """Subtracts the mean twice, then RMS-normalizes: no formula keel has."""

    def forward(self, x):
        h = x - 2 * x.mean(-1, keepdim=True)
        return self.weight * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)


class GatedRMSNorm(AbsNorm):
    """Takes a second input: the probe cannot call it."""

    def forward(self, x, gate):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * gate


def test_norm_looking_modules_that_compute_something_else_warn():
    net = nn.Sequential(AbsNorm(8), TwiceCenteredRMSNorm(8), GatedRMSNorm(8), nn.RMSNorm(8))
    with pytest.warns(UserWarning, match=r"3 norm-looking modules match no formula") as record:
        result = patch(net)
    assert len(record) == 1 and result == 1 and result.patched[0][0] == "3"
    assert [(name, cls) for name, cls, _ in result.skipped] == [
        ("0", "AbsNorm"), ("1", "TwiceCenteredRMSNorm"), ("2", "GatedRMSNorm")]
    assert "computes none of the candidates (closest: " in result.skipped[0][2]
    assert "the probe failed: TypeError" in result.skipped[2][2]
    assert all("forward" not in m.__dict__ for m in net[:3])


def test_probe_leaves_parameters_and_random_state():
    # The weights as initialised (Gemma's zeros, ones): the probe's own random ones decide.
    net = nn.Sequential(*(FORMS[form][0]() for form in FORMS))
    params = dict(net.named_parameters())
    values = {name: p.detach().clone() for name, p in params.items()}
    state = torch.get_rng_state()
    assert [formula for _, _, formula in patch(net).patched] == [formula for _, formula in FORMS.values()]
    assert torch.equal(torch.get_rng_state(), state)
    for name, p in net.named_parameters():
        assert p is params[name] and torch.equal(p, values[name]) and p.grad is None


def test_hooks_state_dict_unpatch():
    net = nn.Sequential(nn.Linear(16, 16), _randomize(UnitOffsetRMSNorm(16)), nn.LayerNorm(16))
    want = copy.deepcopy(net)
    fired = []
    net[1].register_forward_pre_hook(lambda m, args: fired.append("pre"))
    net[1].register_forward_hook(lambda m, args, out: fired.append("post"))
    keys = list(net.state_dict())
    assert patch(net) == 2
    x = _input((2, 16))
    net(x)
    assert fired == ["pre", "post"] and list(net.state_dict()) == keys
    assert isinstance(net[2], nn.LayerNorm) and type(net[2]) is nn.LayerNorm
    assert unpatch(net) == 2
    assert all("forward" not in m.__dict__ for m in net)
    assert torch.equal(net(x), want(x))
    assert unpatch(net) == 0 and patch(net) == 2  # and it patches again


def test_deepcopy_and_pickle_keep_the_patch(monkeypatch):
    net = nn.Sequential(nn.Linear(16, 16), _randomize(WeightAfterCastRMSNorm(16)))
    patch(net)
    twin = copy.deepcopy(net)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    calls = _spy(monkeypatch)
    x = _input((2, 16))
    for other in (twin, loaded):
        assert other[1].forward.module is other[1]  # the copy's forward computes with the copy's weight
        assert torch.equal(other(x), net(x))
    assert len(calls) == 4


def test_logs_at_info(caplog):
    with caplog.at_level(logging.INFO, logger="keel.torch"):
        patch(nn.Sequential(nn.LayerNorm(8), nn.LayerNorm(8)))
    assert "keel.torch.patch: 2 modules now computed by keel; 2 x LayerNorm as layer_norm(weight, bias, " \
           "eps=1e-05)" in caplog.text


# --- transformers: tiny random models of each family ---------------------------------------

_TOKENS = dict(vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=0)
_DECODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, head_dim=32, max_position_embeddings=32, **_TOKENS)
FAMILIES = {  # family -> (config class, model class, config)
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=2, n_positions=32, **_TOKENS)),
    "bert": ("BertConfig", "BertForMaskedLM", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                                   intermediate_size=128, max_position_embeddings=32, **_TOKENS)),
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(d_model=64, d_ff=128, d_kv=32, num_layers=2, num_heads=2,
                                                         **_TOKENS)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", _DECODER),
    "mistral": ("MistralConfig", "MistralForCausalLM", _DECODER),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _DECODER),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", _DECODER),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", _DECODER),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", _DECODER),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", _DECODER),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", _DECODER),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", _DECODER),
}


def _family(family):
    """(model in eval mode with random weights, its inputs): no download, seeded."""
    transformers = pytest.importorskip("transformers")
    config_name, model_name, config = FAMILIES[family]
    if not hasattr(transformers, model_name):
        pytest.skip(f"transformers {transformers.__version__} has no {model_name}")
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**config)).eval()
    for name in _norm_names(model):  # random norm weights: Gemma's start at zero, others at one
        _randomize(model.get_submodule(name))
    ids = torch.randint(2, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "decoder_input_ids": ids} if family == "t5" else {"input_ids": ids}
    return model, inputs


def _logits_and_grads(model, inputs, call=None):
    """The logits of model (computed by call, e.g. its compiled form) and the gradients of a
    random projection of them."""
    logits = (model if call is None else call)(**inputs).logits
    direction = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    model.zero_grad()
    (logits * direction).sum().backward()
    return logits.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _norm_names(model):
    return [name for name, m in model.named_modules() if "norm" in type(m).__name__.lower()]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_patched_completely(family, monkeypatch):
    model, inputs = _family(family)
    want = copy.deepcopy(model)
    norms = _norm_names(model)
    fired = []
    model.get_submodule(norms[0]).register_forward_hook(lambda m, args, out: fired.append(out.shape))
    params, keys, state = dict(model.named_parameters()), list(model.state_dict()), torch.get_rng_state()
    result = patch(model)
    assert result == len(norms) and [name for name, _, _ in result.patched] == norms and result.skipped == []
    assert list(model.state_dict()) == keys and torch.equal(torch.get_rng_state(), state)
    assert all(p is params[name] for name, p in model.named_parameters())
    calls = _spy(monkeypatch)
    logits, grads = _logits_and_grads(model, inputs)
    assert len(calls) == len(norms) and fired  # every norm call computed by keel; the hook fired
    want_logits, want_grads = _logits_and_grads(want, inputs)
    # float32 rounding inside the norms, carried through 2 layers: measured <= 5e-7 of the largest
    # logit, <= 7e-7 of the largest gradient (some gradients are rounding noise: an attention key
    # bias's is zero but for rounding, so each is measured against the largest of the model)
    torch.testing.assert_close(logits, want_logits, rtol=1e-5, atol=1e-5 * want_logits.abs().max().item())
    assert grads.keys() == want_grads.keys()
    scale = max(grad.abs().max().item() for grad in want_grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_patched_llama_under_torch_compile():
    # Compiled first: the patched forwards learn their output dtype while being traced.
    model, inputs = _family("llama")
    assert patch(model) == len(_norm_names(model))
    compiled = _logits_and_grads(model, inputs, torch.compile(model, backend="eager"))
    eager = _logits_and_grads(model, inputs)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    for name, grad in eager[1].items():
        torch.testing.assert_close(compiled[1][name], grad, rtol=1e-5, atol=1e-5, msg=name)
