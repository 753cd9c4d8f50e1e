#!/usr/bin/env python3
"""Peer benchmark: OpenVINO (PyPI `openvino`, CPU plugin) LayerNorm / RMSNorm forwards on the cases
of `keel bench`.

Usage: peers_openvino.py --threads N [--quick] [--dtype f32|bf16|f16|i8|lowp]

LayerNorm is the MVN op (axis -1, normalize_variance, eps inside the square root) followed by a
multiply by gamma and an add of beta; RMSNorm is the decomposed pattern x * 1/sqrt(mean(x^2) + eps)
* gamma (Multiply, ReduceMean, Add, Sqrt, Divide, Multiply), the form exporters write. Each is a
model with X of shape (rows, dim), compiled for "CPU" with INFERENCE_NUM_THREADS = N, NUM_STREAMS
= 1 and INFERENCE_PRECISION_HINT f32 (the float32 rows) or bf16 (the bf16 rows: X and Y are bf16
tensors, a Convert to f32 after X and to bf16 before Y, which the plugin folds; gamma and beta
float32 constants, as in keel). The precision each kernel runs in is read back from the compiled
(runtime) model and logged, and written into the check column. Timed: infer() of one infer request
with the input tensor set once (its output tensor is the plugin's, reused), back to back.

Prints Markdown table rows (no header) on stdout, as peers_torch_ort.py does (its helpers: cases,
timing, float64 references, check strings):
    | peer | op | rows x dim | us | GB/s | check (max rel err) |
No backward (OpenVINO is an inference runtime), no f16 rows, no int8-output rows: those rows say so.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers_torch_ort import (BIG_ELEMS, CASES, I8_OPS, LP_EPS, QUICK_CASES, TOL_FWD, EPS,  # noqa: E402
                             check_str, log, make_data, op_bytes, ref_ln_fwd_err, ref_rms_fwd_err, row,
                             shape_str, time_op)

NAME = "OpenVINO"


def bf16_bits(v):
    """float32 -> bf16 bits (round to nearest even), as uint16"""
    u = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_float(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def build_model(ov, ops, kind, rows, dim, g, b, io_type):
    x = ops.parameter([rows, dim], io_type, name="X")
    xf = ops.convert(x, ov.Type.f32) if io_type != ov.Type.f32 else x
    axes = ops.constant(np.array([-1], np.int64))
    if kind == "layernorm":
        m = ops.mvn(xf, axes, True, EPS, "inside_sqrt")
        y = ops.add(ops.multiply(m, ops.constant(g)), ops.constant(b))
    else:
        ms = ops.reduce_mean(ops.multiply(xf, xf), axes, True)
        r = ops.divide(ops.constant(np.float32(1.0)), ops.sqrt(ops.add(ms, ops.constant(np.float32(EPS)))))
        y = ops.multiply(ops.multiply(xf, r), ops.constant(g))
    if io_type != ov.Type.f32:
        y = ops.convert(y, io_type)
    res = ops.result(y)
    res.get_output_tensor(0).set_names({"Y"})
    return ov.Model([res], [x], kind)


def runtime_precisions(compiled):
    """'MVN bf16, Eltwise f32 ...': the layer types of the compiled model and their precision"""
    seen = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        ri = op.get_rt_info()
        try:
            lt = ri["layerType"].astype(str)
            pr = ri["runtimePrecision"].astype(str)
        except Exception:  # noqa: BLE001
            continue
        if lt in ("Input", "Output", "Parameter", "Result", "Const", "Constant"):
            continue
        s = f"{lt} {pr}"
        if s not in seen:
            seen.append(s)
    return ", ".join(seen) if seen else "?"


def run(threads, cases, which):
    fwd_ops = ("layernorm fwd", "rmsnorm fwd")
    suffix = "" if which == "f32" else f" {which}"
    try:
        import openvino as ov
        try:
            import openvino.opset13 as ops
        except ImportError:
            import openvino.runtime.opset13 as ops
    except Exception as e:  # noqa: BLE001
        for op in ("layernorm fwd", "layernorm bwd", "rmsnorm fwd", "rmsnorm bwd"):
            row(NAME, op + suffix, "all", check=f"not run: import openvino failed: {type(e).__name__}: {e}")
        return
    ver = ov.__version__.split("-")[0]
    peer = f"{NAME} {ver}"
    if which == "i8":
        for src in ("f32", "bf16"):
            for opfmt in I8_OPS:
                row(peer, opfmt.format(src), "all", check="not measured: no int8-output rows for OpenVINO")
        return
    for op in ("layernorm bwd", "rmsnorm bwd"):
        row(peer, op + suffix, "all", check="not measured: OpenVINO is an inference runtime (no backward)")
    if which == "f16":
        for op in fwd_ops:
            row(peer, op + suffix, "all", check="not measured: the OpenVINO rows are f32 and bf16")
        return
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    log(f"[openvino] {ov.get_version()}, {which}, {threads} thread(s), CPU capabilities {list(caps)}")
    io_type = ov.Type.f32 if which == "f32" else ov.Type.bf16
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": which}
    for rows, dim in cases:
        shape = shape_str(rows, dim)
        big = rows * dim >= BIG_ELEMS
        x32, _, g, b = make_data(rows, dim)
        if which == "f32":
            xs = x32
        else:
            xbits = bf16_bits(x32)
            xs = bf16_float(xbits)
        for kind, op in zip(("layernorm", "rmsnorm"), fwd_ops):
            op = op + suffix
            try:
                compiled = core.compile_model(build_model(ov, ops, kind, rows, dim, g, b, io_type), "CPU", config)
                hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
                prec = runtime_precisions(compiled)
                req = compiled.create_infer_request()
                if which == "f32":
                    xt = ov.Tensor(x32, shared_memory=True)
                else:
                    xt = ov.Tensor(ov.Type.bf16, [rows, dim])
                    xt.data.view(np.uint16)[...] = xbits
                req.set_input_tensor(xt)

                def fwd():
                    req.infer()
                fwd()
                yt = req.get_output_tensor()
                if which == "f32":
                    ys = np.array(yt.data, dtype=np.float32, copy=True)
                else:
                    ys = bf16_float(np.array(yt.data.view(np.uint16), copy=True))
            except Exception as e:  # noqa: BLE001
                msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                log(f"[openvino] {op} {shape}: {msg}")
                row(peer, op, shape, check=f"not run: {msg}")
                continue
            if kind == "layernorm":
                err = ref_ln_fwd_err(xs, g, b, ys)
            else:
                err = ref_rms_fwd_err(xs, g, ys)
            tol = TOL_FWD if which == "f32" else LP_EPS[which]
            chk = check_str({"y": err}, tol) + f" (runs {prec})"
            log(f"[openvino] {op} {shape}: precision hint {hint}; compiled: {prec}")
            t = time_op(fwd, big)
            nbytes = op_bytes(op.split(" bf16")[0], rows, dim, 4 if which == "f32" else 2)
            row(peer, op, shape, t * 1e6, nbytes / t / 1e9, chk)
            log(f"[openvino] {op} {shape}: {t*1e6:.1f} us, err {err:.2e}")
            del req, compiled, xt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--quick", action="store_true", help="only 4096x768")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16", "i8", "lowp"], default="f32")
    a = ap.parse_args()
    cases = QUICK_CASES if a.quick else CASES
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    for dt in (["bf16", "f16", "i8"] if a.dtype == "lowp" else [a.dtype]):
        run(a.threads, cases, dt)


if __name__ == "__main__":
    main()
