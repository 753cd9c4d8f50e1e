"""keel for PyTorch: LayerNorm and RMSNorm modules, drop-ins for torch.nn's, and patch(model);
the fused residual add + norm of a transformer block (add_layer_norm, add_rms_norm, and the
modules AddLayerNorm, AddRMSNorm: `y, h = norm(x, branch)` for `h = x + branch; y = norm(h)`).

CPU float32, bfloat16 and float16 tensors go through keel (forward saves mean/rstd; backward
skips the gradients autograd does not need, e.g. frozen weights). bf16/f16 activations are
computed in float32 with float64 statistics and rounded once; weight and bias of a bf16/f16
module are widened to float32 for the call and their gradients rounded back once. Anything else
falls back to torch's own op, with the same results torch gives: float64, other devices (CUDA,
meta), tensor subclasses, torch.func transforms (vmap, grad) and code being compiled by
torch.compile. Double backward (gradients of gradients) is not supported
on the keel path.

The fused ops (keel.h's keel_add_layernorm_* / keel_add_rmsnorm_*, python/keel/residual.py for
NumPy) compute, reading x and branch once:

    h = alpha * x + branch_scale * branch + skip_bias       (float32: ((alpha*x) + (s*b)) + bias)
    y = layer_norm(h) or rms_norm(h)

and return (y, h), or y alone with return_sum=False (post-norm, DeepNorm: h is not written).
Their fallback is that composition in torch's ops. The backward takes the gradients of y and of
h (h's consumers: the residual stream) and skips what autograd does not need. It saves h and
the statistics when h is materialised (x is not kept; branch only for dbranch_scale), else x and
branch (keel recomputes h, bitwise the forward's). It never writes into the incoming gradients
(autograd may hand one tensor to several functions); with alpha 1 and no branch_scale dx and
dbranch are the same numbers, computed once and returned for both, as torch's own add does.
"""

from collections import namedtuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from . import _lib
from ._arrays import NO_TENSOR, run
from ._errors import EINVAL, KeelValueError
from ._layout import normalized_tuple, row_stride, split_shape
from .functional import _NULL_ROW, BF16, F16, F32, FLOAT32_EPS, GAMMA_PLUS_ONE

__all__ = ["LayerNorm", "RMSNorm", "layer_norm", "rms_norm", "patch",
           "AddLayerNorm", "AddRMSNorm", "add_layer_norm", "add_rms_norm"]

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


def _rows_or_none(t, k, dim):
    """_rows of an optional tensor: (the absent keel_tensor, None) for None."""
    return (NO_TENSOR, None) if t is None else _rows(t, k, dim)


def _output(needed, shape, dtype, dim):
    """(keel_tensor, tensor) of a new contiguous output (y, h, a gradient such as dx), or (the
    absent keel_tensor, None) when not needed."""
    if not needed:
        return NO_TENSOR, None
    t = torch.empty(shape, dtype=dtype)
    return _lib.Tensor(_addr(t), _KEEL_DTYPE[dtype], dim), t


def _grad(needed, dims):
    """A float32 parameter gradient, zeroed (with 0 rows keel writes nothing), or None."""
    return torch.zeros(dims, dtype=torch.float32) if needed else None


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


def _forward(op, x, dims, weight, bias, eps, stats, flags=0):
    """keel's forward on tensors: y, plus mean/rstd (LayerNorm) or rstd (RMSNorm) with stats."""
    who = "keel.torch." + op
    lead, rows, dim = _split(x.shape, dims, who)
    tx, x = _rows(x, len(dims), dim)
    weight, bias = _param(weight, dims, "weight", who), _param(bias, dims, "bias", who)
    ty, y = _output(True, x.shape, x.dtype, dim)
    rstd = torch.empty(lead, dtype=torch.float32) if stats else None
    if op == "layer_norm":
        mean = torch.empty(lead, dtype=torch.float32) if stats else None
        run(_lib.lib.keel_layernorm_fwd, rows, dim, tx, ty, _addr(weight), _addr(bias), eps,
            _addr(mean), _addr(rstd), 0)
        return y, mean, rstd
    run(_lib.lib.keel_rmsnorm_fwd, rows, dim, tx, ty, _addr(weight), eps, _addr(rstd), flags)
    return y, None, rstd


def _backward(op, dy, x, dims, weight, mean, rstd, eps, need_dx, need_dw, need_db, flags=0):
    who = "keel.torch." + op
    _, rows, dim = _split(x.shape, dims, who)
    (tdy, dy), (tx, x) = _rows(dy, len(dims), dim), _rows(x, len(dims), dim)
    tdx, dx = _output(need_dx, x.shape, x.dtype, dim)
    dw, db = _grad(need_dw, dims), _grad(need_db, dims)
    weight = _param(weight, dims, "weight", who)
    if op == "layer_norm":
        run(_lib.lib.keel_layernorm_bwd, rows, dim, tdy, tx, _addr(mean), _addr(rstd),
            _addr(weight), eps, tdx, _addr(dw), _addr(db), 0)
    else:
        run(_lib.lib.keel_rmsnorm_bwd, rows, dim, tdy, tx, _addr(rstd), _addr(weight), eps,
            tdx, _addr(dw), flags)
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
    def forward(ctx, x, weight, dims, eps, flags):
        y, _, rstd = _forward("rms_norm", x, dims, weight, None, eps, stats=True, flags=flags)
        ctx.save_for_backward(x, weight, rstd)
        ctx.dims, ctx.eps, ctx.flags = dims, eps, flags
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        need_dx, need_dw = ctx.needs_input_grad[:2]
        dx, dw, _ = _backward("rms_norm", dy, x, ctx.dims, weight, None, rstd, ctx.eps,
                              need_dx, need_dw, False, ctx.flags)
        return dx, _as(dw, weight), None, None, None


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


def rms_norm(x, normalized_shape, weight=None, eps=None, *, add_unit_offset=False):
    """torch.nn.functional.rms_norm through keel (CPU float32; torch's op otherwise).
    eps None: float32's machine epsilon, as torch. add_unit_offset: scale by (1 + weight)."""
    if not _keel_can_run(x, weight):
        if add_unit_offset and weight is not None:
            weight = 1 + weight
        return F.rms_norm(x, normalized_shape, weight, eps)
    dims = _dims(normalized_shape, "keel.torch.rms_norm")
    eps = FLOAT32_EPS if eps is None else float(eps)
    flags = GAMMA_PLUS_ONE if add_unit_offset else 0
    if _needs_grad(x, weight):
        return _RMSNormFunction.apply(x, weight, dims, eps, flags)
    return _forward("rms_norm", x, dims, weight, None, eps, stats=False, flags=flags)[0]


# --- the fused residual add + norm ------------------------------------------------------------

class _AddSpec(namedtuple("_AddSpec", "op dims eps alpha flags")):
    """What a call of add_layer_norm / add_rms_norm fixes: op ("layer_norm" or "rms_norm"), dims
    (normalized_shape, a tuple), eps and alpha (floats), keel's flags (GAMMA_PLUS_ONE or 0)."""

    __slots__ = ()

    @property
    def who(self):
        return "keel.torch.add_" + self.op


def _residual(spec, tx, tb, branch_scale, skip_bias):
    """keel_residual of a call, and the float32 vectors it points to (keep them alive)."""
    scale = _param(branch_scale, spec.dims, "branch_scale", spec.who)
    sbias = _param(skip_bias, spec.dims, "skip_bias", spec.who)
    return _lib.Residual(tx, tb, spec.alpha, _addr(scale), _addr(sbias)), (scale, sbias)


def _add_forward(spec, x, branch, weight, bias, branch_scale, skip_bias, return_sum, stats):
    """keel's fused forward on tensors: y, h (None without return_sum), and mean (LayerNorm),
    rstd with stats. y and h have the dtype of x + branch."""
    who = spec.who
    lead, rows, dim = _split(x.shape, spec.dims, who)
    if branch.shape != x.shape:
        raise KeelValueError(f"{who}: branch.shape {tuple(branch.shape)} != x.shape {tuple(x.shape)}", EINVAL)
    k, dtype = len(spec.dims), torch.promote_types(x.dtype, branch.dtype)
    (tx, x), (tb, branch) = _rows(x, k, dim), _rows(branch, k, dim)
    res, keep = _residual(spec, tx, tb, branch_scale, skip_bias)
    th, h = _output(return_sum, x.shape, dtype, dim)
    ty, y = _output(True, x.shape, dtype, dim)
    weight = _param(weight, spec.dims, "weight", who)
    rstd = torch.empty(lead, dtype=torch.float32) if stats else None
    if spec.op == "layer_norm":
        bias = _param(bias, spec.dims, "bias", who)
        mean = torch.empty(lead, dtype=torch.float32) if stats else None
        run(_lib.lib.keel_add_layernorm_fwd, rows, dim, res, th, ty, _addr(weight), _addr(bias), spec.eps,
            _addr(mean), _addr(rstd), spec.flags)
        return y, h, mean, rstd
    run(_lib.lib.keel_add_rmsnorm_fwd, rows, dim, res, th, ty, _addr(weight), spec.eps, _addr(rstd), spec.flags)
    return y, h, None, rstd


def _add_backward(spec, dy, dh, h, x, branch, weight, branch_scale, skip_bias, mean, rstd, dtypes, needs):
    """keel's fused backward: (dx, dbranch, dweight, dbias, dbranch_scale, dskip_bias), None for
    those not in needs. dh None: no gradient from h. h None: recomputed from x and branch (then
    given). dtypes: those of x and branch (of dx and dbranch). Parameter gradients are float32."""
    who = spec.who
    shape = (h if h is not None else x).shape
    _, rows, dim = _split(shape, spec.dims, who)
    k = len(spec.dims)
    need_dx, need_dbranch, need_dw, need_db, need_dscale, need_dsbias = needs
    (tdy, dy), (tdh, dh) = _rows(dy, k, dim), _rows_or_none(dh, k, dim)
    (th, h), (tx, x), (tb, branch) = (_rows_or_none(t, k, dim) for t in (h, x, branch))
    res, keep = _residual(spec, tx, tb, branch_scale, skip_bias)
    # alpha 1 and no branch_scale: dx = dbranch = G, computed once (torch's add returns one
    # tensor for both inputs too)
    same = need_dx and need_dbranch and spec.alpha == 1.0 and branch_scale is None and dtypes[0] is dtypes[1]
    tdx, dx = _output(need_dx, shape, dtypes[0], dim)
    tdr, dbranch = _output(need_dbranch and not same, shape, dtypes[1], dim)
    dscale, dsbias = _grad(need_dscale, spec.dims), _grad(need_dsbias, spec.dims)
    grads = _lib.ResidualGrads(tdx, tdr, _addr(dscale), _addr(dsbias))
    dw, db = _grad(need_dw, spec.dims), _grad(need_db, spec.dims)
    weight = _param(weight, spec.dims, "weight", who)
    if spec.op == "layer_norm":
        run(_lib.lib.keel_add_layernorm_bwd, rows, dim, tdy, tdh, res, th, _addr(mean), _addr(rstd),
            _addr(weight), spec.eps, grads, _addr(dw), _addr(db), spec.flags)
    else:
        run(_lib.lib.keel_add_rmsnorm_bwd, rows, dim, tdy, tdh, res, th, _addr(rstd), _addr(weight), spec.eps,
            grads, _addr(dw), spec.flags)
    return dx, dx if same else dbranch, dw, db, dscale, dsbias


class _AddNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, branch, weight, bias, branch_scale, skip_bias, spec, return_sum):
        y, h, mean, rstd = _add_forward(spec, x, branch, weight, bias, branch_scale, skip_bias, return_sum,
                                        stats=True)
        if h is not None:  # h stands for x; branch is read only for dbranch_scale
            keep_branch = branch if ctx.needs_input_grad[4] else None
            ctx.save_for_backward(h, None, keep_branch, weight, branch_scale, None, mean, rstd)
        else:  # post-norm: keel recomputes h from x and branch
            ctx.save_for_backward(None, x, branch, weight, branch_scale, skip_bias, mean, rstd)
        ctx.set_materialize_grads(False)  # an unused output's gradient comes as None, not zeros
        ctx.spec, ctx.shape, ctx.dtypes = spec, x.shape, (x.dtype, branch.dtype, y.dtype)
        ctx.param_dtypes = tuple(p.dtype if p is not None else None for p in (weight, bias, branch_scale, skip_bias))
        return (y, h) if return_sum else y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh=None):
        h, x, branch, weight, branch_scale, skip_bias, mean, rstd = ctx.saved_tensors
        if dy is None:  # only h was used: y passes no gradient (keel needs a dy)
            dy = torch.zeros(ctx.shape, dtype=ctx.dtypes[2])
        grads = _add_backward(ctx.spec, dy, dh, h, x, branch, weight, branch_scale, skip_bias, mean, rstd,
                              ctx.dtypes, ctx.needs_input_grad[:6])
        params = (_as(g, dtype) for g, dtype in zip(grads[2:], ctx.param_dtypes))
        return (grads[0], grads[1], *params, None, None)


def _residual_torch(x, branch, alpha, branch_scale, skip_bias):
    """h = alpha * x + branch_scale * branch + skip_bias in torch's ops (the fallback), in keel's
    order."""
    h = (x if alpha == 1 else alpha * x) + (branch if branch_scale is None else branch_scale * branch)
    return h if skip_bias is None else h + skip_bias


def _add_norm(spec, x, branch, weight, bias, branch_scale, skip_bias, return_sum):
    """The keel path of add_layer_norm / add_rms_norm: through autograd when a gradient is due."""
    if _needs_grad(x, branch, weight, bias, branch_scale, skip_bias):
        return _AddNormFunction.apply(x, branch, weight, bias, branch_scale, skip_bias, spec, bool(return_sum))
    y, h, _, _ = _add_forward(spec, x, branch, weight, bias, branch_scale, skip_bias, return_sum, stats=False)
    return (y, h) if return_sum else y


def add_layer_norm(x, branch, normalized_shape, weight=None, bias=None, eps=1e-5, *, alpha=1.0,
                   branch_scale=None, skip_bias=None, return_sum=True):
    """h = alpha * x + branch_scale * branch + skip_bias, y = layer_norm(h), fused (CPU float32,
    bf16, f16 through keel; torch's ops otherwise). Returns (y, h): h the new residual stream of a
    pre-norm block, or y alone with return_sum=False (post-norm; DeepNorm's alpha up-weights x).
    branch: x's shape; branch_scale (LayerScale), skip_bias: tensors of normalized_shape or None;
    alpha: a float. y and h take the dtype of x + branch."""
    dims = _dims(normalized_shape, "keel.torch.add_layer_norm")
    if not _keel_can_run(x, branch, weight, bias, branch_scale, skip_bias):
        h = _residual_torch(x, branch, alpha, branch_scale, skip_bias)
        y = F.layer_norm(h, dims, weight, bias, eps)
        return (y, h) if return_sum else y
    spec = _AddSpec("layer_norm", dims, float(eps), float(alpha), 0)
    return _add_norm(spec, x, branch, weight, bias, branch_scale, skip_bias, return_sum)


def add_rms_norm(x, branch, normalized_shape, weight=None, eps=None, *, alpha=1.0, branch_scale=None,
                 skip_bias=None, add_unit_offset=False, return_sum=True):
    """h = alpha * x + branch_scale * branch + skip_bias, y = rms_norm(h), fused; as
    add_layer_norm. eps None: float32's machine epsilon, as torch. add_unit_offset: scale by
    (1 + weight), Gemma's RMSNorm (weight's gradient is the same numbers)."""
    dims = _dims(normalized_shape, "keel.torch.add_rms_norm")
    if not _keel_can_run(x, branch, weight, branch_scale, skip_bias):
        h = _residual_torch(x, branch, alpha, branch_scale, skip_bias)
        y = F.rms_norm(h, dims, 1 + weight if add_unit_offset and weight is not None else weight, eps)
        return (y, h) if return_sum else y
    spec = _AddSpec("rms_norm", dims, FLOAT32_EPS if eps is None else float(eps), float(alpha),
                    GAMMA_PLUS_ONE if add_unit_offset else 0)
    return _add_norm(spec, x, branch, weight, None, branch_scale, skip_bias, return_sum)


class LayerNorm(nn.LayerNorm):
    """torch.nn.LayerNorm computed by keel: same constructor, parameters and state_dict."""

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """torch.nn.RMSNorm computed by keel: same constructor, parameters and state_dict."""

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)


class _AddNorm(nn.Module):
    """What AddLayerNorm and AddRMSNorm share: parameters weight (and bias) as torch.nn's norm
    (so its state_dict loads), an optional learned branch_scale, alpha, return_sum."""

    def __init__(self, normalized_shape, eps, elementwise_affine, bias, alpha, branch_scale_init, return_sum,
                 device, dtype):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.normalized_shape = normalized_tuple(normalized_shape, "keel.torch." + type(self).__name__)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        self.alpha, self.branch_scale_init, self.return_sum = float(alpha), branch_scale_init, bool(return_sum)
        for name, wanted in (("weight", elementwise_affine), ("bias", elementwise_affine and bias),
                             ("branch_scale", branch_scale_init is not None)):
            self.register_parameter(name, nn.Parameter(torch.empty(self.normalized_shape, **kw)) if wanted else None)

    def reset_parameters(self):
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()
            if self.branch_scale is not None:
                self.branch_scale.fill_(self.branch_scale_init)

    def _options_repr(self):
        """The options beyond torch.nn's norm, for extra_repr."""
        text = ""
        if self.alpha != 1.0:
            text += f", alpha={self.alpha}"
        if self.branch_scale_init is not None:
            text += f", branch_scale_init={self.branch_scale_init}"
        if getattr(self, "add_unit_offset", False):
            text += ", add_unit_offset=True"
        return text if self.return_sum else text + ", return_sum=False"


class AddLayerNorm(_AddNorm):
    """The fused residual add + LayerNorm of a transformer block: forward(x, branch) returns
    (y, h) with h = alpha * x + branch_scale * branch and y = layer_norm(h), the two lines
    `h = x + branch; y = norm(h)` of a pre-norm block in one pass (return_sum=False: y alone,
    post-norm; alpha: DeepNorm's up-weighting of x). Parameters weight and bias as
    torch.nn.LayerNorm's (same names, shapes, initial values: its state_dict loads here).
    branch_scale_init: a float gives a learned per-feature branch_scale (LayerScale, CaiT: 0.1,
    1e-5 at depth 24, 1e-6 deeper) initialised to it; None: none."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *, alpha=1.0,
                 branch_scale_init=None, return_sum=True, device=None, dtype=None):
        super().__init__(normalized_shape, eps, elementwise_affine, bias, alpha, branch_scale_init, return_sum,
                         device, dtype)
        self.reset_parameters()

    def forward(self, x, branch):
        return add_layer_norm(x, branch, self.normalized_shape, self.weight, self.bias, self.eps, alpha=self.alpha,
                              branch_scale=self.branch_scale, return_sum=self.return_sum)

    def extra_repr(self):
        return nn.LayerNorm.extra_repr(self) + self._options_repr()


class AddRMSNorm(_AddNorm):
    """The fused residual add + RMSNorm (as AddLayerNorm): forward(x, branch) -> (y, h).
    Parameter weight as torch.nn.RMSNorm's (its state_dict loads here); eps None: float32's
    machine epsilon. add_unit_offset: scale by (1 + weight), Gemma's RMSNorm (weight starts at 0)."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, *, alpha=1.0, add_unit_offset=False,
                 branch_scale_init=None, return_sum=True, device=None, dtype=None):
        super().__init__(normalized_shape, eps, elementwise_affine, False, alpha, branch_scale_init, return_sum,
                         device, dtype)
        self.add_unit_offset = bool(add_unit_offset)
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        if self.add_unit_offset and self.weight is not None:
            with torch.no_grad():
                self.weight.zero_()

    def forward(self, x, branch):
        return add_rms_norm(x, branch, self.normalized_shape, self.weight, self.eps, alpha=self.alpha,
                            branch_scale=self.branch_scale, add_unit_offset=self.add_unit_offset,
                            return_sum=self.return_sum)

    def extra_repr(self):
        return nn.RMSNorm.extra_repr(self) + self._options_repr()


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
