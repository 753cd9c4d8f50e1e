"""keel for PyTorch: LayerNorm and RMSNorm modules, drop-ins for torch.nn's, and patch(model).

CPU float32, bfloat16 and float16 tensors go through keel (forward saves mean/rstd; backward
skips the gradients autograd does not need, e.g. frozen weights). bf16/f16 activations are
computed in float32 with float64 statistics and rounded once; weight and bias of a bf16/f16
module are widened to float32 for the call and their gradients rounded back once. Anything else
falls back to torch's own op, with the same results torch gives: float64, other devices (CUDA,
meta), tensor subclasses, torch.func transforms (vmap, grad) and code being compiled by
torch.compile. Double backward (gradients of gradients) is not supported
on the keel path.
"""

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from . import _lib
from ._arrays import run
from ._errors import EINVAL, KeelValueError
from ._layout import normalized_tuple, row_stride, split_shape
from .functional import _NULL_ROW, BF16, F16, F32, FLOAT32_EPS

__all__ = ["LayerNorm", "RMSNorm", "layer_norm", "rms_norm", "patch"]

_NULL = _NULL_ROW.ctypes.data  # address for empty tensors (data_ptr() 0); never dereferenced


def _is_compiling():
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(fn and fn())


_STRIDED, _PLAIN = torch.strided, (torch.Tensor, nn.Parameter)
# torch dtype -> keel dtype of the storage types keel computes
_KEEL_DTYPE = {torch.float32: F32, torch.bfloat16: BF16, torch.float16: F16}
_is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", lambda t: False)


def _keel_can_run(x, *params):
    """True when keel computes this call: plain CPU float32/bf16/f16 strided tensors (not
    subclasses such as fake tensors, not torch.func's wrapped tensors), not under torch.compile."""
    if _is_compiling():  # first: torch.compile traces this function
        return False
    for t in (x,) + params:
        if t is not None and not (type(t) in _PLAIN and t.dtype in _KEEL_DTYPE and t.is_cpu
                                  and t.layout is _STRIDED and not _is_wrapped(t)):
            return False
    return True


def _addr(t):
    if t is None:
        return None
    ptr = t.data_ptr()
    if ptr == 0 and t.numel():  # never hand keel a stand-in address for real data
        raise RuntimeError("keel.torch: a non-empty tensor without storage reached keel")
    return ptr or _NULL


def _rows(t, k, dim):
    """(keel_tensor, tensor) of t: its rows read in place when evenly strided, else those of a
    contiguous copy (the tensor returned: keep it alive through the call)."""
    if t.data_ptr() % t.element_size():  # misaligned (a tensor over a foreign buffer): an aligned copy
        t, stride = t.clone(memory_format=torch.contiguous_format), dim
    elif t.is_contiguous():
        stride = dim
    else:
        stride = row_stride(t.shape, t.stride(), k, dim)
    if stride is None:
        t, stride = t.contiguous(), dim
    return _lib.Tensor(_addr(t), _KEEL_DTYPE[t.dtype], stride), t


_SPLITS = {}  # (dims, shape) -> (lead, rows, dim): split_shape's answers, computed once per shape


def _split(shape, dims, who):
    found = _SPLITS.get((dims, shape))
    if found is None:
        found = split_shape(shape, dims, who)
        if len(_SPLITS) >= 4096:
            _SPLITS.clear()
        _SPLITS[(dims, shape)] = found
    return found


def _param(p, dims, name, who):
    if p is None:
        return None
    if p.shape != dims:
        raise KeelValueError(f"{who}: {name}.shape {tuple(p.shape)} != normalized_shape {dims}", EINVAL)
    p = p if p.is_contiguous() else p.detach().contiguous()
    return p if p.dtype is torch.float32 else p.detach().float()  # keel's parameters are float32


def _forward(op, x, dims, weight, bias, eps, stats):
    """keel's forward on tensors: y, plus mean/rstd (LayerNorm) or rstd (RMSNorm) with stats."""
    who = "keel.torch." + op
    lead, rows, dim = _split(x.shape, dims, who)
    tx, x = _rows(x, len(dims), dim)
    weight, bias = _param(weight, dims, "weight", who), _param(bias, dims, "bias", who)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    ty = _lib.Tensor(_addr(y), _KEEL_DTYPE[y.dtype], dim)
    rstd = torch.empty(lead, dtype=torch.float32) if stats else None
    if op == "layer_norm":
        mean = torch.empty(lead, dtype=torch.float32) if stats else None
        run(_lib.lib.keel_layernorm_fwd, rows, dim, tx, ty, _addr(weight), _addr(bias), eps,
            _addr(mean), _addr(rstd), 0)
        return y, mean, rstd
    run(_lib.lib.keel_rmsnorm_fwd, rows, dim, tx, ty, _addr(weight), eps, _addr(rstd), 0)
    return y, None, rstd


def _backward(op, dy, x, dims, weight, mean, rstd, eps, need_dx, need_dw, need_db):
    who = "keel.torch." + op
    _, rows, dim = _split(x.shape, dims, who)
    (tdy, dy), (tx, x) = _rows(dy, len(dims), dim), _rows(x, len(dims), dim)
    dx = torch.empty_like(x, memory_format=torch.contiguous_format) if need_dx else None
    tdx = _lib.Tensor(_addr(dx), _KEEL_DTYPE[x.dtype], dim)
    dw = torch.zeros(dims, dtype=torch.float32) if need_dw else None  # 0 rows: keel writes nothing
    db = torch.zeros(dims, dtype=torch.float32) if need_db else None
    weight = _param(weight, dims, "weight", who)
    if op == "layer_norm":
        run(_lib.lib.keel_layernorm_bwd, rows, dim, tdy, tx, _addr(mean), _addr(rstd),
            _addr(weight), eps, tdx, _addr(dw), _addr(db), 0)
    else:
        run(_lib.lib.keel_rmsnorm_bwd, rows, dim, tdy, tx, _addr(rstd), _addr(weight), eps,
            tdx, _addr(dw), 0)
    return dx, dw, db


def _as(grad, like):
    """A float32 parameter gradient in its parameter's dtype (like: a tensor or a dtype), rounded
    once."""
    dtype = like.dtype if isinstance(like, torch.Tensor) else like
    return grad if grad is None or dtype is None or grad.dtype is dtype else grad.to(dtype)


class _LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dims, eps):
        y, mean, rstd = _forward("layer_norm", x, dims, weight, bias, eps, stats=True)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.dims, ctx.eps = dims, eps
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        need_dx, need_dw, need_db = ctx.needs_input_grad[:3]
        dx, dw, db = _backward("layer_norm", dy, x, ctx.dims, weight, mean, rstd, ctx.eps,
                               need_dx, need_dw, need_db)
        return dx, _as(dw, weight), _as(db, ctx.bias_dtype), None, None


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, dims, eps):
        y, _, rstd = _forward("rms_norm", x, dims, weight, None, eps, stats=True)
        ctx.save_for_backward(x, weight, rstd)
        ctx.dims, ctx.eps = dims, eps
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        need_dx, need_dw = ctx.needs_input_grad[:2]
        dx, dw, _ = _backward("rms_norm", dy, x, ctx.dims, weight, None, rstd, ctx.eps,
                              need_dx, need_dw, False)
        return dx, _as(dw, weight), None, None


def _dims(normalized_shape, who):
    """normalized_shape as a tuple of ints; a module's own (a tuple of one int) as it is."""
    if type(normalized_shape) is tuple and len(normalized_shape) == 1 and type(normalized_shape[0]) is int \
            and normalized_shape[0] >= 0:
        return normalized_shape
    return normalized_tuple(normalized_shape, who)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm through keel (CPU float32; torch's op otherwise)."""
    if not _keel_can_run(x, weight, bias):
        return F.layer_norm(x, normalized_shape, weight, bias, eps)
    dims = _dims(normalized_shape, "keel.torch.layer_norm")
    if _needs_grad(x, weight, bias):
        return _LayerNormFunction.apply(x, weight, bias, dims, float(eps))
    return _forward("layer_norm", x, dims, weight, bias, float(eps), stats=False)[0]


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """torch.nn.functional.rms_norm through keel (CPU float32; torch's op otherwise).
    eps None: float32's machine epsilon, as torch."""
    if not _keel_can_run(x, weight):
        return F.rms_norm(x, normalized_shape, weight, eps)
    dims = _dims(normalized_shape, "keel.torch.rms_norm")
    eps = FLOAT32_EPS if eps is None else float(eps)
    if _needs_grad(x, weight):
        return _RMSNormFunction.apply(x, weight, dims, eps)
    return _forward("rms_norm", x, dims, weight, None, eps, stats=False)[0]


class LayerNorm(nn.LayerNorm):
    """torch.nn.LayerNorm computed by keel: same constructor, parameters and state_dict."""

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """torch.nn.RMSNorm computed by keel: same constructor, parameters and state_dict."""

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


def _replacement(module):
    """The keel module taking over `module`'s parameters (the same Parameter objects), or None."""
    if type(module) is nn.LayerNorm:
        new = LayerNorm(module.normalized_shape, eps=module.eps, elementwise_affine=module.elementwise_affine,
                        bias=module.bias is not None, device="meta")
        new.weight, new.bias = module.weight, module.bias
    elif type(module) is nn.RMSNorm:
        new = RMSNorm(module.normalized_shape, eps=module.eps, elementwise_affine=module.elementwise_affine,
                      device="meta")
        new.weight = module.weight
    else:
        return None
    return new.train(module.training)


def patch(model):
    """Replace, in place, every torch.nn.LayerNorm and torch.nn.RMSNorm inside `model` (exactly
    those classes, not subclasses) by keel's. The new modules take over the old ones' Parameter
    objects, so weights, state_dict keys and an optimizer built before the patch all stay valid.
    Returns how many modules were replaced. (The root module itself is not replaced.)"""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _replacement(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count
