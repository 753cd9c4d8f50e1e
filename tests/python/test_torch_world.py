"""keel.torch in tests a user's world wrote: PyTorch's own OpInfo samples of layer_norm,
native_layer_norm and rms_norm (float32 as torch within torch's tolerances, gradients included;
bf16/f16 no further from a float64 computation than torch; float64 torch's own result through
the fallback; torch's error inputs refused); a 2-process DistributedDataParallel run on gloo
(parameters bitwise the same on both ranks after every step); and transformers' GPT-2, BERT and
Llama trained with AdamW patched and unpatched (the same losses and parameters to float32
rounding), the patched Llama under torch.compile too."""

import copy
import functools
import math
import os
import socket
import time
from datetime import timedelta
from typing import NamedTuple, Optional

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the transformers models are built from configs: nothing to fetch
torch = pytest.importorskip("torch", reason="PyTorch is not installed: keel.torch tests need it (pip install torch)")

import keel.torch as kt  # noqa: E402
from keel_spy import KeelCalls  # noqa: E402

nn, F = torch.nn, torch.nn.functional
KEEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FORWARDS = {"layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm"}


def _forward_calls(calls):
    return sum(call.name in FORWARDS for call in calls)


# --- torch's OpInfo samples -------------------------------------------------------------------

OPINFO_OPS = ("nn.functional.layer_norm", "native_layer_norm", "nn.functional.rms_norm")
# What the OpInfo samples hold that keel does not compute as torch does. Negative eps (-0.5;
# torch computes it): keel's eps must be finite and >= 0 (README, "What it computes"), so the
# keel dtypes refuse it with a ValueError naming eps; float64 goes to torch's op, which takes it.
# Rows of zero length (x of shape (0, 1)) do go through keel: empty results, zero weight gradients.
NEGATIVE_EPS = r"eps \(-0\.5\) must be finite and >= 0"


@functools.cache
def _opinfo(name):
    """torch's OpInfo entry `name` (importing op_db needs expecttest; it also freezes
    torch.backends' global flags for the process, as torch's test suite does)."""
    pytest.importorskip("expecttest", reason="torch's OpInfo database imports expecttest")
    from torch.testing._internal.common_methods_invocations import op_db
    return next(op for op in op_db if op.name == name)


class _Case(NamedTuple):
    """One sample as the arguments of a norm: x, normalized_shape, weight, bias (rms_norm: None), eps."""

    x: torch.Tensor
    dims: tuple
    weight: Optional[torch.Tensor]
    bias: Optional[torch.Tensor]
    eps: float


def _case(name, sample):
    """The sample of op `name` as a _Case. rms_norm's eps None is spelled out as torch means it,
    the epsilon of x's dtype (keel's None means float32's)."""
    rms = name == "nn.functional.rms_norm"
    names = ("normalized_shape", "weight", "eps") if rms else ("normalized_shape", "weight", "bias", "eps")
    given = {**dict(zip(names, sample.args)), **sample.kwargs}
    eps = given.get("eps")
    if eps is None:
        eps = torch.finfo(sample.input.dtype).eps if rms else 1e-5
    return _Case(sample.input, tuple(given["normalized_shape"]), given.get("weight"), given.get("bias"), eps)


def _leaves(case, dtype=None):
    """The case's tensors as fresh leaves, cast to dtype (exact when widening), requiring grad as
    the sample's do."""
    def leaf(t):
        return None if t is None else t.detach().to(dtype or t.dtype).requires_grad_(t.requires_grad)
    return case._replace(x=leaf(case.x), weight=leaf(case.weight), bias=leaf(case.bias))


def _torch_op(name, c):
    """torch's op on the case: (y,), or native_layer_norm's (y, mean, rstd)."""
    if name == "native_layer_norm":
        return torch.native_layer_norm(c.x, c.dims, c.weight, c.bias, c.eps)
    if name == "nn.functional.layer_norm":
        return (F.layer_norm(c.x, c.dims, c.weight, c.bias, c.eps),)
    return (F.rms_norm(c.x, c.dims, c.weight, c.eps),)


def _keel_op(name, c):
    """keel's op on the case, as _torch_op returns it: the operator's float32 mean and rstd (of
    x's leading shape) reshaped to native_layer_norm's keepdim shape. The operator refuses dtypes
    keel does not compute (keel.torch.layer_norm hands them to torch): for those, that function's y."""
    if name == "native_layer_norm":
        if c.x.dtype not in KEEL_DTYPES:
            return (kt.layer_norm(c.x, c.dims, c.weight, c.bias, c.eps),)
        y, mean, rstd = torch.ops.keel.layer_norm(c.x, list(c.dims), c.weight, c.bias, c.eps)
        keepdim = c.x.shape[:c.x.dim() - len(c.dims)] + (1,) * len(c.dims)
        return y, mean.reshape(keepdim), rstd.reshape(keepdim)
    if name == "nn.functional.layer_norm":
        return (kt.layer_norm(c.x, c.dims, c.weight, c.bias, c.eps),)
    return (kt.rms_norm(c.x, c.dims, c.weight, c.eps),)


def _results(op, name, c, dtype):
    """{"y", "mean", "rstd", "dx", "dweight", "dbias"}: op's outputs, and the gradients of a
    seeded random dy (values of dtype) on y for the case's tensors that require grad."""
    outs = op(name, c)
    results = dict(zip(("y", "mean", "rstd"), outs))
    inputs = {key: t for key, t in (("dx", c.x), ("dweight", c.weight), ("dbias", c.bias))
              if t is not None and t.requires_grad}
    if inputs:
        dy = torch.randn(outs[0].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
        results.update(zip(inputs, torch.autograd.grad(outs[0], list(inputs.values()), dy.to(outs[0].dtype))))
    return results


def _ulp(ref, dtype):
    """One unit in the last place of dtype at each value of ref (float64): at |ref| in
    [2**(e-1), 2**e), 2**(e-1) * eps; below dtype's smallest normal, its subnormal spacing."""
    _, exponent = torch.frexp(ref.abs().clamp_min(torch.finfo(dtype).tiny))
    return torch.ldexp(torch.full_like(ref, torch.finfo(dtype).eps), exponent - 1)


def _assert_no_further(key, got, theirs, ref, dtype):
    """keel's result is, element by element, no further from the float64 one than torch's, or
    within one ulp of dtype of it. Shapes as torch's; dtypes too except the statistics (keel's
    mean and rstd are float32, torch's of x's dtype)."""
    assert got.shape == theirs.shape, key
    assert key in ("mean", "rstd") and got.dtype == torch.float32 or got.dtype == theirs.dtype, key
    ref = ref.double()
    error, theirs_error = (got.double() - ref).abs(), (theirs.double() - ref).abs()
    worse = error > torch.maximum(theirs_error, _ulp(ref, dtype))
    assert not worse.any(), f"{key}: keel {got[worse]}, torch {theirs[worse]}, float64 {ref[worse]}"


@pytest.mark.filterwarnings("ignore::keel.torch.KeelFallbackWarning")  # float64: checked with fallbacks()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("name", OPINFO_OPS)
def test_opinfo_samples(name, dtype, keel_calls):
    """Every OpInfo sample of the op through keel (the operator for native_layer_norm): float32
    as torch's within assert_close's float32 tolerances, outputs and gradients; bf16/f16 no
    further from float64 than torch (which is the further one where they differ: keel rounds once
    from float32 with float64 statistics); float64 torch's own bits through the fallback. The
    samples keel computes are all but the negative-eps ones, and the majority."""
    samples = list(_opinfo(name).sample_inputs("cpu", dtype, requires_grad=True))
    through, refused = 0, 0
    for sample in samples:
        case = _case(name, sample)
        if dtype in KEEL_DTYPES and case.eps < 0:
            with pytest.raises(ValueError, match=NEGATIVE_EPS):
                _keel_op(name, _leaves(case))
            refused += 1
            continue
        if name == "native_layer_norm" and dtype not in KEEL_DTYPES:
            with pytest.raises(TypeError, match="keel computes float32, bfloat16 and float16"):
                torch.ops.keel.layer_norm(case.x, list(case.dims), case.weight, case.bias, case.eps)
        before = len(keel_calls)
        mine = _results(_keel_op, name, _leaves(case), dtype)
        through += _forward_calls(keel_calls[before:]) == 1
        theirs = _results(_torch_op, name, _leaves(case), dtype)
        if dtype == torch.float64:  # keel's y and gradients: theirs (the operator gives no statistics)
            assert set(theirs) - set(mine) <= {"mean", "rstd"}
            for key, got in mine.items():
                assert torch.equal(got, theirs[key]), key
            continue
        assert mine.keys() == theirs.keys()
        ref = _results(_torch_op, name, _leaves(case, torch.float64), dtype)
        for key, got in mine.items():
            if dtype != torch.float32:
                _assert_no_further(key, got, theirs[key], ref[key], dtype)
            elif key == "dweight" and math.prod(case.dims) == 1:
                # One feature per row: x - mean, xhat and dweight = sum(dy * xhat) are 0; torch's
                # mean is an ulp of x off, its dweight 3.7e-5 (assert_close's atol is 1e-5).
                _assert_no_further(key, got, theirs[key], ref[key], dtype)
            else:
                torch.testing.assert_close(got, theirs[key], msg=lambda m, key=key: f"{key}: {m}")
    if dtype in KEEL_DTYPES:
        assert through == len(samples) - refused > len(samples) / 2, (through, refused, len(samples))
    else:
        op = "rms_norm" if name == "nn.functional.rms_norm" else "layer_norm"
        assert through == 0 and any(entry[0] == op and "float64" in entry[1] for entry in kt.fallbacks())


@pytest.mark.parametrize("name", ("native_layer_norm", "nn.functional.rms_norm"))
def test_opinfo_error_inputs(name):
    """torch's error inputs (normalized_shape empty or not x's trailing dimensions; weight or bias
    of another shape): torch raises; keel raises a ValueError naming the argument torch names."""
    errors = list(_opinfo(name).error_inputs("cpu"))
    assert errors
    for error in errors:
        case = _case(name, error.sample_input)
        with pytest.raises(error.error_type, match=error.error_regex):
            _torch_op(name, case)
        argument = next(a for a in ("weight", "bias", "normalized_shape") if a in error.error_regex)
        with pytest.raises(ValueError, match=argument):
            _keel_op(name, case)


# --- DistributedDataParallel: 2 processes, gloo ------------------------------------------------

DDP_STEPS, DDP_TIMEOUT_S = 4, 120


class _DDPNet(nn.Module):
    """A pre-norm block with keel's LayerNorm, fused add + LayerNorm (y, h) and RMSNorm."""

    def __init__(self, width=16):
        super().__init__()
        self.ln, self.add_ln, self.rms = kt.LayerNorm(width), kt.AddLayerNorm(width), kt.RMSNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        y, h = self.add_ln(x, self.fc1(self.ln(x)))
        return self.rms(self.fc2(y) + h)


def _ddp_worker(rank, world, port, out_dir, keel_file):
    """One rank: trains _DDPNet DDP_STEPS steps on its own data; saves its flattened parameters
    after each step, its losses and the keel operators that ran to out_dir/rank<rank>.pt. spawn
    gave this process the parent's sys.path (python/, tests/python) and environment (KEEL_LIBRARY,
    KEEL_TORCH_EXT_DIR): it imported the same keel (checked)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    assert kt.__file__ == keel_file, (kt.__file__, keel_file)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(_DDPNet())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        params, losses = [], []
        with KeelCalls() as calls:
            for step in range(DDP_STEPS):
                g = torch.Generator().manual_seed(1000 * rank + step)
                x, target = torch.randn(8, 5, 16, generator=g), torch.randn(8, 5, 16, generator=g)
                loss = F.mse_loss(model(x), target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        torch.save({"params": params, "losses": losses, "calls": sorted({c.name for c in calls})},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel_ranks_stay_identical(tmp_path):
    """Two gloo ranks, different data: after every step their parameters are bitwise the same
    (DDP averages the gradients keel's backwards computed), the losses differ, and keel's
    forward and backward operators ran on both."""
    context = torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, _free_port(), str(tmp_path), kt.__file__), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + DDP_TIMEOUT_S
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail(f"the DDP ranks did not finish in {DDP_TIMEOUT_S} s")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert len(ranks[0]["params"]) == DDP_STEPS
    for step, (a, b) in enumerate(zip(ranks[0]["params"], ranks[1]["params"])):
        assert torch.equal(a, b), f"the ranks' parameters differ after step {step}"
    assert not torch.equal(ranks[0]["params"][0], ranks[0]["params"][-1])  # and they did train
    assert ranks[0]["losses"] != ranks[1]["losses"]
    ops = {"layer_norm", "add_layer_norm", "rms_norm"}
    for result in ranks:
        assert set(result["calls"]) == ops | {op + "_backward" for op in ops}


# --- transformers: tiny GPT-2, BERT, Llama trained patched and unpatched ------------------------

_TOKENS = dict(vocab_size=128, bos_token_id=0, eos_token_id=1, pad_token_id=0)
MASK_TOKEN = 2
HF_MODELS = {  # family -> (config class, model class, config without dropout, norm modules)
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(n_embd=64, n_layer=2, n_head=2, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  **_TOKENS), 5),  # ln_1, ln_2 per layer, ln_f
    "bert": ("BertConfig", "BertForMaskedLM",
             dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **_TOKENS),
             6),  # embeddings, 2 per layer, the masked LM head's transform
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=2, head_dim=32, max_position_embeddings=32, attention_dropout=0.0, **_TOKENS),
              5),  # input and post-attention norms per layer, the final norm
}
HF_STEPS, COMPILED_STEPS = 20, 3


def _hf_model(family):
    """(the model with seeded random weights in train mode, its number of norm modules)."""
    transformers = pytest.importorskip("transformers")
    config_name, model_name, config, norms = HF_MODELS[family]
    torch.manual_seed(0)
    return getattr(transformers, model_name)(getattr(transformers, config_name)(**config)).train(), norms


def _batch(family, step):
    """The step's batch: token ids with labels (causal LM: the ids; BERT: a quarter of the
    positions masked, the others' labels -100)."""
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(3, 128, (4, 16), generator=g)
    if family != "bert":
        return {"input_ids": ids, "labels": ids}
    masked = torch.rand(ids.shape, generator=g) < 0.25
    masked[:, 0] = True
    return {"input_ids": ids.masked_fill(masked, MASK_TOKEN), "labels": ids.masked_fill(~masked, -100)}


def _train(model, family, steps, call=None):
    """Trains model (through call, e.g. its compiled form) with AdamW on two batches in turn;
    returns the losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        loss = (model if call is None else call)(**_batch(family, step % 2)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _patched(model, family, norms):
    """A patched deep copy of model: every norm module patched, keel computing each norm call
    (forward and backward) of a step."""
    twin = copy.deepcopy(model)
    assert kt.patch(twin) == norms
    with KeelCalls() as calls:
        twin(**_batch(family, 0)).loss.backward()
    twin.zero_grad(set_to_none=True)
    assert _forward_calls(calls) == norms and len(calls) == 2 * norms
    return twin


def _parameter_drift(got, want, initial):
    """max |got - want| over the parameters, as a fraction of how far training moved them (the
    largest |want - initial|)."""
    want = list(want)
    drift = max((g - w).abs().max().item() for g, w in zip(got, want))
    return drift / max((w - i).abs().max().item() for w, i in zip(want, initial))


@pytest.mark.parametrize("family", list(HF_MODELS))
def test_transformers_training_patched_as_unpatched(family):
    """20 AdamW steps of the unpatched and the patched model (same weights, data, no dropout;
    the loss falls from 4.8 to 3.5): each step's loss the same to float32 rounding, and the
    final parameters."""
    model, norms = _hf_model(family)
    initial = [p.detach().clone() for p in model.parameters()]
    patched = _patched(model, family, norms)
    want, got = _train(model, family, HF_STEPS), _train(patched, family, HF_STEPS)
    assert want[-1] < want[0] - 1
    # measured: the losses within 2e-7 relative at every step; the parameters within 1.3e-3
    # (GPT-2), 2.8e-4 (BERT), 1.8e-4 (Llama) of the largest change training made (2.1e-2). Adam
    # divides each gradient by its running RMS: where a gradient is nearly 0 (the attention key
    # biases': 0 but for rounding) rounding differences become differences of the step, so the
    # parameters drift apart more than the losses do.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert _parameter_drift(patched.parameters(), model.parameters(), initial) < 1e-2


def test_patched_llama_trains_under_torch_compile():
    """The patched Llama compiled (AOTAutograd, graphs run as traced) trains as it does eager:
    the same losses and parameters after 3 steps; its forward and backward graphs call keel's
    rms_norm operators."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    model, norms = _hf_model("llama")
    eager, compiled = _patched(model, "llama", norms), _patched(model, "llama", norms)
    initial = [p.detach().clone() for p in model.parameters()]
    backend = aot_autograd(fw_compiler=record, bw_compiler=record)
    got = _train(compiled, "llama", COMPILED_STEPS, torch.compile(compiled, backend=backend))
    want = _train(eager, "llama", COMPILED_STEPS)
    targets = {str(node.target) for gm in graphs for node in gm.graph.nodes}
    assert {"keel.rms_norm.default", "keel.rms_norm_backward.default"} <= targets
    assert not any("rms_norm" in target and not target.startswith("keel.") for target in targets)
    # measured: the losses and parameters bitwise the eager run's (the graphs run the same kernels)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert _parameter_drift(compiled.parameters(), eager.parameters(), initial) < 1e-3
