#!/usr/bin/env python3
"""Python binding benchmarks; prints Markdown tables.

1. Per-call overhead on a 1x64 LayerNorm: the C call alone (a small C loop, compiled here with
   cc against the same libkeel), a bare ctypes call, keel.layer_norm (NumPy), keel.rms_norm,
   keel.add_layer_norm, keel.torch's layer_norm, and torch's own F.layer_norm. Times are the
   calling thread's CPU time (keel runs on 1 thread, in the caller), the best of 5 runs: on a
   machine busy with other work, wall-clock time would count the time other processes ran.
2. keel.torch.LayerNorm / RMSNorm against torch.nn's, forward and forward+backward, CPU float32,
   1 thread each (torch.set_num_threads(1), keel.set_num_threads(1)); keel.torch.AddLayerNorm /
   AddRMSNorm (the fused pre-norm add) against torch's two lines h = x + branch; y = norm(h).

Run from the repository: KEEL_LIBRARY=build/libkeel.so python3 bench/python_bench.py [--quick]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402

import keel  # noqa: E402
from keel import _context, _lib  # noqa: E402

C_LOOP = r"""
#define _POSIX_C_SOURCE 199309L
#include <keel.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    float x[64], y[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i;
    keel_ctx *ctx;
    if (keel_ctx_create(&ctx, 1) != KEEL_OK) return 1;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        for (long i = 0; i < n; i++)
            keel_layernorm_fwd(ctx, 1, 64, keel_f32(x, 64), keel_f32(y, 64), NULL, NULL, 1e-5f, NULL, NULL, 0);
        double t = (now() - t0) / n;
        if (t < best) best = t;
    }
    printf("%.6g\n", best * 1e6);
    keel_ctx_destroy(ctx);
    return 0;
}
"""


def best_us(fn, number, repeat=5):
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.thread_time)) / number * 1e6


def c_call_us(n):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "loop.c"), os.path.join(tmp, "loop")
        with open(src, "w") as f:
            f.write(C_LOOP)
        lib = _lib.path
        try:
            subprocess.check_call([cc, "-O2", "-std=c11", "-I", os.path.join(ROOT, "include"), src, lib,
                                   "-Wl,-rpath," + os.path.dirname(lib), "-o", exe])
        except subprocess.CalledProcessError:
            return None
        return float(subprocess.check_output([exe, str(n)]).decode())


def overhead_table(n, torch):
    keel.set_num_threads(1)
    x = np.arange(64, dtype=np.float32).reshape(1, 64)
    r = np.ones((1, 64), np.float32)
    w, b = np.ones(64, np.float32), np.zeros(64, np.float32)
    y = np.empty_like(x)
    tx, ty = _lib.Tensor(x.ctypes.data, 0, 64), _lib.Tensor(y.ctypes.data, 0, 64)
    handle, fn = _context.default().handle, _lib.lib.keel_layernorm_fwd
    calls = [
        ("ctypes: the bare call, arguments prebuilt",
         lambda: fn(handle, 1, 64, tx, ty, None, None, 1e-5, None, None, 0)),
        ("keel.layer_norm(x, 64)", lambda: keel.layer_norm(x, 64)),
        ("keel.layer_norm(x, 64, w, b)", lambda: keel.layer_norm(x, 64, w, b)),
        ("keel.layer_norm(x, 64, w, b, return_stats=True)",
         lambda: keel.layer_norm(x, 64, w, b, return_stats=True)),
        ("keel.layer_norm_backward(x, x, 64, w, mean, rstd)",
         lambda: keel.layer_norm_backward(x, x, 64, w, mean, rstd)),
        ("keel.rms_norm(x, 64, w)", lambda: keel.rms_norm(x, 64, w)),
        ("keel.add_layer_norm(x, r, 64, w, b) -> (y, h)", lambda: keel.add_layer_norm(x, r, 64, w, b)),
    ]
    _, mean, rstd = keel.layer_norm(x, 64, w, b, return_stats=True)
    if torch is not None:
        import keel.torch as kt
        tt = torch.from_numpy(x.copy())
        tw, tb = torch.ones(64), torch.zeros(64)
        calls += [
            ("keel.torch.layer_norm(t, (64,), w, b), no_grad", lambda: kt.layer_norm(tt, (64,), tw, tb)),
            ("torch F.layer_norm(t, (64,), w, b), no_grad",
             lambda: torch.nn.functional.layer_norm(tt, (64,), tw, tb)),
        ]
    rows = [("C: keel_layernorm_fwd (no Python)", c_call_us(n * 10))]
    with torch.no_grad() if torch is not None else contextlib.nullcontext():
        rows += [(name, best_us(call, n)) for name, call in calls]
    base = rows[0][1]
    print("### Per-call overhead: LayerNorm forward on 1x64, 1 thread (CPU time of the calling thread)\n")
    print("| call | µs per call | over the C call |")
    print("|---|---:|---:|")
    for name, us in rows:
        if us is None:
            print(f"| {name} | (no C compiler) | |")
        else:
            extra = f"+{us - base:.2f} µs" if base is not None and not name.startswith("C:") else ""
            print(f"| {name} | {us:.2f} | {extra} |")
    print()


def median_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def module_table(torch, shapes, reps):
    import keel.torch as kt
    torch.set_num_threads(1)
    keel.set_num_threads(1)
    print(f"### keel.torch vs torch.nn, CPU float32, 1 thread (median of {reps}, ms)\n")
    print("| module | rows x dim | torch fwd | keel fwd | speedup | torch fwd+bwd | keel fwd+bwd | speedup |"
          .replace(" speedup", " torch/keel"))
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    modules = [("LayerNorm", kt.LayerNorm, torch.nn.LayerNorm), ("RMSNorm", kt.RMSNorm, torch.nn.RMSNorm)]
    for name, ours, theirs in modules:
        for rows, dim in shapes:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(rows, dim, generator=g).requires_grad_(True)
            dy = torch.randn(rows, dim, generator=g)
            result = []
            for cls in (theirs, ours):
                m = cls(dim)

                def fwd():
                    with torch.no_grad():
                        m(x)

                def fwd_bwd():
                    x.grad = None
                    m.zero_grad(set_to_none=True)
                    m(x).backward(dy)

                result.append((median_ms(fwd, reps), median_ms(fwd_bwd, reps)))
            (tf, tfb), (kf, kfb) = result
            print(f"| {name} | {rows}x{dim} | {tf:.2f} | {kf:.2f} | {tf / kf:.2f}x "
                  f"| {tfb:.2f} | {kfb:.2f} | {tfb / kfb:.2f}x |")
    fused_rows(torch, kt, shapes, reps)
    print()


class _TwoLines:
    """torch's pre-norm hot path as written in a model: h = x + branch; y = norm(h)."""

    def __init__(self, norm):
        self.norm = norm

    def __call__(self, x, branch):
        h = x + branch
        return self.norm(h), h


def fused_rows(torch, kt, shapes, reps):
    """keel.torch.AddLayerNorm / AddRMSNorm (one fused call) against torch's two lines; the
    backward takes gradients of both y and h."""
    pairs = [("AddLayerNorm", kt.AddLayerNorm, torch.nn.LayerNorm),
             ("AddRMSNorm", kt.AddRMSNorm, torch.nn.RMSNorm)]
    for name, ours, norm in pairs:
        for rows, dim in shapes:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(rows, dim, generator=g).requires_grad_(True)
            b = torch.randn(rows, dim, generator=g).requires_grad_(True)
            dy, dh = torch.randn(rows, dim, generator=g), torch.randn(rows, dim, generator=g)
            result = []
            for m in (_TwoLines(norm(dim)), ours(dim)):
                mod = m.norm if isinstance(m, _TwoLines) else m

                def fwd():
                    with torch.no_grad():
                        m(x, b)

                def fwd_bwd():
                    x.grad = b.grad = None
                    mod.zero_grad(set_to_none=True)
                    y, h = m(x, b)
                    torch.autograd.backward((y, h), (dy, dh))

                result.append((median_ms(fwd, reps), median_ms(fwd_bwd, reps)))
            (tf, tfb), (kf, kfb) = result
            print(f"| {name} (x + branch, then the norm) | {rows}x{dim} | {tf:.2f} | {kf:.2f} | "
                  f"{tf / kf:.2f}x | {tfb:.2f} | {kfb:.2f} | {tfb / kfb:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    print(f"keel {keel.__version__} ({keel.library_path}), isa {keel.isa()}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed") + "\n")
    overhead_table(2000 if args.quick else 20000, torch)
    if torch is not None:
        module_table(torch, [(4096, 768), (4096, 4096)], 5 if args.quick else 15)


if __name__ == "__main__":
    main()
