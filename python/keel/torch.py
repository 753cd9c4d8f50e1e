"""keel for PyTorch: LayerNorm and RMSNorm modules, drop-ins for torch.nn's, and patch(model);
the fused residual add + norm of a transformer block (add_layer_norm, add_rms_norm, and the
modules AddLayerNorm, AddRMSNorm: `y, h = norm(x, branch)` for `h = x + branch; y = norm(h)`).

The ops are torch operators (torch.ops.keel.layer_norm, rms_norm, add_layer_norm, add_rms_norm
and their backwards), compiled C++ registered with torch's dispatcher (python/keel/csrc/
torch_ops.cpp): eager calls cost what torch's own ops cost, and torch.compile, torch.export and
torch.func keep them in their graphs (each has a fake kernel, below, and its autograd formula in
C++). CPU float32, bfloat16 and float16 tensors go through keel (forward saves mean/rstd;
backward skips the gradients autograd does not need, e.g. frozen weights). bf16/f16 activations
are computed in float32 with float64 statistics and rounded once; weight and bias of a bf16/f16
module are widened to float32 for the call and their gradients rounded back once.

Anything else (float64 and other dtypes, CUDA and other devices, meta tensors) goes to torch's
own op, with the results torch gives, and keel says so once per kind of call (a KeelFallbackWarning;
`fallbacks()` lists what fell back in this process).

Gradients of gradients (create_graph=True) are computed by the backward again in torch's
differentiable ops (the same first derivative up to float rounding), so the second derivative is
torch's formula's: right, not keel's bits.

The fused ops (keel.h's keel_add_layernorm_* / keel_add_rmsnorm_*, python/keel/residual.py for
NumPy) compute, reading x and branch once:

    h = alpha * x + branch_scale * branch + skip_bias       (float32: ((alpha*x) + (s*b)) + bias)
    y = layer_norm(h) or rms_norm(h)

and return (y, h), or y alone with return_sum=False (post-norm, DeepNorm: h is not written).
The backward takes the gradients of y and of h (h's consumers: the residual stream) and skips
what autograd does not need. It saves h and the statistics when h is materialised (x is not
kept; branch only for dbranch_scale), else x and branch (keel recomputes h, bitwise the
forward's). With alpha 1 and no branch_scale dx and dbranch are the same numbers, computed once
and returned for both, as torch's own add does.
"""

import torch
from torch import nn
from torch.nn import functional as F

from . import _torch_ext, _torch_vmap
from . import _context
from ._arrays import as_float
from ._layout import normalized_tuple
from ._patch import patch, unpatch
from ._torch_fallback import KeelFallbackWarning, fall_back, fallbacks
from .torch_layers import BatchNorm1d, BatchNorm2d, BatchNorm3d, DyT, LayerScale, batch_norm, dyt, layer_scale
from .functional import FLOAT32_EPS

__all__ = ["LayerNorm", "RMSNorm", "layer_norm", "rms_norm", "patch", "unpatch", "fallbacks", "KeelFallbackWarning",
           "AddLayerNorm", "AddRMSNorm", "add_layer_norm", "add_rms_norm",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerScale", "DyT", "batch_norm", "layer_scale", "dyt"]

_fast, _ext = _torch_ext.load()  # registers torch.ops.keel.*
# The operators' keel context follows keel.set_num_threads (which may have been called before).
_context.thread_listeners.append(_ext.keel_torch_set_threads)
if _context.current is not None:
    _ext.keel_torch_set_threads(_context.current.threads())
_ops = torch.ops.keel
_LN, _RMS = _ops.layer_norm.default, _ops.rms_norm.default
_ADD_LN, _ADD_RMS = _ops.add_layer_norm.default, _ops.add_rms_norm.default

_compiling = torch.compiler.is_compiling

# torch dtypes keel computes
_KEEL_DTYPES = frozenset((torch.float32, torch.bfloat16, torch.float16))


# --- what keel does not compute: torch's op, said once ------------------------------------------

def _fallback(op, x):
    """Records (and warns once) that `op` on x goes to torch's op."""
    reason = f"dtype {x.dtype}" if x.dtype not in _KEEL_DTYPES else f"device {x.device.type}"
    fall_back(op, reason + " (keel computes float32, bfloat16 and float16 on the CPU)")


def _keel_takes(x):
    return x.is_cpu and x.dtype in _KEEL_DTYPES


def _dims(normalized_shape, who):
    """normalized_shape as a tuple of ints; a module's own (a tuple of one int) as it is."""
    if type(normalized_shape) is tuple and len(normalized_shape) == 1 and type(normalized_shape[0]) is int \
            and normalized_shape[0] >= 0:
        return normalized_shape
    return normalized_tuple(normalized_shape, who)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm through keel (CPU float32/bf16/f16; torch's op otherwise)."""
    if not _compiling():  # eager: the compiled entry (Dynamo traces torch.ops.keel below instead)
        y = _fast.layer_norm(x, normalized_shape, weight, bias, eps)
        if y is not None:
            return y
    if not _keel_takes(x):
        _fallback("layer_norm", x)
        return F.layer_norm(x, normalized_shape, weight, bias, eps)
    return _LN(x, _dims(normalized_shape, "keel.torch.layer_norm"), weight, bias,
               as_float(eps, "eps", "keel.torch.layer_norm"))[0]


def rms_norm(x, normalized_shape, weight=None, eps=None, *, add_unit_offset=False):
    """torch.nn.functional.rms_norm through keel (CPU float32/bf16/f16; torch's op otherwise).
    eps None: float32's machine epsilon (torch: that of x's dtype). add_unit_offset: scale by
    (1 + weight), Gemma's RMSNorm."""
    if not _compiling():
        y = _fast.rms_norm(x, normalized_shape, weight, FLOAT32_EPS if eps is None else eps, add_unit_offset)
        if y is not None:
            return y
    if not _keel_takes(x):
        _fallback("rms_norm", x)
        if add_unit_offset and weight is not None:
            weight = 1 + weight
        return F.rms_norm(x, normalized_shape, weight, eps)
    eps = FLOAT32_EPS if eps is None else as_float(eps, "eps", "keel.torch.rms_norm")
    return _RMS(x, _dims(normalized_shape, "keel.torch.rms_norm"), weight, eps, bool(add_unit_offset))[0]


# --- the fused residual add + norm ------------------------------------------------------------

def _residual_torch(x, branch, alpha, branch_scale, skip_bias):
    """h = alpha * x + branch_scale * branch + skip_bias in torch's ops (the fallback), in keel's
    order."""
    h = (x if alpha == 1 else alpha * x) + (branch if branch_scale is None else branch_scale * branch)
    return h if skip_bias is None else h + skip_bias


def add_layer_norm(x, branch, normalized_shape, weight=None, bias=None, eps=1e-5, *, alpha=1.0,
                   branch_scale=None, skip_bias=None, return_sum=True):
    """h = alpha * x + branch_scale * branch + skip_bias, y = layer_norm(h), fused (CPU float32,
    bf16, f16 through keel; torch's ops otherwise). Returns (y, h): h the new residual stream of a
    pre-norm block, or y alone with return_sum=False (post-norm; DeepNorm's alpha up-weights x).
    branch: x's shape; branch_scale (LayerScale), skip_bias: tensors of normalized_shape or None;
    alpha: a float. y and h take the dtype of x + branch."""
    if not _compiling():
        out = _fast.add_layer_norm(x, branch, normalized_shape, weight, bias, eps, alpha, branch_scale, skip_bias,
                                   return_sum)
        if out is not None:
            return out
    dims = _dims(normalized_shape, "keel.torch.add_layer_norm")
    if not (_keel_takes(x) and _keel_takes(branch)):
        _fallback("add_layer_norm", x if not _keel_takes(x) else branch)
        h = _residual_torch(x, branch, alpha, branch_scale, skip_bias)
        y = F.layer_norm(h, dims, weight, bias, eps)
        return (y, h) if return_sum else y
    eps = as_float(eps, "eps", "keel.torch.add_layer_norm")
    y, h, _, _ = _ADD_LN(x, branch, dims, weight, bias, eps, alpha, branch_scale, skip_bias, bool(return_sum))
    return (y, h) if return_sum else y


def add_rms_norm(x, branch, normalized_shape, weight=None, eps=None, *, alpha=1.0, branch_scale=None,
                 skip_bias=None, add_unit_offset=False, return_sum=True):
    """h = alpha * x + branch_scale * branch + skip_bias, y = rms_norm(h), fused; as
    add_layer_norm. eps None: float32's machine epsilon. add_unit_offset: scale by (1 + weight),
    Gemma's RMSNorm (weight's gradient is the same numbers)."""
    if not _compiling():
        out = _fast.add_rms_norm(x, branch, normalized_shape, weight, FLOAT32_EPS if eps is None else eps, alpha,
                                 branch_scale, skip_bias, return_sum, add_unit_offset)
        if out is not None:
            return out
    dims = _dims(normalized_shape, "keel.torch.add_rms_norm")
    if not (_keel_takes(x) and _keel_takes(branch)):
        _fallback("add_rms_norm", x if not _keel_takes(x) else branch)
        h = _residual_torch(x, branch, alpha, branch_scale, skip_bias)
        y = F.rms_norm(h, dims, 1 + weight if add_unit_offset and weight is not None else weight, eps)
        return (y, h) if return_sum else y
    eps = FLOAT32_EPS if eps is None else as_float(eps, "eps", "keel.torch.add_rms_norm")
    y, h, _ = _ADD_RMS(x, branch, dims, weight, eps, alpha, branch_scale, skip_bias, bool(return_sum),
                       bool(add_unit_offset))
    return (y, h) if return_sum else y


# --- fake kernels: shapes and dtypes for torch.compile, torch.export, FakeTensor, meta ----------

def _lead(x, dims):
    return x.shape[:x.dim() - len(dims)]


def _like(x, dtype=None):
    return x.new_empty(x.shape, dtype=dtype or x.dtype)


def _stat(x, dims):
    return x.new_empty(_lead(x, dims), dtype=torch.float32)


def _absent(x, dtype):
    """What an op returns for an output not asked for: an empty tensor."""
    return x.new_empty((0,), dtype=dtype)


@torch.library.register_fake("keel::layer_norm")
def _layer_norm_fake(x, normalized_shape, weight, bias, eps):
    return _like(x), _stat(x, normalized_shape), _stat(x, normalized_shape)


@torch.library.register_fake("keel::layer_norm_backward")
def _layer_norm_backward_fake(dy, x, normalized_shape, mean, rstd, weight, eps, output_mask):
    f32 = torch.float32
    return (_like(x) if output_mask[0] else _absent(x, x.dtype),
            x.new_empty(normalized_shape, dtype=f32) if output_mask[1] else _absent(x, f32),
            x.new_empty(normalized_shape, dtype=f32) if output_mask[2] else _absent(x, f32))


@torch.library.register_fake("keel::rms_norm")
def _rms_norm_fake(x, normalized_shape, weight, eps, unit_offset):
    return _like(x), _stat(x, normalized_shape)


@torch.library.register_fake("keel::rms_norm_backward")
def _rms_norm_backward_fake(dy, x, normalized_shape, rstd, weight, eps, unit_offset, output_mask):
    f32 = torch.float32
    return (_like(x) if output_mask[0] else _absent(x, x.dtype),
            x.new_empty(normalized_shape, dtype=f32) if output_mask[1] else _absent(x, f32))


@torch.library.register_fake("keel::add_layer_norm")
def _add_layer_norm_fake(x, branch, normalized_shape, weight, bias, eps, alpha, branch_scale, skip_bias, return_sum):
    dtype = torch.promote_types(x.dtype, branch.dtype)
    h = _like(x, dtype) if return_sum else _absent(x, dtype)
    return _like(x, dtype), h, _stat(x, normalized_shape), _stat(x, normalized_shape)


@torch.library.register_fake("keel::add_rms_norm")
def _add_rms_norm_fake(x, branch, normalized_shape, weight, eps, alpha, branch_scale, skip_bias, return_sum,
                       unit_offset):
    dtype = torch.promote_types(x.dtype, branch.dtype)
    h = _like(x, dtype) if return_sum else _absent(x, dtype)
    return _like(x, dtype), h, _stat(x, normalized_shape)


def _add_backward_fake(dy, normalized_shape, x_dtype, branch_dtype, mask):
    """(dx, dbranch, then the float32 per-feature gradients) of the fused backwards."""
    f32 = torch.float32
    grads = [_like(dy, x_dtype) if mask[0] else _absent(dy, x_dtype),
             _like(dy, branch_dtype) if mask[1] else _absent(dy, branch_dtype)]
    return grads + [dy.new_empty(normalized_shape, dtype=f32) if m else _absent(dy, f32) for m in mask[2:]]


@torch.library.register_fake("keel::add_layer_norm_backward")
def _add_layer_norm_backward_fake(dy, dh, h, x, branch, normalized_shape, mean, rstd, weight, eps, alpha,
                                  branch_scale, skip_bias, x_dtype, branch_dtype, output_mask):
    return _add_backward_fake(dy, normalized_shape, x_dtype, branch_dtype, output_mask)


@torch.library.register_fake("keel::add_rms_norm_backward")
def _add_rms_norm_backward_fake(dy, dh, h, x, branch, normalized_shape, rstd, weight, eps, alpha, branch_scale,
                                skip_bias, x_dtype, branch_dtype, unit_offset, output_mask):
    return _add_backward_fake(dy, normalized_shape, x_dtype, branch_dtype, output_mask)


# --- torch.func.vmap (python/keel/_torch_vmap.py) ------------------------------------------------

for _name, _rows in (("layer_norm", (0,)), ("rms_norm", (0,)), ("add_layer_norm", (0, 1)), ("add_rms_norm", (0, 1)),
                     ("layer_norm_backward", ()), ("rms_norm_backward", ()), ("add_layer_norm_backward", ()),
                     ("add_rms_norm_backward", ())):
    _torch_vmap.register(_name, _rows)


class LayerNorm(nn.LayerNorm):
    """torch.nn.LayerNorm computed by keel: same constructor, parameters and state_dict."""

    def forward(self, x):
        if torch.jit.is_scripting():  # TorchScript calls the operator (no fallback there)
            return torch.ops.keel.layer_norm(x, list(self.normalized_shape), self.weight, self.bias, self.eps)[0]
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.RMSNorm):
    """torch.nn.RMSNorm computed by keel: same constructor, parameters and state_dict."""

    def forward(self, x):
        if torch.jit.is_scripting():
            eps = self.eps if self.eps is not None else 1.1920928955078125e-07  # float32's epsilon
            return torch.ops.keel.rms_norm(x, list(self.normalized_shape), self.weight, eps, False)[0]
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
