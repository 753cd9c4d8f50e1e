"""keel for PyTorch: BatchNorm, LayerScale and DyT as torch.library operators, with modules.

The operators (namespace "keel"; torch.ops.keel.<name>):

    batch_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean,
               Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, bool training,
               float? momentum, float eps) -> (Tensor y, Tensor save_mean, Tensor save_rstd)
    batch_norm_backward(Tensor dy, Tensor x, Tensor? weight, Tensor save_mean, Tensor save_rstd,
                        bool training, bool[] output_mask) -> (Tensor, Tensor, Tensor)
        -> dx, dweight, dbias
    layer_scale(Tensor x, Tensor f, Tensor gamma) -> Tensor
        h = x + gamma * f
    layer_scale_backward(Tensor dh, Tensor f, Tensor gamma, bool[] output_mask) -> (Tensor, Tensor)
        -> df, dgamma (dx is dh itself: the autograd formula passes it on)
    dyt(Tensor x, SymInt[] normalized_shape, Tensor alpha, Tensor? weight, Tensor? bias) -> Tensor
        y = weight * tanh(alpha * x) + bias
    dyt_backward(Tensor dy, Tensor x, SymInt[] normalized_shape, Tensor alpha, Tensor? weight,
                 bool[] output_mask) -> (Tensor, Tensor, Tensor, Tensor)
        -> dx, dalpha, dweight, dbias

Each has a fake (meta) implementation, so torch.compile and torch.export trace them as single
nodes, and an autograd formula whose backward calls the backward operator. A gradient left out
by output_mask comes back as an empty tensor (shape (0,)). The backward operators have no
autograd formula of their own: for gradients of gradients (create_graph=True, nested
torch.func.grad) the formulas compute the first gradients in torch's differentiable ops instead
(keel.h's formulas; BatchNorm's batch statistics recomputed from x), said once per operator:
the same first derivatives up to float rounding, and torch's second ones.

batch_norm updates running_mean, running_var and num_batches_tracked in place, as torch.nn's
BatchNorm does (momentum None: the cumulative average, which needs num_batches_tracked), and
the schema says so, so functionalization (torch.compile, torch.export) keeps the updates. (In
inference nothing changes, but the marks stand: a functionalized inference graph writes
running_mean and running_var back unchanged.)
torch.library.custom_op refuses an autograd formula on an operator that mutates, so
keel::batch_norm is defined with torch.library.Library and its formula is registered as the
operator's Autograd kernel (the mechanism custom_op itself uses). x is (N, C, ...): keel reads
it as rows of C features. A channels_last tensor (NHWC memory) already is such rows and is read
and written in place; an NCHW-contiguous one is copied to rows first (a permute and a
contiguous copy) and y copied back. y has x's memory format (the outputs of layer_scale and
dyt are contiguous). Training needs two values per channel at least: a batch of 0 or 1 value
per channel (N * H * W) is a ValueError.

What keel computes: BatchNorm on CPU float32 tensors; LayerScale and DyT on CPU float32,
bfloat16 and float16 tensors (computed in float32, each output rounded once; the per-feature
vectors go to keel as float32, and their gradients come back in their own dtype). Every other
call (float64, other devices, BatchNorm's momentum outside [0, 1] or input of fewer than 2
dims) runs torch's own computation (F.batch_norm and the formulas above), and keel says so with
a KeelFallbackWarning once per operator and reason (fallbacks() lists them).

torch.func: torch.func.grad, vjp and jacrev refuse the autograd formulas of torch.library
operators (PyTorch's autograd.Function without setup_context), so batch_norm, layer_scale and dyt
(the functions below and the modules) call the operators through an autograd.Function with
setup_context while a torch.func transform is active. Under vmap, layer_scale and dyt with only
x (and f) batched are one call (the batch is one more leading dim); batched parameters, the
backward operators and batch_norm run once per sample; batch_norm refuses vmap in training with
running statistics (it would update them once per sample). Forward-mode AD (jvp, jacfwd) is not
supported.

Functions: batch_norm (torch.nn.functional.batch_norm's signature, plus num_batches_tracked),
layer_scale, dyt. Modules: BatchNorm1d, BatchNorm2d, BatchNorm3d (drop-ins for torch.nn's:
subclasses, same constructor, parameters, buffers and state_dict), LayerScale (timm's
parameter `gamma`), DyT (the DyT paper's parameters alpha, weight, bias).
"""

import math
from math import prod
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import _lib, _torch_vmap
from ._arrays import NO_TENSOR, NULL, run
from ._errors import EINVAL, KeelValueError
from ._layout import normalized_tuple, row_stride
from ._torch_fallback import KeelFallbackWarning, fall_back, fallbacks

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerScale", "DyT", "batch_norm", "layer_scale", "dyt",
           "KeelFallbackWarning", "fallbacks"]

_C = _lib.lib  # keel's functions are looked up on it at each call
_KEEL_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # torch dtype -> keel_dtype
_FLOAT32_ONLY = {torch.float32: 0}
_NONE3 = (None, None, None)


# --- fallbacks: said once per operator and reason ---------------------------------------------

_COMPUTES = {"batch_norm": "float32 on the CPU", "layer_scale": "float32, bfloat16 and float16 on the CPU",
             "dyt": "float32, bfloat16 and float16 on the CPU"}


def _fall_back(op, reason):
    """Warn, once per (op, reason), that this call runs torch's computation instead of keel's."""
    fall_back(op, reason, stacklevel=5)


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _why_not_keel(op, tensors, dtypes, out_dtype=None):
    """None when keel computes a call of op on these tensors (plain strided CPU tensors of
    `dtypes`; None entries are absent) with an output of out_dtype (None: not checked), else the
    reason it does not."""
    why = None
    if out_dtype is not None and out_dtype not in dtypes:
        why = f"dtype {_dtype_name(out_dtype)}"
    for t in tensors:
        if why is not None:
            break
        if t is not None and t.device.type != "cpu":
            why = f"device {t.device.type}"
        elif t is not None and t.layout is not torch.strided:
            why = f"layout {t.layout}"
        elif t is not None and t.dtype not in dtypes:
            why = f"dtype {_dtype_name(t.dtype)}"
    return None if why is None else f"{why} (keel computes {_COMPUTES[op.replace('_backward', '')]})"


# --- tensors as keel arguments ----------------------------------------------------------------

def _addr(t):
    """The address of t's data for keel (None: NULL; an empty tensor: a valid dummy address)."""
    return None if t is None else (t.data_ptr() or NULL)


def _aligned(t):
    return t.data_ptr() % t.element_size() == 0


def _rows(t, k, dim):
    """(keel_tensor, tensor) of t read as rows of its trailing k dims (dim elements each): t's
    own memory when its rows are evenly strided, else a contiguous copy's (the tensor returned:
    keep it alive through the call)."""
    stride = dim if t.is_contiguous() else row_stride(t.shape, t.stride(), k, dim)
    if stride is None or not _aligned(t):
        t, stride = t.clone(memory_format=torch.contiguous_format), dim
    return _lib.Tensor(_addr(t), _KEEL_DTYPES[t.dtype], stride), t


def _out_rows(t, k, dim):
    """(keel_tensor, staging) for an output t: keel writes t's own rows when they are evenly
    strided (staging None), else a contiguous staging tensor that _finish copies into t."""
    stride = dim if t.is_contiguous() else row_stride(t.shape, t.stride(), k, dim)
    if stride is None:
        staging = torch.empty(t.shape, dtype=t.dtype)
        return _lib.Tensor(_addr(staging), _KEEL_DTYPES[t.dtype], dim), staging
    return _lib.Tensor(_addr(t), _KEEL_DTYPES[t.dtype], stride), None


def _new_rows(t, dim):
    """keel_tensor of a new contiguous output t (rows of dim elements: written in place)."""
    return _lib.Tensor(_addr(t), _KEEL_DTYPES[t.dtype], dim)


def _finish(t, staging):
    """Copy an output's staging tensor (see _out_rows) into it."""
    if staging is not None:
        t.copy_(staging)


def _dense(t):
    """t as a dense, aligned tensor: itself when it is one, else a contiguous copy (None: None)."""
    if t is None or (t.is_contiguous() and _aligned(t)):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _f32(p):
    """A per-feature vector (weight, bias, gamma) as keel takes it: dense float32 (bfloat16 and
    float16 widen exactly)."""
    return None if p is None else _dense(p if p.dtype is torch.float32 else p.float())


def _result_dtype(x, *others):
    """The dtype torch's own formula gives: x's promoted with each other tensor's (a 0-dim tensor
    does not raise a floating x's precision, as in torch)."""
    dtype = x.dtype
    for t in others:
        if t is not None and (t.dim() > 0 or not dtype.is_floating_point):
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _split(x, dims, who):
    """(rows, dim) of x normalized over its trailing dims; ValueError when they do not match."""
    dims, k = tuple(dims), len(dims)
    if x.dim() < k or tuple(x.shape[x.dim() - k:]) != dims:
        raise KeelValueError(f"{who}: the trailing dims of x.shape {tuple(x.shape)} are not {dims}", EINVAL)
    return prod(x.shape[:x.dim() - k]), prod(dims)


def _check_shape(t, dims, name, who):
    if t is not None and tuple(t.shape) != tuple(dims):
        raise KeelValueError(f"{who}: {name}.shape {tuple(t.shape)} != {tuple(dims)}", EINVAL)


def _like(t, x):
    """t in the layout torch.empty_like(x) has (what the fake implementations promise): t itself
    when its strides are those, else a copy."""
    out = torch.empty_like(x, dtype=t.dtype)
    return t if out.stride() == t.stride() else out.copy_(t)


def _empty_grad(like, dtype=None):
    """The stand-in for a gradient left out by output_mask: an empty tensor."""
    return like.new_empty((0,), dtype=dtype or like.dtype)


# --- torch.func ------------------------------------------------------------------------------

_TRANSFORM = torch._C._functorch.TransformType


def _in_func_transform():
    """True while a torch.func transform (grad, vjp, jacrev, vmap, jvp) is active outside
    torch.compile and torch.export (which trace the operators themselves)."""
    if torch.compiler.is_compiling():
        return False
    stack = torch._C._functorch.get_interpreter_stack() or ()
    return any(i.key() != _TRANSFORM.Functionalize for i in stack)


def _func_backward(grads, *args):
    """grads(*args), a backward under torch.func: without grad at one grad level (keel's backward
    operator: torch.func refuses the autograd kernel torch.library gives it), with grad under
    nested ones (gradients of gradients: torch's differentiable formulas, see _second_order)."""
    stack = torch._C._functorch.get_interpreter_stack() or ()
    if sum(i.key() == _TRANSFORM.Grad for i in stack) > 1:
        return grads(*args)
    with torch.no_grad():
        return grads(*args)


def _second_order(op):
    """True when a backward must itself be differentiable (create_graph=True, nested torch.func
    grad): it then runs torch's formulas, not keel's backward operator, and says so once."""
    if not torch.is_grad_enabled():
        return False
    _fall_back(op + "_backward", "gradients of gradients (create_graph): the backward runs in torch's "
                                 "differentiable ops")
    return True


# === BatchNorm =================================================================================

_BN_SCHEMA = ("batch_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean, "
              "Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, bool training, float? momentum, "
              "float eps) -> (Tensor y, Tensor save_mean, Tensor save_rstd)")
_BN_WHO = "keel::batch_norm"


def _bn_rows(x):
    """Values per channel of a batch_norm input: N * H * W ... (torch's count)."""
    return x.shape[0] * prod(x.shape[2:]) if x.dim() else 1


def _bn_check_rows(x, training):
    """Training needs a variance: refuse batches of 0 or 1 value per channel."""
    rows = _bn_rows(x)
    if training and rows < 2:
        what = "an empty batch has no statistics" if rows == 0 else "a batch of one has no variance"
        raise KeelValueError(f"{_BN_WHO}: training needs at least 2 values per channel; x.shape {tuple(x.shape)} "
                             f"gives {rows} (N * H * W ...): {what}", EINVAL)
    return rows


def _bn_check(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum):
    """(rows, C) of a batch_norm call after the checks every path shares (the fake's too)."""
    if x.dim() < 2:
        raise KeelValueError(f"{_BN_WHO}: x.shape {tuple(x.shape)}: expected (N, C, ...)", EINVAL)
    rows, C = _bn_check_rows(x, training), x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        _check_shape(t, (C,), name, _BN_WHO)
    if (running_mean is None) != (running_var is None):
        raise KeelValueError(f"{_BN_WHO}: running_mean and running_var must be given both or neither", EINVAL)
    if not training and running_mean is None:
        raise KeelValueError(f"{_BN_WHO}: inference (training=False) needs running_mean and running_var", EINVAL)
    if training and running_mean is not None and momentum is None and num_batches_tracked is None:
        raise KeelValueError(f"{_BN_WHO}: momentum None (the cumulative average) needs num_batches_tracked",
                             EINVAL)
    return rows, C


def _stat_dtype(dtype):
    """save_mean/save_rstd's dtype: float32, or float64 for float64 input."""
    return torch.promote_types(dtype, torch.float32)


def _bn_fake(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """Shapes of keel::batch_norm: y like x (its memory format), save_mean and save_rstd (C,)."""
    _, C = _bn_check(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum)
    stat = _stat_dtype(x.dtype)
    return torch.empty_like(x), x.new_empty((C,), dtype=stat), x.new_empty((C,), dtype=stat)


def _bn_why_not_keel(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum):
    """None when keel computes this batch_norm call, else the reason it does not."""
    reason = _why_not_keel("batch_norm", (x, weight, bias, running_mean, running_var), _FLOAT32_ONLY)
    if reason:
        return reason
    if num_batches_tracked is not None and (num_batches_tracked.device.type != "cpu"
                                            or num_batches_tracked.dtype is not torch.int64):
        return "num_batches_tracked is not a CPU int64 tensor"
    if x.shape[1] == 0:
        return "no channels (C == 0), which keel refuses"
    if training and running_mean is not None and momentum is not None and not 0.0 <= momentum <= 1.0:
        return "momentum outside [0, 1], which keel refuses"
    return None


def _bn_impl(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """keel::batch_norm on real tensors: keel's, or torch's for what keel does not compute."""
    args = (x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum)
    rows, C = _bn_check(*args)
    reason = _bn_why_not_keel(*args)
    if reason is None:
        return _bn_keel(rows, C, *args, eps)
    _fall_back("batch_norm", reason)
    return _bn_torch(*args, eps)


def _bn_keel(rows, C, x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """keel_batchnorm_fwd on x's rows of C features (read and written in place when channels
    are last in memory; through a copy otherwise)."""
    y = torch.empty_like(x)
    mean, rstd = torch.empty(C), torch.empty(C)
    if rows == 0:  # inference on an empty batch: keel writes nothing; the statistics are the running ones
        mean.copy_(running_mean)
        torch.rsqrt(running_var + eps, out=rstd)
        return y, mean, rstd
    (tx, x_rows), (ty, staging) = _rows(x.movedim(1, -1), 1, C), _out_rows(y.movedim(1, -1), 1, C)
    updated = (running_mean, running_var, num_batches_tracked)
    dense = [_dense(t) for t in updated]  # keel updates these in place
    tracking = training and running_mean is not None
    m = (math.nan if momentum is None else momentum) if tracking else 0.0  # keel reads momentum only then
    weight, bias = _f32(weight), _f32(bias)
    run(_C.keel_batchnorm_fwd, rows, C, tx, ty, _addr(weight), _addr(bias), eps, int(training), m,
        *(_addr(t) for t in dense), _addr(mean), _addr(rstd), 0)
    _finish(y.movedim(1, -1), staging)
    for t, d in zip(updated, dense):
        if d is not t:
            t.copy_(d)
    return y, mean, rstd


def _bn_torch(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """torch's own batch norm with torch.nn's bookkeeping: num_batches_tracked incremented (in
    training, with running statistics), momentum None the cumulative average."""
    m = 0.0 if momentum is None else momentum
    if training and running_mean is not None and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            m = 1.0 / float(num_batches_tracked)
    mean, rstd = _bn_torch_stats(x, running_mean, running_var, training, eps)  # before the update
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, m, eps)
    return _like(y, x), mean, rstd


def _bn_torch_stats(x, running_mean, running_var, training, eps):
    """(save_mean, save_rstd) in torch's ops: the batch's (biased variance) or the running ones."""
    dtype = _stat_dtype(x.dtype)
    if training:
        var, mean = torch.var_mean(x.to(dtype), [0, *range(2, x.dim())], correction=0)
    else:
        mean, var = running_mean.to(dtype, copy=True), running_var.to(dtype)
    return mean, torch.rsqrt(var + eps)


class _BatchNormAutograd(torch.autograd.Function):
    """keel::batch_norm's Autograd kernel: the operator below autograd, then its backward through
    keel::batch_norm_backward (save_mean and save_rstd are not differentiable)."""

    @staticmethod
    def forward(ctx, keyset, x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum,
                eps):
        with torch._C._AutoDispatchBelowAutograd():
            y, mean, rstd = _BN_OP.redispatch(keyset & torch._C._after_autograd_keyset, x, weight, bias,
                                              running_mean, running_var, num_batches_tracked, training, momentum, eps)
        ctx.mark_non_differentiable(mean, rstd)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.training, ctx.eps = training, eps
        return y, mean, rstd

    @staticmethod
    def backward(ctx, dy, _dmean, _drstd):
        grads = _bn_grads(ctx, ctx.needs_input_grad[1:4], dy)
        return (None, *grads) + (None,) * 6


def _bn_grads(ctx, needs, dy):
    """(dx, dweight, dbias) through keel::batch_norm_backward, None where not needed; for
    gradients of gradients, torch's formulas with the batch statistics recomputed from x (so
    that they are differentiated too)."""
    x, weight, mean, rstd = ctx.saved_tensors
    mask = [needs[0], needs[1] and weight is not None, needs[2]]
    if not any(mask):
        return _NONE3
    if _second_order("batch_norm"):
        if ctx.training:
            mean, rstd = _bn_torch_stats(x, None, None, True, ctx.eps)
        grads = _bn_backward_torch(dy, x, weight, mean, rstd, ctx.training, mask)
    else:
        grads = torch.ops.keel.batch_norm_backward(dy, x, weight, mean, rstd, ctx.training, mask)
    return tuple(g if wanted else None for g, wanted in zip(grads, mask))


def _bn_autograd_kernel(keyset, *args):
    """Autograd: through _BatchNormAutograd when x, weight or bias needs a gradient."""
    if any(t is not None and t.requires_grad for t in args[3:6]):
        raise KeelValueError(f"{_BN_WHO}: the running statistics are updated in place: they cannot require grad",
                             EINVAL)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:3]):
        return _BatchNormAutograd.apply(keyset, *args)
    with torch._C._AutoDispatchBelowAutograd():
        return _BN_OP.redispatch(keyset & torch._C._after_autograd_keyset, *args)


def _bn_inplace_or_view_kernel(keyset, *args):
    """ADInplaceOrView: bump the version counters of the tensors batch_norm updates."""
    for t in args[3:6]:
        if t is not None:
            torch.autograd.graph.increment_version(t)
    return _BN_OP.redispatch(keyset & torch._C._after_ADInplaceOrView_keyset, *args)


_LIB = torch.library.Library("keel", "FRAGMENT")
_LIB.define(_BN_SCHEMA, tags=(torch.Tag.pt2_compliant_tag,))
_LIB.impl("batch_norm", _bn_impl, "CompositeExplicitAutograd")
_LIB.impl("batch_norm", _bn_autograd_kernel, "Autograd", with_keyset=True)
_LIB.impl("batch_norm", _bn_inplace_or_view_kernel, "ADInplaceOrView", with_keyset=True)
torch.library.register_fake("keel::batch_norm", _bn_fake, lib=_LIB)
_BN_OP = torch.ops.keel.batch_norm.default


def _bn_grad_dtype(weight, mean):
    """dweight's and dbias's dtype: weight's, or the statistics' without a weight."""
    return weight.dtype if weight is not None else mean.dtype


@torch.library.custom_op("keel::batch_norm_backward", mutates_args=())
def _bn_backward_op(dy: Tensor, x: Tensor, weight: Optional[Tensor], save_mean: Tensor, save_rstd: Tensor,
                    training: bool, output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight, dbias) of keel::batch_norm; training: through the batch statistics."""
    args = (dy, x, weight, save_mean, save_rstd, training, output_mask)
    reason = _why_not_keel("batch_norm_backward", (dy, x, weight, save_mean, save_rstd), _FLOAT32_ONLY)
    if reason is None and x.shape[1] == 0:
        reason = "no channels (C == 0), which keel refuses"
    if reason is None:
        return _bn_backward_keel(*args)
    _fall_back("batch_norm_backward", reason)
    return _bn_backward_torch(*args)


@_bn_backward_op.register_fake
def _bn_backward_fake(dy, x, weight, save_mean, save_rstd, training, output_mask):
    dtype, C = _bn_grad_dtype(weight, save_mean), x.shape[1]
    dx = torch.empty_like(x) if output_mask[0] else _empty_grad(x)
    return (dx, *(x.new_empty((C if wanted else 0,), dtype=dtype) for wanted in output_mask[1:]))


def _bn_backward_keel(dy, x, weight, mean, rstd, training, mask):
    """keel_batchnorm_bwd on the rows of C features (as _bn_keel reads them)."""
    C = x.shape[1]
    rows = x.numel() // C
    dx = torch.empty_like(x) if mask[0] else _empty_grad(x)
    dw, db = (torch.zeros(C) if wanted else _empty_grad(x) for wanted in mask[1:])
    (tdy, dy_rows), (tx, x_rows) = _rows(dy.movedim(1, -1), 1, C), _rows(x.movedim(1, -1), 1, C)
    tdx, staging = _out_rows(dx.movedim(1, -1), 1, C) if mask[0] else (NO_TENSOR, None)
    weight, mean, rstd = _f32(weight), _dense(mean), _dense(rstd)
    run(_C.keel_batchnorm_bwd, rows, C, tdy, tx, _addr(mean), _addr(rstd), _addr(weight), 0.0, int(training),
        tdx, _addr(dw) if mask[1] else None, _addr(db) if mask[2] else None, 0)
    if mask[0]:
        _finish(dx.movedim(1, -1), staging)
    return dx, dw, db


def _bn_backward_torch(dy, x, weight, mean, rstd, training, mask):
    """The same gradients in torch's ops (keel.h's formulas), in the statistics' dtype."""
    dims, shape = [0, *range(2, x.dim())], (1, -1) + (1,) * (x.dim() - 2)
    dtype, pdtype = mean.dtype, _bn_grad_dtype(weight, mean)
    dy = dy.to(dtype)
    xhat = (x.to(dtype) - mean.view(shape)) * rstd.view(shape)
    g = dy if weight is None else dy * weight.to(dtype).view(shape)
    if training:
        g = g - g.mean(dims, keepdim=True) - xhat * (g * xhat).mean(dims, keepdim=True)
    dx = _like((rstd.view(shape) * g).to(x.dtype), x) if mask[0] else _empty_grad(x)
    dw = (dy * xhat).sum(dims).to(pdtype) if mask[1] else _empty_grad(x, pdtype)
    db = dy.sum(dims).to(pdtype) if mask[2] else _empty_grad(x, pdtype)
    return dx, dw, db


_torch_vmap.register("batch_norm_backward")


class _BatchNormFunc(torch.autograd.Function):
    """keel::batch_norm under torch.func transforms (see the module docstring)."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
        return _BN_OP(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(inputs[0], inputs[1], output[1], output[2])
        ctx.training, ctx.eps = inputs[6], inputs[8]

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum,
             eps):
        """Once per sample; refused where running statistics would be updated (in training)."""
        if training and running_mean is not None:
            raise NotImplementedError(f"{_BN_WHO} under vmap: training would update the running statistics once "
                                      f"per sample; use track_running_stats=False (torch.func."
                                      f"replace_all_batch_norm_modules_) or inference")
        return _torch_vmap.rule(_BN_OP)(info, in_dims, x, weight, bias, running_mean, running_var,
                                        num_batches_tracked, training, momentum, eps)

    @staticmethod
    def backward(ctx, dy, _dmean, _drstd):
        return _func_backward(_bn_grads, ctx, ctx.needs_input_grad[:3], dy) + (None,) * 6


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               *, num_batches_tracked=None):
    """torch.nn.functional.batch_norm through keel::batch_norm (CPU float32; torch's
    computation otherwise, said once). running_mean, running_var (and num_batches_tracked,
    incremented as torch.nn's BatchNorm does) are updated in place in training; momentum None
    is the cumulative average and needs num_batches_tracked. Training on a batch of 0 or 1
    value per channel is a ValueError. Input of fewer than 2 dims (no channel dim) runs torch's
    op."""
    if input.dim() < 2:
        _bn_check_rows(input, training)
        _fall_back("batch_norm", "input of fewer than 2 dims (keel needs (N, C, ...))")
        return _bn_torch(input, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum,
                         eps)[0]
    args = (input, weight, bias, running_mean, running_var, num_batches_tracked, bool(training),
            None if momentum is None else float(momentum), float(eps))
    if _in_func_transform():
        return _BatchNormFunc.apply(*args)[0]
    return _BN_OP(*args)[0]


class _KeelBatchNorm:
    """The forward of keel's BatchNorm modules: torch.nn's, with keel::batch_norm."""

    def forward(self, input):
        self._check_input_dim(input)
        tracking = self.training and self.track_running_stats
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if use_running else None,
                          self.running_var if use_running else None, self.weight, self.bias, batch_stats,
                          self.momentum, self.eps, num_batches_tracked=self.num_batches_tracked if tracking else None)


class BatchNorm1d(_KeelBatchNorm, nn.BatchNorm1d):
    """torch.nn.BatchNorm1d computed by keel::batch_norm: same constructor, parameters, buffers,
    state_dict and train/eval behaviour. (N, C) input is rows of C already; (N, C, L) input is
    read through a copy unless its channels are last in memory (x.transpose(1, 2) of an
    (N, L, C)-contiguous tensor)."""


class BatchNorm2d(_KeelBatchNorm, nn.BatchNorm2d):
    """torch.nn.BatchNorm2d computed by keel::batch_norm: same constructor, parameters, buffers,
    state_dict and train/eval behaviour. channels_last input (NHWC memory) is read and written
    in place, with no copy; NCHW-contiguous input is permuted to NHWC by a contiguous copy and y
    copied back. y has the input's memory format."""


class BatchNorm3d(_KeelBatchNorm, nn.BatchNorm3d):
    """torch.nn.BatchNorm3d computed by keel::batch_norm (channels_last_3d input: no copy)."""


# === LayerScale ================================================================================

def _ls_check(x, f, gamma):
    """(rows, dim, h's dtype) of layer_scale(x, f, gamma) after the checks every path shares."""
    who = "keel::layer_scale"
    if tuple(f.shape) != tuple(x.shape):
        raise KeelValueError(f"{who}: f.shape {tuple(f.shape)} != x.shape {tuple(x.shape)}", EINVAL)
    rows, dim = _split(x, gamma.shape, who)
    return rows, dim, _result_dtype(x, f, gamma)


@torch.library.custom_op("keel::layer_scale", mutates_args=())
def _layer_scale_op(x: Tensor, f: Tensor, gamma: Tensor) -> Tensor:
    """h = x + gamma * f (LayerScale's residual update), gamma over the trailing gamma.shape."""
    rows, dim, dtype = _ls_check(x, f, gamma)
    reason = _why_not_keel("layer_scale", (x, f, gamma), _KEEL_DTYPES, dtype)
    if reason is not None:
        _fall_back("layer_scale", reason)
        return (x + gamma * f).to(dtype).contiguous()
    h = torch.empty(x.shape, dtype=dtype)
    (tx, x), (tf, f) = _rows(x, gamma.dim(), dim), _rows(f, gamma.dim(), dim)
    gamma = _f32(gamma)
    if h.numel():
        run(_C.keel_layerscale_fwd, rows, dim, tx, tf, _addr(gamma), _new_rows(h, dim), 0)
    return h


@_layer_scale_op.register_fake
def _layer_scale_fake(x, f, gamma):
    return x.new_empty(x.shape, dtype=_ls_check(x, f, gamma)[2])


@torch.library.custom_op("keel::layer_scale_backward", mutates_args=())
def _layer_scale_backward_op(dh: Tensor, f: Tensor, gamma: Tensor, output_mask: list[bool]) -> tuple[Tensor, Tensor]:
    """(df, dgamma) of layer_scale: gamma * dh in f's dtype, the sum over rows of dh * f in
    gamma's dtype (dx is dh itself: the autograd formula passes it on)."""
    rows, dim, _ = _ls_check(dh, f, gamma)
    reason = _why_not_keel("layer_scale_backward", (dh, f, gamma), _KEEL_DTYPES)
    if reason is not None:
        _fall_back("layer_scale_backward", reason)
        return _layer_scale_backward_torch(dh, f, gamma, output_mask)
    df = torch.empty(f.shape, dtype=f.dtype) if output_mask[0] else _empty_grad(f)
    dgamma = torch.zeros(gamma.shape) if output_mask[1] else _empty_grad(gamma)
    k = gamma.dim()
    (tdh, dh), (tf, f) = _rows(dh, k, dim), _rows(f, k, dim)
    tdf = _new_rows(df, dim) if output_mask[0] else NO_TENSOR
    gamma32 = _f32(gamma)  # referenced through the call
    if dh.numel():
        run(_C.keel_layerscale_bwd, rows, dim, tdh, tf, _addr(gamma32), NO_TENSOR, tdf,
            _addr(dgamma) if output_mask[1] else None, 0)
    return df, dgamma.to(gamma.dtype)


def _layer_scale_backward_torch(dh, f, gamma, mask):
    """(df, dgamma) in torch's ops."""
    lead = list(range(dh.dim() - gamma.dim()))
    df = (gamma * dh).to(f.dtype).contiguous() if mask[0] else _empty_grad(f)
    dgamma = (dh * f).sum(lead).to(gamma.dtype) if mask[1] else _empty_grad(gamma)
    return df, dgamma


@_layer_scale_backward_op.register_fake
def _layer_scale_backward_fake(dh, f, gamma, output_mask):
    _ls_check(dh, f, gamma)
    df = f.new_empty(f.shape) if output_mask[0] else _empty_grad(f)
    return df, gamma.new_empty(gamma.shape if output_mask[1] else (0,))


def _ls_setup(ctx, inputs, output):
    x, f, gamma = inputs
    ctx.save_for_backward(f, gamma)
    ctx.x_dtype = x.dtype


def _ls_backward(ctx, dh):
    """(dx, df, dgamma): dx is dh (in x's dtype); df, dgamma through keel::layer_scale_backward
    (torch's formulas for gradients of gradients)."""
    f, gamma = ctx.saved_tensors
    needs = ctx.needs_input_grad
    dx = dh.to(ctx.x_dtype) if needs[0] else None
    mask = [needs[1], needs[2]]
    if not any(mask):
        return dx, None, None
    if _second_order("layer_scale"):
        df, dgamma = _layer_scale_backward_torch(dh, f, gamma, mask)
    else:
        df, dgamma = torch.ops.keel.layer_scale_backward(dh, f, gamma, mask)
    return dx, df if mask[0] else None, dgamma if mask[1] else None


_layer_scale_op.register_autograd(_ls_backward, setup_context=_ls_setup)
_torch_vmap.register("layer_scale", (0, 1))
_torch_vmap.register("layer_scale_backward")


class _LayerScaleFunc(torch.autograd.Function):
    """keel::layer_scale under torch.func transforms."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, f, gamma):
        return torch.ops.keel.layer_scale(x, f, gamma)

    setup_context = staticmethod(_ls_setup)

    @staticmethod
    def backward(ctx, dh):
        return _func_backward(_ls_backward, ctx, dh)


def layer_scale(x, f, gamma):
    """LayerScale's residual update h = x + gamma * f through keel::layer_scale: x the residual
    stream, f the branch's output, gamma over their trailing gamma.shape dims (CPU float32,
    bfloat16, float16; torch's computation otherwise, said once). h has the dtype torch's
    formula gives and is contiguous."""
    if _in_func_transform():
        return _LayerScaleFunc.apply(x, f, gamma)
    return torch.ops.keel.layer_scale(x, f, gamma)


class LayerScale(nn.Module):
    """LayerScale (Touvron et al. 2021, CaiT) with timm's interface: LayerScale(dim,
    init_values=1e-5, inplace=False), parameter `gamma` of shape (dim,) filled with init_values
    (timm's state_dict keys load here).

    forward(x) is timm's x * gamma, computed by torch's multiply (keel has no kernel for a bare
    scale; inplace=True multiplies x in place, as timm does). forward(x, residual) is the whole
    residual update `residual + gamma * x` in one keel::layer_scale call: in a block written
    `x = x + ls(branch(x))`, write `x = ls(branch(x), x)`."""

    def __init__(self, dim, init_values=1e-5, inplace=False, device=None, dtype=None):
        super().__init__()
        self.dim, self.init_values, self.inplace = dim, init_values, inplace
        self.gamma = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.gamma.fill_(self.init_values)

    def forward(self, x, residual=None):
        if residual is None:
            return x.mul_(self.gamma) if self.inplace else x * self.gamma
        return layer_scale(residual, x, self.gamma)

    def extra_repr(self):
        return f"{self.dim}, init_values={self.init_values}" + (", inplace=True" if self.inplace else "")


# === DyT =======================================================================================

def _dyt_check(x, normalized_shape, alpha, weight, bias):
    """(rows, dim, y's dtype) of dyt after the checks every path shares."""
    who = "keel::dyt"
    rows, dim = _split(x, normalized_shape, who)
    if alpha.numel() != 1:
        raise KeelValueError(f"{who}: alpha has {alpha.numel()} values (one expected)", EINVAL)
    _check_shape(weight, normalized_shape, "weight", who)
    _check_shape(bias, normalized_shape, "bias", who)
    return rows, dim, _result_dtype(x, alpha, weight, bias)


@torch.library.custom_op("keel::dyt", mutates_args=())
def _dyt_op(x: Tensor, normalized_shape: list[int], alpha: Tensor, weight: Optional[Tensor],
            bias: Optional[Tensor]) -> Tensor:
    """y = weight * tanh(alpha * x) + bias (DyT), weight and bias over the trailing normalized_shape."""
    rows, dim, dtype = _dyt_check(x, normalized_shape, alpha, weight, bias)
    reason = _why_not_keel("dyt", (x, alpha, weight, bias), _KEEL_DTYPES, dtype)
    if reason is not None:
        _fall_back("dyt", reason)
        y = torch.tanh(alpha * x)
        y = y if weight is None else y * weight
        return (y if bias is None else y + bias).to(dtype).contiguous()
    y, k = torch.empty(x.shape, dtype=dtype), len(normalized_shape)
    tx, x = _rows(x, k, dim)
    weight, bias = _f32(weight), _f32(bias)
    if y.numel():
        run(_C.keel_dyt_fwd, rows, dim, tx, _new_rows(y, dim), float(alpha), _addr(weight), _addr(bias), 0)
    return y


@_dyt_op.register_fake
def _dyt_fake(x, normalized_shape, alpha, weight, bias):
    return x.new_empty(x.shape, dtype=_dyt_check(x, normalized_shape, alpha, weight, bias)[2])


def _dyt_grad_dtype(x, alpha, weight):
    """dweight's and dbias's dtype: weight's, or y's without a weight."""
    return weight.dtype if weight is not None else _result_dtype(x, alpha)


@torch.library.custom_op("keel::dyt_backward", mutates_args=())
def _dyt_backward_op(dy: Tensor, x: Tensor, normalized_shape: list[int], alpha: Tensor, weight: Optional[Tensor],
                     output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, dalpha, dweight, dbias) of dyt (keel.h's keel_dyt_bwd)."""
    rows, dim, _ = _dyt_check(x, normalized_shape, alpha, weight, None)
    reason = _why_not_keel("dyt_backward", (dy, x, alpha, weight), _KEEL_DTYPES)
    if reason is not None:
        _fall_back("dyt_backward", reason)
        return _dyt_backward_torch(dy, x, normalized_shape, alpha, weight, output_mask)
    k, pdtype = len(normalized_shape), _dyt_grad_dtype(x, alpha, weight)
    dx = torch.empty(x.shape, dtype=x.dtype) if output_mask[0] else _empty_grad(x)
    dalpha = torch.zeros(1) if output_mask[1] else _empty_grad(alpha)
    dw, db = (torch.zeros(normalized_shape) if wanted else _empty_grad(x, pdtype) for wanted in output_mask[2:])
    (tdy, dy), (tx, x) = _rows(dy, k, dim), _rows(x, k, dim)
    tdx = _new_rows(dx, dim) if output_mask[0] else NO_TENSOR
    weight32 = _f32(weight)  # referenced through the call
    if x.numel():
        run(_C.keel_dyt_bwd, rows, dim, tdy, tx, float(alpha), _addr(weight32), tdx,
            *(_addr(g) if wanted else None for g, wanted in zip((dalpha, dw, db), output_mask[1:])), 0)
    dalpha = dalpha.reshape(alpha.shape).to(alpha.dtype) if output_mask[1] else dalpha
    return dx, dalpha, dw.to(pdtype), db.to(pdtype)


def _dyt_backward_torch(dy, x, normalized_shape, alpha, weight, mask):
    """The same gradients in torch's ops (keel.h's formulas)."""
    lead, pdtype = list(range(x.dim() - len(normalized_shape))), _dyt_grad_dtype(x, alpha, weight)
    t = torch.tanh(alpha * x)
    s = 1 - t * t
    g = dy if weight is None else dy * weight
    dx = (g * alpha * s).to(x.dtype).contiguous() if mask[0] else _empty_grad(x)
    dalpha = (g * x * s).sum().reshape(alpha.shape).to(alpha.dtype) if mask[1] else _empty_grad(alpha)
    dw = (dy * t).sum(lead).to(pdtype) if mask[2] else _empty_grad(x, pdtype)
    db = dy.sum(lead).to(pdtype) if mask[3] else _empty_grad(x, pdtype)
    return dx, dalpha, dw, db


@_dyt_backward_op.register_fake
def _dyt_backward_fake(dy, x, normalized_shape, alpha, weight, output_mask):
    _dyt_check(x, normalized_shape, alpha, weight, None)
    pdtype = _dyt_grad_dtype(x, alpha, weight)
    dx = x.new_empty(x.shape) if output_mask[0] else _empty_grad(x)
    dalpha = alpha.new_empty(alpha.shape if output_mask[1] else (0,))
    dw, db = (x.new_empty(normalized_shape if wanted else (0,), dtype=pdtype) for wanted in output_mask[2:])
    return dx, dalpha, dw, db


def _dyt_setup(ctx, inputs, output):
    x, normalized_shape, alpha, weight, bias = inputs
    ctx.save_for_backward(x, alpha, weight)
    ctx.normalized_shape, ctx.has_bias = normalized_shape, bias is not None


def _dyt_backward(ctx, dy):
    """(dx, None, dalpha, dweight, dbias) through keel::dyt_backward (torch's formulas for
    gradients of gradients)."""
    x, alpha, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [need[0], need[2], need[3] and weight is not None, need[4] and ctx.has_bias]
    if not any(mask):
        return (None,) * 5
    if _second_order("dyt"):
        grads = _dyt_backward_torch(dy, x, ctx.normalized_shape, alpha, weight, mask)
    else:
        grads = torch.ops.keel.dyt_backward(dy, x, ctx.normalized_shape, alpha, weight, mask)
    dx, dalpha, dw, db = (g if wanted else None for g, wanted in zip(grads, mask))
    return dx, None, dalpha, dw, db


_dyt_op.register_autograd(_dyt_backward, setup_context=_dyt_setup)
_torch_vmap.register("dyt", (0,))
_torch_vmap.register("dyt_backward")


class _DyTFunc(torch.autograd.Function):
    """keel::dyt under torch.func transforms."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, normalized_shape, alpha, weight, bias):
        return torch.ops.keel.dyt(x, normalized_shape, alpha, weight, bias)

    setup_context = staticmethod(_dyt_setup)

    @staticmethod
    def backward(ctx, dy):
        return _func_backward(_dyt_backward, ctx, dy)


def dyt(x, normalized_shape, alpha, weight=None, bias=None):
    """DyT (Zhu et al. 2025): y = weight * tanh(alpha * x) + bias through keel::dyt. alpha: a
    tensor of one value (learnable); weight, bias: tensors of normalized_shape (x's trailing
    dims) or None (1 and 0). CPU float32, bfloat16, float16 through keel (keel's float32 tanh,
    within 2 ulps); torch's computation otherwise, said once. y has the dtype torch's formula
    gives and is contiguous."""
    dims = list(normalized_tuple(normalized_shape, "keel.torch_layers.dyt"))
    if _in_func_transform():
        return _DyTFunc.apply(x, dims, alpha, weight, bias)
    return torch.ops.keel.dyt(x, dims, alpha, weight, bias)


class DyT(nn.Module):
    """DyT, Dynamic Tanh (Zhu et al. 2025), a normalization-free replacement of LayerNorm:
    y = weight * tanh(alpha * x) + bias over x's trailing normalized_shape. Parameters as the
    paper's reference module (DynamicTanh, channels last): alpha of shape (1,) filled with
    alpha_init_value, weight ones and bias zeros of normalized_shape."""

    def __init__(self, normalized_shape, alpha_init_value=0.5, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.normalized_shape = normalized_tuple(normalized_shape, "keel.torch_layers.DyT")
        self.alpha_init_value = alpha_init_value
        self.alpha = nn.Parameter(torch.empty(1, **kw))
        self.weight = nn.Parameter(torch.empty(self.normalized_shape, **kw))
        self.bias = nn.Parameter(torch.empty(self.normalized_shape, **kw))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init_value)
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x):
        return dyt(x, self.normalized_shape, self.alpha, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.normalized_shape}, alpha_init_value={self.alpha_init_value}"
