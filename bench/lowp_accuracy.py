#!/usr/bin/env python3
"""Accuracy of low-precision LayerNorm: keel against PyTorch (CPU) on the same inputs.

For bf16 and fp16 tensors (x, y, dy, dx), on a few shapes and kinds of rows (random, a large
mean, fp16 values near 65504), both libraries get the same stored inputs and the same parameter
values (gamma and beta rounded to the dtype, so both see identical numbers). The reference is
the float64 LayerNorm computed from those stored values (two-pass mean and variance, the centred
backward dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dgamma = sum dy * xhat,
dbeta = sum dy).

Error: the largest |got - ref| over a tensor, in ulps of the dtype (its spacing at |ref|); an
element smaller than 1/256 of its row's largest |ref| is measured at that 1/256 instead, so that
the cancellation of y = xhat * gamma + beta (or of dx) near 0 does not decide the number. For
dgamma/dbeta the "row" is the whole vector. keel writes dgamma/dbeta in float32; they are
measured in ulps of the tensors' dtype like the others (so ~0 means: far inside one ulp).

PyTorch is run twice: with gamma/beta in the tensors' dtype (an all-bf16/fp16 model: its
dgamma/dbeta come back in that dtype) and with float32 gamma/beta (mixed precision: float32
dgamma/dbeta).

keel is loaded through ctypes from build/libkeel.so (--lib or KEEL_LIB to change it).
Usage: python3 bench/lowp_accuracy.py [--lib PATH] [--seed N]
"""
import argparse
import ctypes
import math
import os
import sys

import torch

KEEL_F32, KEEL_BF16, KEEL_F16 = 0, 1, 2


class KeelTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("stride", ctypes.c_size_t)]


def load_keel(path):
    lib = ctypes.CDLL(path)
    vp, sz, f, u = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_float, ctypes.c_uint
    lib.keel_ctx_create.argtypes = [ctypes.POINTER(vp), ctypes.c_int]
    lib.keel_ctx_create.restype = ctypes.c_int
    lib.keel_ctx_destroy.argtypes = [vp]
    lib.keel_ctx_destroy.restype = None
    lib.keel_last_error.restype = ctypes.c_char_p
    lib.keel_version_string.restype = ctypes.c_char_p
    lib.keel_layernorm_fwd.argtypes = [vp, sz, sz, KeelTensor, KeelTensor, vp, vp, f, vp, vp, u]
    lib.keel_layernorm_fwd.restype = ctypes.c_int
    lib.keel_layernorm_bwd.argtypes = [vp, sz, sz, KeelTensor, KeelTensor, vp, vp, vp, f,
                                       KeelTensor, vp, vp, u]
    lib.keel_layernorm_bwd.restype = ctypes.c_int
    return lib


def ktensor(t, dtype):
    assert t.is_contiguous() and t.dim() == 2
    return KeelTensor(t.data_ptr(), dtype, t.shape[1])


def check(lib, status, what):
    if status != 0:
        raise RuntimeError("%s: status %d: %s" % (what, status, lib.keel_last_error().decode()))


def keel_layernorm(lib, ctx, x, dy, gamma, beta, eps):
    """Forward (y, saved mean/rstd) then backward (dx, dgamma, dbeta), tensors in x's dtype."""
    rows, dim = x.shape
    kd = {torch.bfloat16: KEEL_BF16, torch.float16: KEEL_F16}[x.dtype]
    y = torch.empty_like(x)
    dx = torch.empty_like(x)
    mean = torch.empty(rows, dtype=torch.float32)
    rstd = torch.empty(rows, dtype=torch.float32)
    dgamma = torch.empty(dim, dtype=torch.float32)
    dbeta = torch.empty(dim, dtype=torch.float32)
    check(lib, lib.keel_layernorm_fwd(ctx, rows, dim, ktensor(x, kd), ktensor(y, kd), gamma.data_ptr(),
                                      beta.data_ptr(), eps, mean.data_ptr(), rstd.data_ptr(), 0),
          "keel_layernorm_fwd")
    check(lib, lib.keel_layernorm_bwd(ctx, rows, dim, ktensor(dy, kd), ktensor(x, kd), mean.data_ptr(),
                                      rstd.data_ptr(), gamma.data_ptr(), eps, ktensor(dx, kd),
                                      dgamma.data_ptr(), dbeta.data_ptr(), 0),
          "keel_layernorm_bwd")
    return y, dx, dgamma, dbeta


def torch_layernorm(x, dy, gamma, beta, eps, param_dtype):
    xg = x.clone().requires_grad_()
    w = gamma.to(param_dtype).clone().requires_grad_()
    b = beta.to(param_dtype).clone().requires_grad_()
    y = torch.nn.functional.layer_norm(xg, (x.shape[1],), w, b, eps)
    y.backward(dy)
    return y.detach(), xg.grad, w.grad, b.grad


def reference(x, dy, gamma, beta, eps):
    """float64 LayerNorm forward and centred backward of the stored values."""
    x, dy, g64, b64 = x.double(), dy.double(), gamma.double(), beta.double()
    mean = x.mean(dim=1, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(dim=1, keepdim=True)
    rstd = 1.0 / torch.sqrt(var + float(torch.tensor(eps, dtype=torch.float32)))
    xhat = xc * rstd
    y = xhat * g64 + b64
    g = dy * g64
    dx = rstd * (g - g.mean(dim=1, keepdim=True) - xhat * (g * xhat).mean(dim=1, keepdim=True))
    return y, dx, (dy * xhat).sum(dim=0), dy.sum(dim=0)


def spacing(dtype, m):
    """The dtype's spacing at magnitudes m (a float64 tensor)."""
    bits = {torch.bfloat16: 7, torch.float16: 10}[dtype]
    smallest = {torch.bfloat16: 2.0 ** -133, torch.float16: 2.0 ** -24}[dtype]
    e = torch.floor(torch.log2(m.clamp(min=1e-300)))
    return torch.maximum(torch.pow(2.0, e - bits), torch.full_like(m, smallest))


def err_ulps(got, ref, dtype):
    """(elementwise, of the row): the largest |got - ref| in ulps of dtype at max(|ref|, 1/256 of
    the row's largest |ref|), and in ulps of dtype at the row's largest |ref|."""
    got, ref = got.double(), ref.double()
    if ref.dim() == 1:
        got, ref = got[None, :], ref[None, :]
    if torch.isnan(got).any() or torch.isinf(got).any():
        bad = float("nan") if torch.isnan(got).any() else float("inf")
        return bad, bad
    row_max = ref.abs().amax(dim=1, keepdim=True)
    m = torch.maximum(ref.abs(), row_max / 256)
    err = (got - ref).abs()
    return float((err / spacing(dtype, m)).max()), float((err / spacing(dtype, row_max)).max())


def make_case(kind, rows, dim, dtype, gen):
    if kind == "normal":
        x = torch.randn(rows, dim, generator=gen, dtype=torch.float64)
    elif kind.startswith("mean "):  # "mean 100": a large mean, unit spread
        x = float(kind.split()[1]) + torch.randn(rows, dim, generator=gen, dtype=torch.float64)
    elif kind == "near 65504":  # fp16 values whose squares overflow fp16
        sign = torch.where(torch.rand(rows, dim, generator=gen) < 0.5, -1.0, 1.0).double()
        x = sign * (60000.0 + 5504.0 * torch.rand(rows, dim, generator=gen, dtype=torch.float64))
    else:
        raise ValueError(kind)
    dy = torch.randn(rows, dim, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(dim, generator=gen) < 0.5, -1.0, 1.0).double()
    gamma = (sign * (0.5 + 1.5 * torch.rand(dim, generator=gen, dtype=torch.float64))).to(dtype)
    beta = (0.5 * torch.rand(dim, generator=gen, dtype=torch.float64) - 0.25).to(dtype)
    return (x.to(dtype).contiguous(), dy.to(dtype).contiguous(),
            gamma.float().contiguous(), beta.float().contiguous())


CASES = [("normal", 64, 768), ("normal", 8, 4096), ("mean 100", 64, 768), ("mean 1000", 64, 768),
         ("near 65504", 64, 768)]


def fmt1(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf"
    return "%.3g" % v


def fmt(pair):
    return "%s / %s" % (fmt1(pair[0]), fmt1(pair[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default=os.environ.get("KEEL_LIB", "build/libkeel.so"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eps", type=float, default=1e-5)
    args = ap.parse_args()
    lib = load_keel(args.lib)
    ctx = ctypes.c_void_p()
    check(lib, lib.keel_ctx_create(ctypes.byref(ctx), 0), "keel_ctx_create")
    gen = torch.Generator().manual_seed(args.seed)

    print("keel %s (%s) vs PyTorch %s, CPU, %d threads; eps %g; seed %d" % (
        lib.keel_version_string().decode(), args.lib, torch.__version__, torch.get_num_threads(),
        args.eps, args.seed))
    print("max error in ulps of the dtype, 'elementwise / of the row': elementwise = at each reference")
    print("value (elements under 1/256 of their row's largest |ref| measured at that 1/256); of the row =")
    print("at the row's largest |ref| (for dgamma/dbeta the row is the whole vector)")
    print()
    print("| dtype | rows x dim, x | output | keel | PyTorch, params in dtype | PyTorch, float32 params |")
    print("|---|---|---|---|---|---|")
    for dtype, dname in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        for kind, rows, dim in CASES:
            if kind == "near 65504" and dtype != torch.float16:
                continue
            x, dy, gamma, beta = make_case(kind, rows, dim, dtype, gen)
            ref = reference(x, dy, gamma, beta, args.eps)
            got = {"keel": keel_layernorm(lib, ctx, x, dy, gamma, beta, args.eps),
                   "torch": torch_layernorm(x, dy, gamma, beta, args.eps, dtype),
                   "torch32": torch_layernorm(x, dy, gamma, beta, args.eps, torch.float32)}
            for i, out in enumerate(("y", "dx", "dgamma", "dbeta")):
                cells = [fmt(err_ulps(got[k][i], ref[i], dtype)) for k in ("keel", "torch", "torch32")]
                print("| %s | %d x %d, %s | %s | %s |" % (dname, rows, dim, kind, out, " | ".join(cells)))
    lib.keel_ctx_destroy(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
