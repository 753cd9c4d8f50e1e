"""keel's torch operators as torch's tools see them: torch.library.opcheck (schema, fake kernels,
autograd registration, AOT dispatch), torch.compile (the graphs hold keel's operators; Inductor
places them and its code calls them; results bitwise the eager ones), torch.export (the exported
program names them), torch.func (vmap, grad, per-sample gradients), gradients of gradients
against torch's, and forward-mode AD refused."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: keel.torch tests need it (pip install torch)")

import keel.torch as kt  # noqa: E402

OPS = torch.ops.keel


def _leaf(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype).requires_grad_(True)


# --- opcheck --------------------------------------------------------------------------------

def _samples():
    """(op, args) samples over dtypes, optional parameters and the fused ops' options."""
    x, w, b = _leaf(3, 5, 16), _leaf(16, seed=1), _leaf(16, seed=2)
    r = _leaf(3, 5, 16, seed=3)
    xb = _leaf(4, 16, dtype=torch.bfloat16, seed=4)
    yield OPS.layer_norm.default, (x, [16], w, b, 1e-5)
    yield OPS.layer_norm.default, (x, [5, 16], None, None, 1e-5)
    yield OPS.layer_norm.default, (xb, [16], w, None, 1e-5)
    yield OPS.rms_norm.default, (x, [16], w, 1e-6, False)
    yield OPS.rms_norm.default, (xb.half(), [16], w, 1e-6, True)
    yield OPS.add_layer_norm.default, (x, r, [16], w, b, 1e-5, 1.0, None, None, True)
    yield OPS.add_layer_norm.default, (x, r, [16], w, b, 1e-5, 2.0, _leaf(16, seed=5), _leaf(16, seed=6), False)
    yield OPS.add_rms_norm.default, (x, r.detach().bfloat16(), [16], w, 1e-6, 1.0, None, None, True, True)
    d = x.detach()
    y, mean, rstd = OPS.layer_norm(d, [16], w.detach(), b.detach(), 1e-5)
    yield OPS.layer_norm_backward.default, (torch.randn_like(d), d, [16], mean, rstd, w.detach(), 1e-5,
                                            [True, False, True])
    _, rstd = OPS.rms_norm(d, [16], None, 1e-6, False)
    yield OPS.rms_norm_backward.default, (torch.randn_like(d), d, [16], rstd, None, 1e-6, False, [True, True])


@pytest.mark.parametrize("i", range(10))
def test_opcheck(i):
    op, args = list(_samples())[i]
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


# --- torch.compile ----------------------------------------------------------------------------

class _Block(torch.nn.Module):
    """A pre-norm block: x -> norm -> linear, the residual through the fused add + norm."""

    def __init__(self, width=32):
        super().__init__()
        self.ln = kt.LayerNorm(width)
        self.rms = kt.RMSNorm(width)
        self.fc = torch.nn.Linear(width, width)
        self.add_norm = kt.AddLayerNorm(width)

    def forward(self, x):
        y = self.fc(self.ln(x))
        y, h = self.add_norm(x, y)
        return self.rms(y) + h


def _keel_targets(gm):
    return sorted({str(n.target) for n in gm.graph.nodes if str(n.target).startswith("keel.")})


def test_compile_graphs_hold_keels_operators():
    """AOTAutograd's forward and backward graphs call keel's operators (not aten's layer_norm),
    and the compiled results and gradients are bitwise the eager ones."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    model = _Block()
    x = _leaf(4, 8, 32)
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    out = compiled(x)
    out.pow(2).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad()
    want = model(x)
    want.pow(2).sum().backward()
    assert torch.equal(out, want)
    assert all(torch.equal(a, b) for a, b in zip(got, [x.grad] + [p.grad for p in model.parameters()]))
    forward, backward = graphs
    assert _keel_targets(forward) == ["keel.add_layer_norm.default", "keel.layer_norm.default",
                                      "keel.rms_norm.default"]
    assert _keel_targets(backward) == ["keel.add_layer_norm_backward.default", "keel.layer_norm_backward.default",
                                       "keel.rms_norm_backward.default"]
    assert not any("native_layer_norm" in str(n.target) for g in graphs for n in g.graph.nodes)


def test_inductor_places_keels_operators():
    """Inductor compiles a model with keel's ops; its generated code calls them; the results match
    eager (the norm's own output bitwise: it is keel's kernel on the same input)."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(1)
    model = torch.nn.Sequential(kt.LayerNorm(64), torch.nn.Linear(64, 64), kt.RMSNorm(64)).eval()
    x = torch.randn(8, 64)
    with torch.no_grad():
        out, codes = run_and_get_code(torch.compile(model), x)
        torch.testing.assert_close(out, model(x))
        assert torch.equal(torch.compile(model[0])(x), model[0](x))
    code = "\n".join(codes)
    assert "torch.ops.keel.layer_norm.default" in code and "torch.ops.keel.rms_norm.default" in code


def test_dynamic_shapes_compile_once():
    model = kt.AddRMSNorm(16)
    compiled = torch.compile(model, backend="aot_eager", dynamic=True, fullgraph=True)
    for rows in (3, 5, 9):
        x, r = torch.randn(rows, 16), torch.randn(rows, 16)
        got, want = compiled(x, r), model(x, r)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


# --- torch.export -------------------------------------------------------------------------------

def test_export_names_keels_operators():
    torch.manual_seed(2)
    model = _Block(16)
    x = torch.randn(2, 3, 16)
    ep = torch.export.export(model, (x,))
    names = {str(n.target) for n in ep.graph.nodes}
    assert {"keel.layer_norm.default", "keel.rms_norm.default", "keel.add_layer_norm.default"} <= names
    assert torch.equal(ep.module()(x), model(x))
    inference = ep.run_decompositions()  # the inference IR keeps them
    assert "keel.layer_norm.default" in {str(n.target) for n in inference.graph.nodes}
    assert torch.equal(inference.module()(x), model(x))


# --- torch.func -----------------------------------------------------------------------------------

def test_vmap_over_rows_and_over_weights():
    x, w = torch.randn(3, 4, 16), torch.randn(5, 16)
    got = torch.func.vmap(lambda t: kt.layer_norm(t, 16), in_dims=1)(x)
    assert torch.equal(got, kt.layer_norm(x.transpose(0, 1), 16))
    # an ensemble of weights: one call per member, each its own weight
    got = torch.func.vmap(lambda w: kt.rms_norm(x, 16, w, 1e-6))(w)
    want = torch.stack([kt.rms_norm(x, 16, wi, 1e-6) for wi in w])
    assert torch.equal(got, want)


def test_per_sample_gradients():
    """vmap(grad): each sample's weight gradient alone (not summed over the batch)."""
    x, w = torch.randn(6, 4, 16), torch.randn(16)

    def loss(f, w, xi):
        return f(xi, (16,), w).pow(2).mul(torch.arange(16.0)).sum()

    got = torch.func.vmap(torch.func.grad(lambda w, xi: loss(kt.layer_norm, w, xi)), in_dims=(None, 0))(w, x)
    want = torch.func.vmap(torch.func.grad(lambda w, xi: loss(torch.nn.functional.layer_norm, w, xi)),
                           in_dims=(None, 0))(w, x)
    assert got.shape == (6, 16)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_forward_mode_ad_is_refused():
    x, w = torch.randn(2, 8), torch.randn(8)
    with pytest.raises(RuntimeError, match="forward-mode automatic differentiation"):
        torch.func.jvp(lambda t: kt.layer_norm(t, 8, w), (x,), (torch.ones_like(x),))
    with pytest.raises(RuntimeError, match="forward-mode"):
        torch.func.hessian(lambda t: kt.rms_norm(t, 8, w).pow(2).sum())(x[0])


# --- gradients of gradients -------------------------------------------------------------------------

def _second_order(f, x, w, b):
    """The gradient of a loss that holds the gradients of f (a gradient penalty) and an x**3 term
    (dy then depends on x)."""
    y = f(x, w, b)
    g = torch.autograd.grad((y ** 3).sum(), (x, w, b), create_graph=True, allow_unused=True, materialize_grads=True)
    loss = sum((gi ** 2).sum() for gi in g) + (x ** 3).sum()
    return torch.autograd.grad(loss, (x, w, b), allow_unused=True, materialize_grads=True)


CASES = {
    "layer_norm": (lambda x, w, b: kt.layer_norm(x, 8, w, b),
                   lambda x, w, b: torch.nn.functional.layer_norm(x, (8,), w, b)),
    "rms_norm": (lambda x, w, b: kt.rms_norm(x, 8, w, 1e-6, add_unit_offset=True),
                 lambda x, w, b: torch.nn.functional.rms_norm(x, (8,), 1 + w, 1e-6)),
    "add_layer_norm": (lambda x, w, b: sum(kt.add_layer_norm(x, x.flip(0) * 2, 8, w, b, branch_scale=b)),
                       lambda x, w, b: (lambda h: torch.nn.functional.layer_norm(h, (8,), w, b) + h)(x + b * (x.flip(0) * 2))),
    "add_rms_norm post": (lambda x, w, b: kt.add_rms_norm(x, x.flip(0), 8, w, 1e-6, alpha=1.5, skip_bias=b,
                                                          return_sum=False),
                          lambda x, w, b: torch.nn.functional.rms_norm(1.5 * x + x.flip(0) + b, (8,), w, 1e-6)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_second_derivatives_match_torch(case):
    mine, theirs = CASES[case]
    x, w, b = _leaf(3, 8), _leaf(8, seed=1), _leaf(8, seed=2)
    got, want = _second_order(mine, x, w, b), _second_order(theirs, x, w, b)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=2e-5, atol=2e-5 * e.abs().max().item())


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")  # float32 on purpose: keel's dtype
@pytest.mark.parametrize("case", ["layer_norm", "add_layer_norm"])
def test_gradgradcheck(case):
    mine = CASES[case][0]
    x, w, b = _leaf(2, 8), _leaf(8, seed=1), _leaf(8, seed=2)
    # float32 finite differences: step and tolerances sized for float32
    assert torch.autograd.gradgradcheck(mine, (x, w, b), eps=1e-2, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_nested_func_grad_matches_torch(case):
    """Nested torch.func.grad (a gradient of a gradient, functorch's way: every level runs
    autograd with create_graph) against torch's ops in float64: the inner gradient's dy
    depends on x, a path counted once."""
    mine, theirs = CASES[case]
    x, w, b = (t.detach() for t in (_leaf(3, 8), _leaf(8, seed=1), _leaf(8, seed=2)))

    def outer(f, x, w, b):
        inner = torch.func.grad(lambda x: f(x, w, b).pow(3).sum())
        return torch.func.grad(lambda x: inner(x).pow(2).sum())(x)

    got = outer(mine, x, w, b)
    want = outer(theirs, x.double(), w.double(), b.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_first_derivative_stays_keels_under_create_graph():
    """With create_graph the first derivative is keel's, bitwise the plain backward's."""
    x, w = _leaf(4, 8), _leaf(8, seed=1)
    dy = torch.randn(4, 8)
    plain = torch.autograd.grad(kt.layer_norm(x, 8, w), (x, w), dy)
    created = torch.autograd.grad(kt.layer_norm(x, 8, w), (x, w), dy, create_graph=True)
    assert all(torch.equal(a, b.detach()) for a, b in zip(plain, created))
    assert all(c.requires_grad for c in created)


# --- TorchScript ----------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated in torch 2.15
def test_torchscript_modules_call_keels_operators():
    for m in (kt.LayerNorm(8), kt.LayerNorm(8, bias=False), kt.RMSNorm(8), kt.RMSNorm(8, eps=1e-5)):
        scripted = torch.jit.script(m)
        x = torch.randn(2, 8)
        assert torch.equal(scripted(x), m(x)) and "keel::" in str(scripted.graph)


# --- building ---------------------------------------------------------------------------------------

def test_a_failed_compile_is_an_import_error_that_says_what_to_do(monkeypatch, tmp_path):
    import keel._torch_ext as ext

    def fail(folder, verbose=False):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setenv("KEEL_TORCH_EXT_DIR", str(tmp_path))
    monkeypatch.setattr(ext, "compile_into", fail)
    monkeypatch.setattr(ext, "_prebuilt_matches", lambda key: False)
    with pytest.raises(ImportError, match=r"could not be compiled .*pip install ninja"):
        ext.find_or_compile()
