"""keel.torch beside torch, per call, on one thread: LayerNorm and RMSNorm (--ops norms), or DyT,
the fused LayerScale update and BatchNorm (--ops layers), forward and forward + backward, from the
decode step (1 x width) to a training batch (4096 x 768), float32.

Each case times torch's function and keel.torch's in turn (torch.utils.benchmark's
blocked_autorange), ROUNDS times alternating, and prints the median time per call of each and
torch / keel (> 1: keel faster). Forward + backward is `f(x).backward(dy)` with x, weight and
bias requiring gradients (autograd's own cost included, as a training step pays it).

torch's side of the layers: DyT's formula w * tanh(a * x) + b, LayerScale's x + g * f,
torch.nn.BatchNorm1d's F.batch_norm on (rows, width) in training (inference on one row, where
training has no variance).

    python3 bench/torch_per_call.py [--ops norms|layers|all] [--rounds N] [--markdown]
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.benchmark as tb  # noqa: E402

import keel  # noqa: E402
import keel.torch as kt  # noqa: E402
import keel.torch_layers as kl  # noqa: E402

SHAPES = [(1, 768), (1, 4096), (32, 4096), (4096, 768)]


def _time(fn):
    return tb.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median


def _cases(rows, dim):
    """(name, torch's callable, keel's callable) for one shape."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=g)
    w, b, dy = torch.randn(dim, generator=g), torch.randn(dim, generator=g), torch.randn(rows, dim, generator=g)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))
    shape = (dim,)
    return [
        ("LayerNorm fwd", lambda: F.layer_norm(x, shape, w, b), lambda: kt.layer_norm(x, shape, w, b)),
        ("LayerNorm fwd+bwd", lambda: F.layer_norm(xg, shape, wg, bg).backward(dy),
         lambda: kt.layer_norm(xg, shape, wg, bg).backward(dy)),
        ("RMSNorm fwd", lambda: F.rms_norm(x, shape, w, 1e-6), lambda: kt.rms_norm(x, shape, w, 1e-6)),
        ("RMSNorm fwd+bwd", lambda: F.rms_norm(xg, shape, wg, 1e-6).backward(dy),
         lambda: kt.rms_norm(xg, shape, wg, 1e-6).backward(dy)),
    ]


def _layer_cases(rows, dim):
    """(name, torch's callable, keel's callable) of DyT, LayerScale and BatchNorm for one shape."""
    g = torch.Generator().manual_seed(0)
    x, f, dy = (torch.randn(rows, dim, generator=g) for _ in range(3))
    w, b, gamma = (torch.randn(dim, generator=g) for _ in range(3))
    a = torch.tensor([0.5])
    xg, fg, wg, bg, gg, ag = (t.clone().requires_grad_(True) for t in (x, f, w, b, gamma, a))
    train = rows > 1  # one row: BatchNorm in inference
    rm, rv = torch.zeros(dim), torch.ones(dim)
    rm_k, rv_k = rm.clone(), rv.clone()
    return [
        ("DyT fwd", lambda: w * torch.tanh(a * x) + b, lambda: kl.dyt(x, dim, a, w, b)),
        ("DyT fwd+bwd", lambda: (wg * torch.tanh(ag * xg) + bg).backward(dy),
         lambda: kl.dyt(xg, dim, ag, wg, bg).backward(dy)),
        ("LayerScale fwd", lambda: x + gamma * f, lambda: kl.layer_scale(x, f, gamma)),
        ("LayerScale fwd+bwd", lambda: (xg + gg * fg).backward(dy), lambda: kl.layer_scale(xg, fg, gg).backward(dy)),
        ("BatchNorm fwd", lambda: F.batch_norm(x, rm, rv, w, b, train),
         lambda: kl.batch_norm(x, rm_k, rv_k, w, b, train)),
        ("BatchNorm fwd+bwd", lambda: F.batch_norm(xg, rm, rv, wg, bg, train).backward(dy),
         lambda: kl.batch_norm(xg, rm_k, rv_k, wg, bg, train).backward(dy)),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", choices=("norms", "layers", "all"), default="norms")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keel.set_num_threads(1)
    rows_out = []
    for rows, dim in SHAPES:
        cases = (_cases(rows, dim) if args.ops != "layers" else []) + \
            (_layer_cases(rows, dim) if args.ops != "norms" else [])
        for name, theirs, mine in cases:
            t_torch, t_keel = [], []
            for _ in range(args.rounds):
                t_torch.append(_time(theirs))
                t_keel.append(_time(mine))
            a, k = statistics.median(t_torch) * 1e6, statistics.median(t_keel) * 1e6
            rows_out.append((name, f"{rows}x{dim}", a, k))
            print(f"{name:18} {rows}x{dim:<6} torch {a:9.1f} us   keel {k:9.1f} us   torch/keel {a / k:5.2f}",
                  file=sys.stderr, flush=True)
    if args.markdown:
        print(f"torch {torch.__version__}, 1 thread, median of {args.rounds} alternating rounds; "
              "torch / keel > 1: keel faster.\n")
        print("| op | shape | torch us | keel us | torch / keel |")
        print("|---|---|---|---|---|")
        for name, shape, a, k in rows_out:
            print(f"| {name} | {shape} | {a:.1f} | {k:.1f} | {a / k:.2f} |")


if __name__ == "__main__":
    main()
