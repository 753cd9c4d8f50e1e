"""keel.torch in a compiled model's training step: a GPT-2-shaped language model (transformers'
GPT2LMHeadModel, 12 layers, width 768 by default, random weights, dropout 0) on the CPU, in
float32 and under bf16 autocast, compiled with torch.compile (Inductor), unpatched and
keel.torch.patch'ed (a deep copy of the same weights: its 2 * layers + 1 LayerNorms compute
through torch.ops.keel, which stay in the compiled graph).

A training step is zero_grad, forward with the LM loss (under torch.autocast("cpu", bfloat16)
for bf16-autocast), backward, AdamW step (torch.optim.AdamW, lr 1e-4, torch's default CPU
implementation, not compiled; the same for both), on one fixed batch of random tokens. The
warm-up steps (compilation included) are not timed; then --steps steps of each model are timed
alternating (unpatched, keel, unpatched, keel, ...) so drift hits both alike, and the median and
the minimum time per step of each are printed, with unpatched / keel (> 1: keel faster).

Checks, printed beside the times: the first step of the patched model runs under Inductor's code
capture (torch._inductor.utils.run_and_get_code, its caches off so the code is generated) and the
calls to torch.ops.keel.* in the generated forward and backward code are counted (expected:
2 * layers + 1 layer_norm and as many layer_norm_backward); the first-step losses of the two models
(same weights, same batch) are printed with their relative difference.

The norms' share of the step, two ways:
- in the graph (keel only): the self CPU time of the keel::* operators under torch.profiler over
  a few steps of the compiled patched model, divided by those steps' wall time (the profiler's own
  overhead included in both). Inductor fuses torch's LayerNorm into its generated C++ kernels
  together with the neighbouring adds and casts, so the unpatched model has no norm op to time.
- eager estimate (both): 2 * layers + 1 LayerNorm forward + backward calls at the model's shape
  (batch * seq rows x width, the dtype the model's norms see: float32 also under bf16 autocast,
  the residual stream being float32), torch's F.layer_norm and keel.torch.layer_norm each timed
  eagerly (torch.utils.benchmark, x, weight, bias requiring gradients), divided by the median
  step of the unpatched and the patched model respectively. It is an estimate: the compiled
  unpatched step runs Inductor's fused kernels, not torch's eager ones, and eager calls include
  autograd's bookkeeping and run with their operands warmer in cache than inside a step.

    python3 bench/torch_model_step.py [--layers 12 --width 768 --heads 12 --batch 4 --seq 256
        --vocab 8192 --steps 10 --warmup 3 --dtype both --threads N] [--markdown]

Progress goes to stderr; --markdown prints the tables on stdout.
"""

import argparse
import contextlib
import copy
import os
import re
import statistics
import sys
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "python"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.benchmark as tb  # noqa: E402
from torch._inductor.utils import run_and_get_code  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import keel  # noqa: E402
import keel.torch as kt  # noqa: E402

DTYPES = ("float32", "bf16-autocast")
PROFILE_STEPS = 3
EAGER_ROUNDS = 3
# Inductor's generated code calls an extern op as `bufN = torch.ops.keel.NAME.default(...)`
KEEL_CALL = re.compile(r"= torch\.ops\.keel\.(\w+)\.default\(")


def _say(*parts):
    print(*parts, file=sys.stderr, flush=True)


def _autocast(dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16-autocast" else contextlib.nullcontext()


def _models(args):
    """(unpatched, patched): the same random weights, the patched one's norms through keel."""
    cfg = GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=args.heads, vocab_size=args.vocab,
                     n_positions=args.seq, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(cfg).train()
    # named: otherwise transformers logs a warning inside the forward, a graph break
    base.loss_type = "ForCausalLM"
    patched = copy.deepcopy(base)
    count = kt.patch(patched)
    assert count == 2 * args.layers + 1, f"patched {int(count)} modules, skipped {count.skipped}"
    return base, patched


def _trainer(model, dtype, tokens):
    """One training step of the compiled model on tokens; returns the loss."""
    compiled = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(dtype):
            loss = compiled(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _timed(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def _first_step_keel_calls(step):
    """Runs step (compiling) capturing Inductor's code: (loss, Counter of the keel ops it calls)."""
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        loss, codes = run_and_get_code(step)  # resets Dynamo first: run it before any other compile
    return loss, Counter(name for code in codes for name in KEEL_CALL.findall(code))


def _norm_dtype(model, dtype):
    """The name of the dtype of the final LayerNorm's input (that of the residual stream) in an eager forward."""
    seen = []
    hook = model.transformer.ln_f.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.no_grad(), _autocast(dtype):
        model(input_ids=torch.zeros(1, 8, dtype=torch.long))
    hook.remove()
    return str(seen[0]).replace("torch.", "")


def _keel_in_graph(step):
    """(seconds in keel::* ops, wall seconds) per step, over PROFILE_STEPS profiled steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(PROFILE_STEPS):
            step()
        wall = time.perf_counter() - t0
    keel_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("keel::"))
    return keel_us * 1e-6 / PROFILE_STEPS, wall / PROFILE_STEPS


def _eager_norms(rows, width, dtype, calls):
    """Seconds for `calls` LayerNorm forward + backward calls of x (rows x width, dtype named),
    eagerly: {"torch": s, "keel": s}."""
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype)
    x = torch.randn(rows, width, generator=g).to(dtype).requires_grad_(True)
    w, b = (torch.randn(width, generator=g).requires_grad_(True) for _ in range(2))
    dy = torch.randn(rows, width, generator=g).to(dtype)
    fns = {"torch": F.layer_norm, "keel": kt.layer_norm}
    times = {name: [] for name in fns}
    for _ in range(EAGER_ROUNDS):
        for name, fn in fns.items():
            timer = tb.Timer("fn(x, (width,), w, b).backward(dy)",
                             globals={"fn": fn, "x": x, "width": width, "w": w, "b": b, "dy": dy})
            times[name].append(timer.blocked_autorange(min_run_time=0.3).median)
    return {name: statistics.median(t) * calls for name, t in times.items()}


def _run(args, dtype):
    """Compiles, checks and times both models for one dtype; returns the numbers for the report."""
    n = 2 * args.layers + 1  # the model's LayerNorms
    base, patched = _models(args)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    norm_dtype = _norm_dtype(base, dtype)
    steps = {"unpatched": _trainer(base, dtype, tokens), "keel": _trainer(patched, dtype, tokens)}

    t0 = time.perf_counter()
    loss_keel, calls = _first_step_keel_calls(steps["keel"])
    loss_torch = steps["unpatched"]()
    for _ in range(args.warmup - 1):
        for step in steps.values():
            step()
    rel = abs(loss_keel - loss_torch) / abs(loss_torch)
    if calls != Counter(layer_norm=n, layer_norm_backward=n):
        _say(f"[{dtype}] WARNING: expected {n} calls each of keel's layer_norm and layer_norm_backward")
    _say(f"[{dtype}] warm-up (compilation) {time.perf_counter() - t0:.0f} s; keel ops in the compiled code: "
         f"{dict(calls)}; first-step loss unpatched {loss_torch:.7f} keel {loss_keel:.7f} (rel diff {rel:.1e})")

    times = {name: [] for name in steps}
    for i in range(args.steps):
        for name, step in steps.items():
            times[name].append(_timed(step))
        _say(f"[{dtype}] step {i + 1}/{args.steps}: " +
             "  ".join(f"{name} {t[-1] * 1e3:.1f} ms" for name, t in times.items()))

    in_graph, profiled_step = _keel_in_graph(steps["keel"])
    eager = _eager_norms(args.batch * args.seq, args.width, norm_dtype, n)
    result = {"dtype": dtype, "norm_dtype": norm_dtype, "calls": calls, "loss": (loss_torch, loss_keel, rel),
              "median": {name: statistics.median(t) for name, t in times.items()},
              "min": {name: min(t) for name, t in times.items()},
              "in_graph": in_graph, "profiled_step": profiled_step, "eager": eager}
    _say(_summary(result))
    return result


def _summary(r):
    med, lo = r["median"], r["min"]
    return (f"[{r['dtype']}] median unpatched {med['unpatched'] * 1e3:.1f} ms keel {med['keel'] * 1e3:.1f} ms "
            f"(min {lo['unpatched'] * 1e3:.1f} / {lo['keel'] * 1e3:.1f}); unpatched/keel "
            f"{med['unpatched'] / med['keel']:.3f} (min {lo['unpatched'] / lo['keel']:.3f}); keel ops in the graph "
            f"{r['in_graph'] * 1e3:.1f} ms of a profiled {r['profiled_step'] * 1e3:.1f} ms step "
            f"({r['in_graph'] / r['profiled_step']:.1%}); eager {r['norm_dtype']} norms: torch "
            f"{r['eager']['torch'] * 1e3:.1f} ms ({r['eager']['torch'] / med['unpatched']:.1%} of the unpatched "
            f"step), keel {r['eager']['keel'] * 1e3:.1f} ms ({r['eager']['keel'] / med['keel']:.1%} of keel's)")


def _markdown(args, results):
    n = 2 * args.layers + 1
    print(f"GPT2LMHeadModel, {args.layers} layers, width {args.width}, {args.heads} heads, vocab {args.vocab}, "
          f"batch {args.batch} x seq {args.seq}; torch {torch.__version__} CPU, torch.compile (Inductor), "
          f"{args.threads} threads (torch and keel); AdamW; {args.warmup} warm-up steps, then {args.steps} timed "
          f"steps of each model, alternating. unpatched / keel > 1: keel faster.\n")
    print("| dtype | unpatched median ms | unpatched min ms | keel median ms | keel min ms | unpatched / keel "
          "(medians) | unpatched / keel (mins) | first-step loss unpatched | keel | rel diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        med, lo, (lt, lk, rel) = r["median"], r["min"], r["loss"]
        print(f"| {r['dtype']} | {med['unpatched'] * 1e3:.1f} | {lo['unpatched'] * 1e3:.1f} | "
              f"{med['keel'] * 1e3:.1f} | {lo['keel'] * 1e3:.1f} | {med['unpatched'] / med['keel']:.3f} | "
              f"{lo['unpatched'] / lo['keel']:.3f} | {lt:.7f} | {lk:.7f} | {rel:.1e} |")
    print(f"\nThe norms' share. keel ops in the compiled code: calls to torch.ops.keel.* in Inductor's generated "
          f"forward and backward (expected {n} each). In the graph: self CPU time of keel::* under torch.profiler, "
          f"{PROFILE_STEPS} steps of the compiled patched model, over those steps' wall time. Eager: {n} LayerNorm "
          f"forward + backward calls at {args.batch * args.seq}x{args.width}, torch's and keel's, over the "
          f"median step of the unpatched and the patched model (an estimate: Inductor fuses torch's norms into "
          f"its own kernels, which are not separately timed).\n")
    print("| dtype | norm input dtype | keel ops in the compiled code | keel in the graph ms / step | share "
          "| eager torch norms ms | share of unpatched step | eager keel norms ms | share of keel step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        calls = ", ".join(f"{name} {count}" for name, count in sorted(r["calls"].items())) or "none"
        med, eager = r["median"], r["eager"]
        print(f"| {r['dtype']} | {r['norm_dtype']} | {calls} | "
              f"{r['in_graph'] * 1e3:.1f} | {r['in_graph'] / r['profiled_step']:.1%} | "
              f"{eager['torch'] * 1e3:.1f} | {eager['torch'] / med['unpatched']:.1%} | "
              f"{eager['keel'] * 1e3:.1f} | {eager['keel'] / med['keel']:.1%} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1: the compilation)")
    ap.add_argument("--dtype", choices=DTYPES + ("both",), default="both")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    keel.set_num_threads(args.threads)
    results = [_run(args, dtype) for dtype in (DTYPES if args.dtype == "both" else (args.dtype,))]
    if args.markdown:
        _markdown(args, results)


if __name__ == "__main__":
    main()
