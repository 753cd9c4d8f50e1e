#!/usr/bin/env python3
"""Peer benchmark: PyTorch and ONNX Runtime LayerNorm / RMSNorm on the cases of `keel bench`.

Usage: peers_torch_ort.py --peer torch|ort --threads N [--quick]

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


def op_bytes(op, rows, dim):
    n = rows * dim * 4
    return 3 * n if op.endswith("bwd") else 2 * n


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", choices=["torch", "ort"], required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true", help="only 4096x768")
    a = ap.parse_args()
    cases = QUICK_CASES if a.quick else CASES
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    if a.peer == "torch":
        run_torch(a.threads, cases)
    else:
        run_ort(a.threads, cases)


if __name__ == "__main__":
    main()
