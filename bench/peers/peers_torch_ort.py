#!/usr/bin/env python3
"""Peer benchmark: PyTorch and ONNX Runtime LayerNorm / RMSNorm on the cases of `keel bench`.

Usage: peers_torch_ort.py --peer torch|ort --threads N [--quick] [--dtype f32|bf16|f16|i8|lowp]

--dtype (default f32) picks the rows, named as `keel bench --dtype ...` names them: bf16/f16 run
LayerNorm and RMSNorm forward and backward with x, y, dy, dx in that dtype and the parameters
(gamma, beta, their gradients) in float32, as keel does ("layernorm fwd bf16", ...); bytes at 2 an
element. i8 runs the int8-output forwards ("layernorm fwd f32>i8 dyn", ...): x in f32 or bf16, the
norm, then the quantization to int8 written with torch ops (PyTorch has no fused kernel), dynamic
per-row scale max|y|/127 or a static scale; bytes: x, 1 byte of y, 4 bytes of scale a row (dyn).
lowp = bf16, f16 and i8. The low-precision references are computed in float64 from the stored
(rounded) inputs.

Prints Markdown table rows (no header) on stdout:
    | peer | op | rows x dim | us | GB/s | check (max rel err) |
Progress goes to stderr. Every output is checked against a float64 numpy reference before it is
timed; the check is the worst, over rows, of max|out - ref| / max|ref| of that row (dgamma and
dbeta count as one row each). Bytes per op are those of keel bench: forward 2 * rows * dim * 4,
backward 3 * rows * dim * 4. Times are medians of repeated runs after a warm-up.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

CASES = [(4096, 16), (4096, 64), (256, 1024), (4096, 768), (4096, 1024),
         (4096, 4096), (1024, 8192), (16384, 8192)]
QUICK_CASES = [(4096, 768)]
EPS = 1e-5
# A float32 result is expected within a few ulps of the row's largest value; the parameter
# gradients are sums over all rows, so they get more room.
TOL_FWD = 1e-5
TOL_BWD = 1e-4
BIG_ELEMS = 1 << 26          # >= 256 MiB per tensor: fewer repetitions
TIME_BUDGET_S = 0.3          # per measurement series (small cases)
MAX_REPS = 200
MIN_REPS = 7
MIN_REPS_BIG = 3


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def row(peer, op, shape, us=None, gbs=None, check=""):
    us_s = "-" if us is None else f"{us:.1f}"
    gb_s = "-" if gbs is None else f"{gbs:.1f}"
    print(f"| {peer} | {op} | {shape} | {us_s} | {gb_s} | {check} |", flush=True)


def shape_str(rows, dim):
    return f"{rows}x{dim}"


def op_bytes(op, rows, dim, esize=4):
    n = rows * dim * esize
    return 3 * n if op.endswith("bwd") else 2 * n


# the low-precision rows: the dtype's epsilon (one ulp at 1) bounds the forward's error relative
# to the row's largest value (twice what the output's rounding alone costs); the backward gets 4.
LP_EPS = {"bf16": 2.0 ** -7, "f16": 2.0 ** -10}
I8_STATIC_SCALE = 3.0 / 127  # keel bench's static scale: |y| < 3 for these inputs
I8_OPS = ("layernorm fwd {}>i8 dyn", "layernorm fwd {}>i8 static", "rmsnorm fwd {}>i8 dyn",
          "rmsnorm fwd {}>i8 static")


def i8_bytes(rows, dim, in_size, dyn):
    return rows * dim * (in_size + 1) + (rows * 4 if dyn else 0)


def ref_ln_y(x, g, b):
    xx = x.astype(np.float64)
    mu = xx.mean(axis=1, keepdims=True)
    xc = xx - mu
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + EPS)
    return xc * rstd * g.astype(np.float64) + b.astype(np.float64)


def ref_rms_y(x, g):
    xx = x.astype(np.float64)
    r = 1.0 / np.sqrt((xx * xx).mean(axis=1, keepdims=True) + EPS)
    return xx * r * g.astype(np.float64)


def i8_err_steps(x, q, scale, ref_fn):
    """max |q * s - y_ref| in quantization steps s (0.5: exact rounding of the true y); scale:
    the per-row scales (rows,) or one float. A NaN scale or value gives inf."""
    worst = 0.0
    for s in chunks(*x.shape):
        ref = ref_fn(x[s])
        sc = scale[s][:, None].astype(np.float64) if isinstance(scale, np.ndarray) else float(scale)
        e = np.abs(q[s].astype(np.float64) * sc - ref) / sc
        if np.any(np.isnan(e)):
            return float("inf")
        worst = max(worst, float(np.max(e)))
    return worst


def time_op(fn, big):
    """Median wall time of fn() in seconds. fn has already run once (the checked run)."""
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter() - t0
    lo = MIN_REPS_BIG if big else MIN_REPS
    reps = int(TIME_BUDGET_S / t1) if t1 > 0 else MAX_REPS
    reps = max(lo, min(MAX_REPS, reps))
    if big:
        reps = lo
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ---------------------------------------------------------------- float64 references, by chunk
def chunks(rows, dim):
    step = max(1, (1 << 22) // dim)
    for r0 in range(0, rows, step):
        yield slice(r0, min(rows, r0 + step))


def rel_err_rows(out, ref):
    """max over rows of max|out - ref| / max|ref| (a row of zeros in ref: absolute error)."""
    err = np.max(np.abs(out.astype(np.float64) - ref), axis=-1)
    scale = np.max(np.abs(ref), axis=-1)
    scale = np.where(scale > 0, scale, 1.0)
    e = err / scale
    if np.any(np.isnan(e)):
        return float("inf")
    return float(np.max(e))


def ref_ln_fwd_err(x, g, b, y):
    worst = 0.0
    g64, b64 = g.astype(np.float64), b.astype(np.float64)
    for s in chunks(*x.shape):
        xx = x[s].astype(np.float64)
        mu = xx.mean(axis=1, keepdims=True)
        xc = xx - mu
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + EPS)
        ref = xc * rstd * g64 + b64
        worst = max(worst, rel_err_rows(y[s], ref))
    return worst


def ref_rms_fwd_err(x, g, y):
    worst = 0.0
    g64 = g.astype(np.float64)
    for s in chunks(*x.shape):
        xx = x[s].astype(np.float64)
        r = 1.0 / np.sqrt((xx * xx).mean(axis=1, keepdims=True) + EPS)
        ref = xx * r * g64
        worst = max(worst, rel_err_rows(y[s], ref))
    return worst


def ref_ln_bwd_err(x, dy, g, dx, dg, db):
    worst_dx = 0.0
    g64 = g.astype(np.float64)
    dg_ref = np.zeros(x.shape[1])
    db_ref = np.zeros(x.shape[1])
    for s in chunks(*x.shape):
        xx = x[s].astype(np.float64)
        d = dy[s].astype(np.float64)
        mu = xx.mean(axis=1, keepdims=True)
        xc = xx - mu
        rstd = 1.0 / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + EPS)
        xhat = xc * rstd
        gd = d * g64
        ref = rstd * (gd - gd.mean(axis=1, keepdims=True) - xhat * (gd * xhat).mean(axis=1, keepdims=True))
        worst_dx = max(worst_dx, rel_err_rows(dx[s], ref))
        dg_ref += (d * xhat).sum(axis=0)
        db_ref += d.sum(axis=0)
    e_dg = rel_err_rows(dg[None, :], dg_ref[None, :])
    e_db = rel_err_rows(db[None, :], db_ref[None, :])
    return worst_dx, e_dg, e_db


def ref_rms_bwd_err(x, dy, g, dx, dg):
    worst_dx = 0.0
    g64 = g.astype(np.float64)
    dg_ref = np.zeros(x.shape[1])
    for s in chunks(*x.shape):
        xx = x[s].astype(np.float64)
        d = dy[s].astype(np.float64)
        r = 1.0 / np.sqrt((xx * xx).mean(axis=1, keepdims=True) + EPS)
        xhat = xx * r
        gd = d * g64
        ref = r * (gd - xhat * (gd * xhat).mean(axis=1, keepdims=True))
        worst_dx = max(worst_dx, rel_err_rows(dx[s], ref))
        dg_ref += (d * xhat).sum(axis=0)
    e_dg = rel_err_rows(dg[None, :], dg_ref[None, :])
    return worst_dx, e_dg


def check_str(errs, tol):
    """errs: dict name -> error. 'ok 1.2e-07' or 'FAIL 3.4e-02 (dx)'."""
    worst_name = max(errs, key=lambda k: errs[k])
    worst = errs[worst_name]
    detail = ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) if len(errs) > 1 else ""
    if not (worst <= tol):
        return f"FAIL {worst:.1e}" + (f" ({detail})" if detail else "")
    return f"ok {worst:.1e}" + (f" ({detail})" if detail else "")


def make_data(rows, dim, seed=42):
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, dim), dtype=np.float32) * 2.0 - 1.0).astype(np.float32, copy=False)
    dy = (rng.random((rows, dim), dtype=np.float32) * 2.0 - 1.0).astype(np.float32, copy=False)
    g = (rng.random(dim, dtype=np.float32) * 2.0 - 1.0).astype(np.float32)
    b = (rng.random(dim, dtype=np.float32) * 2.0 - 1.0).astype(np.float32)
    return x, dy, g, b


# ---------------------------------------------------------------- PyTorch
def run_torch(threads, cases):
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        for op in ("layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd"):
            row("PyTorch", op, "all", check=f"not run: import torch failed: {type(e).__name__}: {e}")
        return
    torch.set_num_threads(threads)
    peer = f"PyTorch {torch.__version__.split('+')[0]}"
    have_rms = hasattr(torch.nn, "RMSNorm")
    log(f"[torch] {torch.__version__}, {torch.get_num_threads()} thread(s), nn.RMSNorm: {have_rms}, "
        f"backend: {torch.__config__.parallel_info().splitlines()[-1].strip()}")
    rms_label = "" if have_rms else " (expression)"
    for rows, dim in cases:
        shape = shape_str(rows, dim)
        big = rows * dim >= BIG_ELEMS
        x_np, dy_np, g_np, b_np = make_data(rows, dim)
        x = torch.from_numpy(x_np)
        dy = torch.from_numpy(dy_np)
        g = torch.from_numpy(g_np)
        b = torch.from_numpy(b_np)

        # LayerNorm forward (inference: no autograd graph)
        def ln_fwd():
            with torch.no_grad():
                return F.layer_norm(x, (dim,), g, b, EPS)
        op = "layernorm fwd"
        y = ln_fwd()
        err = ref_ln_fwd_err(x_np, g_np, b_np, y.numpy())
        del y
        t = time_op(ln_fwd, big)
        row(peer, op, shape, t * 1e6, op_bytes(op, rows, dim) / t / 1e9, check_str({"y": err}, TOL_FWD))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err {err:.2e}")

        # LayerNorm backward: autograd.grad through a retained graph, dy given
        op = "layernorm bwd"
        xg = x.clone().requires_grad_(True)
        gg = g.clone().requires_grad_(True)
        bg = b.clone().requires_grad_(True)
        yg = F.layer_norm(xg, (dim,), gg, bg, EPS)

        def ln_bwd():
            return torch.autograd.grad(yg, (xg, gg, bg), dy, retain_graph=True)
        dx, dgm, dbt = ln_bwd()
        e_dx, e_dg, e_db = ref_ln_bwd_err(x_np, dy_np, g_np, dx.numpy(), dgm.numpy(), dbt.numpy())
        del dx, dgm, dbt
        t = time_op(ln_bwd, big)
        row(peer, op, shape, t * 1e6, op_bytes(op, rows, dim) / t / 1e9,
            check_str({"dx": e_dx, "dgamma": e_dg, "dbeta": e_db}, TOL_BWD))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err dx {e_dx:.2e} dg {e_dg:.2e} db {e_db:.2e}")
        del yg, xg, gg, bg

        # RMSNorm
        if have_rms:
            m = torch.nn.RMSNorm(dim, eps=EPS, elementwise_affine=True)
            with torch.no_grad():
                m.weight.copy_(g)

            def rms_f(inp):
                return m(inp)
        else:
            wparam = g.clone().requires_grad_(True)

            def rms_f(inp):
                return inp * torch.rsqrt(inp.pow(2).mean(-1, keepdim=True) + EPS) * wparam
        op = "rmsnorm fwd"

        def rms_fwd():
            with torch.no_grad():
                return rms_f(x)
        y = rms_fwd()
        err = ref_rms_fwd_err(x_np, g_np, y.numpy())
        del y
        t = time_op(rms_fwd, big)
        row(peer + rms_label, op, shape, t * 1e6, op_bytes(op, rows, dim) / t / 1e9,
            check_str({"y": err}, TOL_FWD))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err {err:.2e}")

        op = "rmsnorm bwd"
        xg = x.clone().requires_grad_(True)
        yg = rms_f(xg)
        wp = m.weight if have_rms else wparam

        def rms_bwd():
            return torch.autograd.grad(yg, (xg, wp), dy, retain_graph=True)
        dx, dgm = rms_bwd()
        e_dx, e_dg = ref_rms_bwd_err(x_np, dy_np, g_np, dx.numpy(), dgm.numpy())
        del dx, dgm
        t = time_op(rms_bwd, big)
        row(peer + rms_label, op, shape, t * 1e6, op_bytes(op, rows, dim) / t / 1e9,
            check_str({"dx": e_dx, "dgamma": e_dg}, TOL_BWD))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err dx {e_dx:.2e} dg {e_dg:.2e}")
        del yg, xg, x, dy, g, b, x_np, dy_np


def torch_or_rows(ops):
    try:
        import torch
        import torch.nn.functional as F
        return torch, F
    except Exception as e:  # noqa: BLE001
        for op in ops:
            row("PyTorch", op, "all", check=f"not run: import torch failed: {type(e).__name__}: {e}")
        return None, None


def run_torch_lp(threads, cases, dt_name):
    """bf16 / f16 LayerNorm and RMSNorm, forward and backward; parameters in float32."""
    ops = [f"{o} {dt_name}" for o in ("layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd")]
    torch, F = torch_or_rows(ops)
    if torch is None:
        return
    import warnings
    # nn.RMSNorm with a float32 weight on a bf16/f16 input warns that it takes the composite path
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    torch.set_num_threads(threads)
    tdt = torch.bfloat16 if dt_name == "bf16" else torch.float16
    peer = f"PyTorch {torch.__version__.split('+')[0]}"
    tol_f, tol_b = LP_EPS[dt_name], 4 * LP_EPS[dt_name]
    log(f"[torch] {dt_name}: {torch.__version__}, {torch.get_num_threads()} thread(s); parameters float32")
    for rows, dim in cases:
        shape = shape_str(rows, dim)
        big = rows * dim >= BIG_ELEMS
        x_np, dy_np, g_np, b_np = make_data(rows, dim)
        x = torch.from_numpy(x_np).to(tdt)
        dy = torch.from_numpy(dy_np).to(tdt)
        del x_np, dy_np
        xs, dys = x.float().numpy(), dy.float().numpy()  # the stored values, for the references
        g = torch.from_numpy(g_np)
        b = torch.from_numpy(b_np)

        def ln_fwd():
            with torch.no_grad():
                return F.layer_norm(x, (dim,), g, b, EPS)
        op = f"layernorm fwd {dt_name}"
        y = ln_fwd()
        assert y.dtype == tdt
        err = ref_ln_fwd_err(xs, g_np, b_np, y.float().numpy())
        del y
        t = time_op(ln_fwd, big)
        row(peer, op, shape, t * 1e6, op_bytes(op, rows, dim, 2) / t / 1e9, check_str({"y": err}, tol_f))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err {err:.2e}")

        op = f"layernorm bwd {dt_name}"
        xg = x.clone().requires_grad_(True)
        gg = g.clone().requires_grad_(True)
        bg = b.clone().requires_grad_(True)
        yg = F.layer_norm(xg, (dim,), gg, bg, EPS)

        def ln_bwd():
            return torch.autograd.grad(yg, (xg, gg, bg), dy, retain_graph=True)
        dx, dgm, dbt = ln_bwd()
        assert dx.dtype == tdt
        e_dx, e_dg, e_db = ref_ln_bwd_err(xs, dys, g_np, dx.float().numpy(), dgm.float().numpy(),
                                          dbt.float().numpy())
        del dx, dgm, dbt
        t = time_op(ln_bwd, big)
        row(peer, op, shape, t * 1e6, op_bytes(op, rows, dim, 2) / t / 1e9,
            check_str({"dx": e_dx, "dgamma": e_dg, "dbeta": e_db}, tol_b))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err dx {e_dx:.2e} dg {e_dg:.2e} db {e_db:.2e}")
        del yg, xg, gg, bg

        if hasattr(torch.nn, "RMSNorm"):
            m = torch.nn.RMSNorm(dim, eps=EPS, elementwise_affine=True)  # float32 weight
            with torch.no_grad():
                m.weight.copy_(g)
            wp = m.weight
            rms_f = m
            label = peer
        else:
            wp = g.clone().requires_grad_(True)

            def rms_f(inp):
                xf = inp.float()
                return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * wp).to(inp.dtype)
            label = peer + " (expression)"
        op = f"rmsnorm fwd {dt_name}"

        def rms_fwd():
            with torch.no_grad():
                return rms_f(x)
        y = rms_fwd()
        assert y.dtype == tdt, y.dtype
        err = ref_rms_fwd_err(xs, g_np, y.float().numpy())
        del y
        t = time_op(rms_fwd, big)
        row(label, op, shape, t * 1e6, op_bytes(op, rows, dim, 2) / t / 1e9, check_str({"y": err}, tol_f))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err {err:.2e}")

        op = f"rmsnorm bwd {dt_name}"
        xg = x.clone().requires_grad_(True)
        yg = rms_f(xg)

        def rms_bwd():
            return torch.autograd.grad(yg, (xg, wp), dy, retain_graph=True)
        dx, dgm = rms_bwd()
        e_dx, e_dg = ref_rms_bwd_err(xs, dys, g_np, dx.float().numpy(), dgm.float().numpy())
        del dx, dgm
        t = time_op(rms_bwd, big)
        row(label, op, shape, t * 1e6, op_bytes(op, rows, dim, 2) / t / 1e9,
            check_str({"dx": e_dx, "dgamma": e_dg}, tol_b))
        log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err dx {e_dx:.2e} dg {e_dg:.2e}")
        del yg, xg, x, dy, xs, dys


def run_torch_i8(threads, cases):
    """int8-output forwards: the norm, then the quantization in torch ops (no fused kernel):
    dyn: s = max|y| / 127 per row, q = round(y / s) clamped to [-127, 127]; static: s fixed."""
    ops = [o.format(d) for d in ("f32", "bf16") for o in I8_OPS]
    torch, F = torch_or_rows(ops)
    if torch is None:
        return
    import warnings
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    torch.set_num_threads(threads)
    peer = f"PyTorch {torch.__version__.split('+')[0]}"
    log(f"[torch] i8: {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for rows, dim in cases:
        shape = shape_str(rows, dim)
        big = rows * dim >= BIG_ELEMS
        x_np, _, g_np, b_np = make_data(rows, dim)
        g = torch.from_numpy(g_np)
        b = torch.from_numpy(b_np)
        rms = torch.nn.RMSNorm(dim, eps=EPS, elementwise_affine=True) if hasattr(torch.nn, "RMSNorm") else None
        if rms is not None:
            with torch.no_grad():
                rms.weight.copy_(g)
        for in_name, tdt, in_size in (("f32", torch.float32, 4), ("bf16", torch.bfloat16, 2)):
            x = torch.from_numpy(x_np).to(tdt)
            xs = x.float().numpy()
            for k, opfmt in enumerate(I8_OPS):
                op = opfmt.format(in_name)
                dyn = k % 2 == 0
                is_ln = k < 2
                if not is_ln and rms is None:
                    row(peer, op, shape, check="not run: this PyTorch has no nn.RMSNorm")
                    continue

                def norm():
                    return F.layer_norm(x, (dim,), g, b, EPS) if is_ln else rms(x)

                def q_dyn():
                    with torch.no_grad():
                        y = norm().float()
                        s = y.abs().amax(-1, keepdim=True) / 127
                        return torch.round(y / s).clamp_(-127, 127).to(torch.int8), s

                def q_static():
                    with torch.no_grad():
                        y = norm().float()
                        return torch.round(y / I8_STATIC_SCALE).clamp_(-127, 127).to(torch.int8), None
                fn = q_dyn if dyn else q_static
                q, s = fn()
                scale = s[:, 0].numpy() if dyn else I8_STATIC_SCALE
                if is_ln:
                    err = i8_err_steps(xs, q.numpy(), scale, lambda xx: ref_ln_y(xx, g_np, b_np))
                else:
                    err = i8_err_steps(xs, q.numpy(), scale, lambda xx: ref_rms_y(xx, g_np))
                del q, s
                t = time_op(fn, big)
                # one quantization step: 0.5 is exact rounding of the true y; a bf16 input's
                # rounded y (PyTorch's norm returns bf16) adds up to half a bf16 ulp of y
                chk = ("ok" if err <= 1.0 else "FAIL") + f" {err:.2f} steps"
                row(peer, op, shape, t * 1e6, i8_bytes(rows, dim, in_size, dyn) / t / 1e9, chk)
                log(f"[torch] {op} {shape}: {t*1e6:.1f} us, err {err:.3f} steps")
            del x, xs


# ---------------------------------------------------------------- ONNX Runtime
def ort_model(kind, rows, dim, g, b):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, [rows, dim])
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [rows, dim])
    inits = [numpy_helper.from_array(g, "scale")]
    if kind == "layernorm":
        inits.append(numpy_helper.from_array(b, "bias"))
        node = helper.make_node("LayerNormalization", ["X", "scale", "bias"], ["Y"], axis=-1, epsilon=EPS)
        opsets = [helper.make_opsetid("", 17)]
    elif kind == "rmsnorm":
        node = helper.make_node("RMSNormalization", ["X", "scale"], ["Y"], axis=-1, epsilon=EPS)
        opsets = [helper.make_opsetid("", 23)]
    else:  # contrib SimplifiedLayerNormalization (RMSNorm), the stand-in
        node = helper.make_node("SimplifiedLayerNormalization", ["X", "scale"], ["Y"], axis=-1, epsilon=EPS)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    graph = helper.make_graph([node], kind, [X], [Y], initializer=inits)
    model = helper.make_model(graph, opset_imports=opsets, producer_name="keel-peers")
    # the oldest IR version that carries these opsets, so that this onnxruntime can read it
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    if kind != "simplified":
        onnx.checker.check_model(model)
    return model.SerializeToString()


def run_ort(threads, cases):
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001
        for op in ("layernorm fwd", "rmsnorm fwd"):
            row("ONNX Runtime", op, "all", check=f"not run: import failed: {type(e).__name__}: {e}")
        return
    ver = ort.__version__
    peer = f"ONNX Runtime {ver}"
    log(f"[ort] onnxruntime {ver}, onnx {onnx.__version__}, {threads} intra-op thread(s)")

    def session(model_bytes):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])

    rms_kind = "rmsnorm"
    rms_note = None
    for rows, dim in cases:
        shape = shape_str(rows, dim)
        big = rows * dim >= BIG_ELEMS
        x, _, g, b = make_data(rows, dim)
        y = np.empty_like(x)
        for kind in ("layernorm", "rms"):
            op = "layernorm fwd" if kind == "layernorm" else "rmsnorm fwd"
            label = peer
            if kind == "rms":
                if rms_kind is None:
                    row(peer, op, shape, check=rms_note)
                    continue
                kind = rms_kind
                if kind == "simplified":
                    label = f"{peer} (contrib SimplifiedLayerNormalization)"
            try:
                sess = session(ort_model(kind, rows, dim, g, b))
            except Exception as e:  # noqa: BLE001
                msg = str(e).splitlines()[0][:160]
                if kind == "rmsnorm":
                    log(f"[ort] RMSNormalization (opset 23) failed: {msg}; trying contrib SimplifiedLayerNormalization")
                    rms_note = f"RMSNormalization not supported by onnxruntime {ver}: {msg}"
                    try:
                        kind = rms_kind = "simplified"
                        label = f"{peer} (contrib SimplifiedLayerNormalization)"
                        sess = session(ort_model(kind, rows, dim, g, b))
                    except Exception as e2:  # noqa: BLE001
                        rms_kind = None
                        rms_note += f"; contrib SimplifiedLayerNormalization failed too: {str(e2).splitlines()[0][:120]}"
                        row(peer, op, shape, check=rms_note)
                        continue
                else:
                    row(peer, op, shape, check=f"not run: {msg}")
                    continue
            # IOBinding with a preallocated output: the way to call ORT without a new output
            # array per run (keel bench writes into a preallocated y as well).
            xo = ort.OrtValue.ortvalue_from_numpy(x)
            yo = ort.OrtValue.ortvalue_from_numpy(y)
            io = sess.io_binding()
            io.bind_ortvalue_input("X", xo)
            io.bind_ortvalue_output("Y", yo)

            def fwd():
                sess.run_with_iobinding(io)
            y.fill(np.nan)
            fwd()
            if kind == "layernorm":
                err = ref_ln_fwd_err(x, g, b, y)
            else:
                err = ref_rms_fwd_err(x, g, y)
            t = time_op(fwd, big)
            row(label, op, shape, t * 1e6, op_bytes(op, rows, dim) / t / 1e9, check_str({"y": err}, TOL_FWD))
            log(f"[ort] {op} ({kind}) {shape}: {t*1e6:.1f} us, err {err:.2e}")
            del sess, io, xo, yo
        del x, y
    for op in ("layernorm bwd", "rmsnorm bwd"):
        row(peer, op, "all", check="not measured: onnxruntime (the inference package) has no backward")


def ort_lp_model(kind, rows, dim, g, b, elem, quant=None):
    """A LayerNormalization (opset 17) or RMSNormalization (opset 23) model with X, Y, scale and
    bias of ONNX element type elem (the standard ops take the parameters in X's type). quant:
    None, "static" (then QuantizeLinear to int8 with keel bench's scale) or "dyn" (a per-row
    scale max|y|/127 written as a second output S, then Div, Round, Clip, Cast to int8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    X = helper.make_tensor_value_info("X", elem, [rows, dim])
    npdt = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16}.get(elem)

    def param(v, name):
        if npdt is not None:
            return numpy_helper.from_array(v.astype(npdt), name)
        # bf16: the bits of the rounded values
        bits = (v.astype(np.float32).view(np.uint32) + 0x7FFF + ((v.astype(np.float32).view(np.uint32) >> 16) & 1)) >> 16
        t = helper.make_tensor(name, elem, [dim], vals=bits.astype(np.uint16).tobytes(), raw=True)
        return t
    inits = [param(g, "scale")]
    if kind == "layernorm":
        inits.append(param(b, "bias"))
        nodes = [helper.make_node("LayerNormalization", ["X", "scale", "bias"], ["Yf"], axis=-1, epsilon=EPS)]
        opset = 17
    else:
        nodes = [helper.make_node("RMSNormalization", ["X", "scale"], ["Yf"], axis=-1, epsilon=EPS)]
        opset = 23
    outs = []
    if quant is None:
        nodes[0].output[0] = "Y"
        outs.append(helper.make_tensor_value_info("Y", elem, [rows, dim]))
    elif quant == "static":
        inits += [numpy_helper.from_array(np.array(I8_STATIC_SCALE, np.float32), "qs"),
                  numpy_helper.from_array(np.array(0, np.int8), "qz")]
        nodes.append(helper.make_node("QuantizeLinear", ["Yf", "qs", "qz"], ["Y"]))
        outs.append(helper.make_tensor_value_info("Y", TensorProto.INT8, [rows, dim]))
    else:
        inits += [numpy_helper.from_array(np.array([-1], np.int64), "ax"),
                  numpy_helper.from_array(np.array(127, np.float32), "c127"),
                  numpy_helper.from_array(np.array(-127, np.float32), "cm127")]
        nodes += [helper.make_node("Abs", ["Yf"], ["A"]),
                  helper.make_node("ReduceMax", ["A", "ax"], ["M"], keepdims=1),
                  helper.make_node("Div", ["M", "c127"], ["S"]),
                  helper.make_node("Div", ["Yf", "S"], ["V"]),
                  helper.make_node("Round", ["V"], ["R"]),
                  helper.make_node("Clip", ["R", "cm127", "c127"], ["C"]),
                  helper.make_node("Cast", ["C"], ["Y"], to=TensorProto.INT8)]
        outs += [helper.make_tensor_value_info("Y", TensorProto.INT8, [rows, dim]),
                 helper.make_tensor_value_info("S", TensorProto.FLOAT, [rows, 1])]
    if quant == "dyn":
        opset = max(opset, 18)  # ReduceMax with its axes as an input
    graph = helper.make_graph(nodes, kind, [X], outs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="keel-peers")
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run_ort_lp(threads, cases, which):
    """which: "bf16" / "f16" (forwards, parameters in the tensors' dtype as the ONNX ops require)
    or "i8" (float32 x: the norm then QuantizeLinear (static) or the per-row scale graph (dyn))."""
    try:
        import onnx  # noqa: F401
        from onnx import TensorProto
        import onnxruntime as ort
    except Exception as e:  # noqa: BLE001
        row("ONNX Runtime", f"(all {which} rows)", "all", check=f"not run: import failed: {type(e).__name__}: {e}")
        return
    ver = ort.__version__
    peer = f"ONNX Runtime {ver}"
    log(f"[ort] {which}: onnxruntime {ver}, {threads} intra-op thread(s)")

    def session(model_bytes):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])

    if which == "i8":
        variants = []
        for k, opfmt in enumerate(I8_OPS):
            variants.append((opfmt.format("f32"), "layernorm" if k < 2 else "rmsnorm",
                             TensorProto.FLOAT, "dyn" if k % 2 == 0 else "static"))
        for opfmt in I8_OPS:
            row(peer, opfmt.format("bf16"), "all",
                check="not measured: the ORT int8 rows take float32 x only")
    else:
        elem = TensorProto.BFLOAT16 if which == "bf16" else TensorProto.FLOAT16
        variants = [(f"layernorm fwd {which}", "layernorm", elem, None), (f"rmsnorm fwd {which}", "rmsnorm", elem, None)]
        for op in ("layernorm bwd", "rmsnorm bwd"):
            row(peer, f"{op} {which}", "all", check="not measured: onnxruntime (the inference package) has no backward")
    dead = {}
    for rows, dim in cases:
        shape = shape_str(rows, dim)
        big = rows * dim >= BIG_ELEMS
        x32, _, g, b = make_data(rows, dim)
        for op, kind, elem, quant in variants:
            if op in dead:
                row(peer, op, shape, check=dead[op])
                continue
            if elem == TensorProto.FLOAT16:
                x = x32.astype(np.float16)
                xs = x.astype(np.float32)
                y = np.empty_like(x)
            elif elem == TensorProto.BFLOAT16:
                u = x32.view(np.uint32)
                x = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
                xs = (x.astype(np.uint32) << 16).view(np.float32)
                y = np.empty_like(x)
            else:
                x, xs = x32, x32
                y = np.empty((rows, dim), np.int8)
            try:
                sess = session(ort_lp_model(kind, rows, dim, g, b, elem, quant))
                if elem == TensorProto.BFLOAT16:
                    xo = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(x, TensorProto.BFLOAT16)
                    yo = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(y, TensorProto.BFLOAT16)
                else:
                    xo = ort.OrtValue.ortvalue_from_numpy(x)
                    yo = ort.OrtValue.ortvalue_from_numpy(y)
                io = sess.io_binding()
                io.bind_ortvalue_input("X", xo)
                io.bind_ortvalue_output("Y", yo)
                sc = None
                if quant == "dyn":
                    sc = np.empty((rows, 1), np.float32)
                    so_ = ort.OrtValue.ortvalue_from_numpy(sc)
                    io.bind_ortvalue_output("S", so_)

                def fwd():
                    sess.run_with_iobinding(io)
                fwd()
            except Exception as e:  # noqa: BLE001
                msg = str(e).splitlines()[0][:160]
                dead[op] = f"not supported by onnxruntime {ver} on CPU: {msg}"
                log(f"[ort] {op}: {msg}")
                row(peer, op, shape, check=dead[op])
                continue
            gq = g.astype(np.float16 if elem == TensorProto.FLOAT16 else np.float32)
            bq = b.astype(np.float16 if elem == TensorProto.FLOAT16 else np.float32)
            if elem == TensorProto.BFLOAT16:
                def rb(v):
                    u = v.astype(np.float32).view(np.uint32)
                    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
                gq, bq = rb(g), rb(b)
            if quant is None:
                ys = y.astype(np.float32) if elem == TensorProto.FLOAT16 else (y.astype(np.uint32) << 16).view(np.float32)
                name = "bf16" if elem == TensorProto.BFLOAT16 else "f16"
                err = (ref_ln_fwd_err(xs, gq, bq, ys) if kind == "layernorm" else ref_rms_fwd_err(xs, gq, ys))
                chk = check_str({"y": err}, LP_EPS[name]) + " (parameters in " + name + ")"
                nbytes = op_bytes(op, rows, dim, 2)
            else:
                scale = sc[:, 0] if quant == "dyn" else I8_STATIC_SCALE
                if kind == "layernorm":
                    err = i8_err_steps(xs, y, scale, lambda xx: ref_ln_y(xx, g, b))
                else:
                    err = i8_err_steps(xs, y, scale, lambda xx: ref_rms_y(xx, g))
                chk = ("ok" if err <= 1.0 else "FAIL") + f" {err:.2f} steps"
                nbytes = i8_bytes(rows, dim, 4, quant == "dyn")
            t = time_op(fwd, big)
            row(peer, op, shape, t * 1e6, nbytes / t / 1e9, chk)
            log(f"[ort] {op} {shape}: {t*1e6:.1f} us, {chk}")
            del sess, io, xo, yo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", choices=["torch", "ort"], required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true", help="only 4096x768")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16", "i8", "lowp"], default="f32",
                    help="the rows: float32 (default), bf16, f16, int8 output, or lowp (bf16, f16 and i8)")
    a = ap.parse_args()
    cases = QUICK_CASES if a.quick else CASES
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    dts = ["bf16", "f16", "i8"] if a.dtype == "lowp" else [a.dtype]
    for dt in dts:
        if a.peer == "torch":
            if dt == "f32":
                run_torch(a.threads, cases)
            elif dt == "i8":
                run_torch_i8(a.threads, cases)
            else:
                run_torch_lp(a.threads, cases, dt)
        else:
            if dt == "f32":
                run_ort(a.threads, cases)
            else:
                run_ort_lp(a.threads, cases, dt)


if __name__ == "__main__":
    main()
