"""keel for PyTorch: BatchNorm, LayerScale and DyT as torch operators, with modules.

The operators (namespace "keel"; torch.ops.keel.<name>), compiled C++ registered with torch's
dispatcher as the norms are (python/keel/csrc/torch_layers.cpp): eager calls cost what torch's
own ops cost, and torch.compile, torch.export and torch.func keep them in their graphs (each has
a fake kernel and a vmap rule, below, and its autograd formula in C++):

    batch_norm(Tensor x, Tensor? weight, Tensor? bias, Tensor(a!)? running_mean,
               Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, bool training,
               float? momentum, float eps) -> (Tensor y, Tensor save_mean, Tensor save_rstd)
    batch_norm_backward(Tensor dy, Tensor x, Tensor? weight, Tensor save_mean, Tensor save_rstd,
                        bool training, float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor)
        -> dx, dweight, dbias
    layer_scale(Tensor x, Tensor f, Tensor gamma) -> Tensor
        h = x + gamma * f
    layer_scale_backward(Tensor dh, Tensor f, Tensor gamma, bool[2] output_mask) -> (Tensor, Tensor)
        -> df, dgamma (dx is dh itself: the autograd node passes it on)
    dyt(Tensor x, int[] normalized_shape, Tensor alpha, Tensor? weight, Tensor? bias) -> Tensor
        y = weight * tanh(alpha * x) + bias
    dyt_backward(Tensor dy, Tensor x, int[] normalized_shape, Tensor alpha, Tensor? weight,
                 bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)
        -> dx, dalpha, dweight, dbias

A gradient left out by output_mask comes back as an empty tensor (shape (0,)); autograd asks only
for the gradients it needs (a frozen weight's is not computed). Gradients of gradients
(create_graph=True, nested torch.func.grad): the first derivative is keel's, and its own gradient
is taken through the same backward written in torch's differentiable ops (BatchNorm's batch
statistics recomputed from x). Forward-mode AD (jvp, jacfwd) is refused.

batch_norm updates running_mean, running_var and num_batches_tracked in place, as torch.nn's
BatchNorm does (momentum None: the cumulative average, which needs num_batches_tracked), and the
schema says so, so functionalization (torch.compile, torch.export) keeps the updates; their
version counters move as with torch's in-place ops. x is (N, C, ...): keel reads it as rows of C
features. A channels_last tensor (NHWC memory) already is such rows and is read and written in
place; an NCHW-contiguous one is copied to rows first and y copied back. y has x's memory
format (the outputs of layer_scale and dyt are contiguous). Training needs two values per
channel at least: a batch of 0 or 1 value per channel (N * H * W) is a ValueError.

What keel computes: BatchNorm on CPU float32 tensors; LayerScale and DyT on CPU float32,
bfloat16 and float16 tensors (computed in float32, each output rounded once; the per-feature
vectors go to keel as float32, and their gradients come back in their own dtype). The functions
and modules below send every other call (float64, other devices, BatchNorm's momentum outside
[0, 1] or input of fewer than 2 dims) to torch's own computation (F.batch_norm and the formulas
above), and keel says so with a KeelFallbackWarning once per operation and reason (fallbacks()
lists them); the operators themselves refuse such calls.

Under torch.func.vmap, layer_scale and dyt with only x (and f) batched are one call (the batch is
one more leading dim); batched parameters, the backward operators and batch_norm run once per
sample; batch_norm refuses vmap in training with running statistics (it would update them once
per sample).

Functions: batch_norm (torch.nn.functional.batch_norm's signature, plus num_batches_tracked),
layer_scale, dyt. Modules: BatchNorm1d, BatchNorm2d, BatchNorm3d (drop-ins for torch.nn's:
subclasses, same constructor, parameters, buffers and state_dict), LayerScale (timm's
parameter `gamma`), DyT (the DyT paper's parameters alpha, weight, bias).
"""

from math import prod

import torch
from torch import nn
from torch.nn import functional as F

from . import _torch_ext, _torch_vmap
from ._arrays import as_float
from ._errors import EINVAL, KeelValueError
from ._layout import normalized_tuple
from ._torch_fallback import KeelFallbackWarning, fall_back, fallbacks

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerScale", "DyT", "batch_norm", "layer_scale", "dyt",
           "KeelFallbackWarning", "fallbacks"]

_fast, _ext = _torch_ext.load()  # registers torch.ops.keel.* (once per process)
_BN, _LS, _DYT = torch.ops.keel.batch_norm.default, torch.ops.keel.layer_scale.default, torch.ops.keel.dyt.default
_compiling = torch.compiler.is_compiling
_KEEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_FLOAT32_ONLY = (torch.float32,)


# --- fallbacks: said once per operation and reason --------------------------------------------

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
    return None if why is None else f"{why} (keel computes {_COMPUTES[op]})"


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
    """t in the layout torch.empty_like(x) has: t itself when its strides are those, else a copy."""
    out = torch.empty_like(x, dtype=t.dtype)
    return t if out.stride() == t.stride() else out.copy_(t)


def _absent(like, dtype=None):
    """The stand-in for a gradient left out by output_mask: an empty tensor."""
    return like.new_empty((0,), dtype=dtype or like.dtype)


# === BatchNorm =================================================================================

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
    """The checks of a batch_norm call (the C++ operator makes the same, in the same words)."""
    if x.dim() < 2:
        raise KeelValueError(f"{_BN_WHO}: x.shape {tuple(x.shape)}: expected (N, C, ...)", EINVAL)
    _bn_check_rows(x, training)
    C = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        _check_shape(t, (C,), name, _BN_WHO)
    if (running_mean is None) != (running_var is None):
        raise KeelValueError(f"{_BN_WHO}: running_mean and running_var must be given both or neither", EINVAL)
    if not training and running_mean is None:
        raise KeelValueError(f"{_BN_WHO}: inference (training=False) needs running_mean and running_var", EINVAL)
    if training and running_mean is not None and momentum is None and num_batches_tracked is None:
        raise KeelValueError(f"{_BN_WHO}: momentum None (the cumulative average) needs num_batches_tracked",
                             EINVAL)


@torch.library.register_fake("keel::batch_norm")
def _bn_fake(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """y like x (its memory format), save_mean and save_rstd (C,) float32."""
    _bn_check(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum)
    C = x.shape[1]
    return torch.empty_like(x), x.new_empty((C,), dtype=torch.float32), x.new_empty((C,), dtype=torch.float32)


@torch.library.register_fake("keel::batch_norm_backward")
def _bn_backward_fake(dy, x, weight, save_mean, save_rstd, training, eps, output_mask):
    C, f32 = x.shape[1], torch.float32
    dx = torch.empty_like(x) if output_mask[0] else _absent(x, f32)
    return (dx, *(x.new_empty((C if wanted else 0,), dtype=f32) for wanted in output_mask[1:]))


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


def _bn_torch(x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """torch's own batch norm with torch.nn's bookkeeping: num_batches_tracked incremented (in
    training, with running statistics), momentum None the cumulative average."""
    m = 0.0 if momentum is None else momentum
    if training and running_mean is not None and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            m = 1.0 / float(num_batches_tracked)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, m, eps)
    return _like(y, x)


def _bn_vmap(info, in_dims, x, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps):
    """Once per sample; refused where running statistics would be updated (in training)."""
    if training and running_mean is not None:
        raise NotImplementedError(f"{_BN_WHO} under vmap: training would update the running statistics once "
                                  f"per sample; use track_running_stats=False (torch.func."
                                  f"replace_all_batch_norm_modules_) or inference")
    return _torch_vmap.rule(_BN)(info, in_dims, x, weight, bias, running_mean, running_var, num_batches_tracked,
                                 training, momentum, eps)


torch.library.register_vmap("keel::batch_norm", _bn_vmap)
_torch_vmap.register("batch_norm_backward")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               *, num_batches_tracked=None):
    """torch.nn.functional.batch_norm through keel::batch_norm (CPU float32; torch's
    computation otherwise, said once). running_mean, running_var (and num_batches_tracked,
    incremented as torch.nn's BatchNorm does) are updated in place in training; momentum None
    is the cumulative average and needs num_batches_tracked. Training on a batch of 0 or 1
    value per channel is a ValueError. Input of fewer than 2 dims (no channel dim) runs torch's
    op."""
    if not _compiling():  # eager: the compiled entry (Dynamo traces torch.ops.keel below instead)
        y = _fast.batch_norm(input, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum,
                             eps)
        if y is not None:
            return y
    if input.dim() < 2:
        _bn_check_rows(input, training)
        _fall_back("batch_norm", "input of fewer than 2 dims (keel needs (N, C, ...))")
        return _bn_torch(input, weight, bias, running_mean, running_var, num_batches_tracked, training, momentum, eps)
    args = (input, weight, bias, running_mean, running_var, num_batches_tracked, bool(training),
            None if momentum is None else float(momentum))
    _bn_check(*args)
    reason = _bn_why_not_keel(*args)
    if reason is not None:
        _fall_back("batch_norm", reason)
        return _bn_torch(*args, eps)
    return _BN(*args, as_float(eps, "eps", "keel.torch_layers.batch_norm"))[0]


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

def _ls_check(x, f, gamma, who="keel::layer_scale"):
    """h's dtype of layer_scale(x, f, gamma) after the checks the C++ operator makes too."""
    if tuple(f.shape) != tuple(x.shape):
        raise KeelValueError(f"{who}: f.shape {tuple(f.shape)} != x.shape {tuple(x.shape)}", EINVAL)
    _split(x, gamma.shape, who)
    return _result_dtype(x, f, gamma)


@torch.library.register_fake("keel::layer_scale")
def _layer_scale_fake(x, f, gamma):
    return x.new_empty(x.shape, dtype=_ls_check(x, f, gamma))


@torch.library.register_fake("keel::layer_scale_backward")
def _layer_scale_backward_fake(dh, f, gamma, output_mask):
    _ls_check(dh, f, gamma, "keel::layer_scale_backward")
    df = f.new_empty(f.shape) if output_mask[0] else _absent(f)
    return df, gamma.new_empty(gamma.shape if output_mask[1] else (0,))


_torch_vmap.register("layer_scale", (0, 1))
_torch_vmap.register("layer_scale_backward")


def layer_scale(x, f, gamma):
    """LayerScale's residual update h = x + gamma * f through keel::layer_scale: x the residual
    stream, f the branch's output, gamma over their trailing gamma.shape dims (CPU float32,
    bfloat16, float16; torch's computation otherwise, said once). h has the dtype torch's
    formula gives and is contiguous."""
    if not _compiling():
        h = _fast.layer_scale(x, f, gamma)
        if h is not None:
            return h
    dtype = _ls_check(x, f, gamma)
    reason = _why_not_keel("layer_scale", (x, f, gamma), _KEEL_DTYPES, dtype)
    if reason is not None:
        _fall_back("layer_scale", reason)
        return (x + gamma * f).to(dtype).contiguous()
    return _LS(x, f, gamma)


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

def _dyt_check(x, normalized_shape, alpha, weight, bias, who="keel::dyt"):
    """y's dtype of dyt after the checks the C++ operator makes too."""
    _split(x, normalized_shape, who)
    if alpha.numel() != 1:
        raise KeelValueError(f"{who}: alpha has {alpha.numel()} values (one expected)", EINVAL)
    _check_shape(weight, normalized_shape, "weight", who)
    _check_shape(bias, normalized_shape, "bias", who)
    return _result_dtype(x, alpha, weight, bias)


@torch.library.register_fake("keel::dyt")
def _dyt_fake(x, normalized_shape, alpha, weight, bias):
    return x.new_empty(x.shape, dtype=_dyt_check(x, normalized_shape, alpha, weight, bias))


@torch.library.register_fake("keel::dyt_backward")
def _dyt_backward_fake(dy, x, normalized_shape, alpha, weight, output_mask):
    _dyt_check(x, normalized_shape, alpha, weight, None, "keel::dyt_backward")
    pdtype = weight.dtype if weight is not None else _result_dtype(x, alpha)
    dx = x.new_empty(x.shape) if output_mask[0] else _absent(x, torch.float32)
    dalpha = alpha.new_empty(alpha.shape if output_mask[1] else (0,))
    dw, db = (x.new_empty(normalized_shape if wanted else (0,), dtype=pdtype) for wanted in output_mask[2:])
    return dx, dalpha, dw, db


_torch_vmap.register("dyt", (0,))
_torch_vmap.register("dyt_backward")


def dyt(x, normalized_shape, alpha, weight=None, bias=None):
    """DyT (Zhu et al. 2025): y = weight * tanh(alpha * x) + bias through keel::dyt. alpha: a
    tensor of one value (learnable); weight, bias: tensors of normalized_shape (x's trailing
    dims) or None (1 and 0). CPU float32, bfloat16, float16 through keel (keel's float32 tanh,
    within 2 ulps); torch's computation otherwise, said once. y has the dtype torch's formula
    gives and is contiguous."""
    if not _compiling():
        y = _fast.dyt(x, normalized_shape, alpha, weight, bias)
        if y is not None:
            return y
    dims = list(normalized_tuple(normalized_shape, "keel.torch_layers.dyt"))
    dtype = _dyt_check(x, dims, alpha, weight, bias)
    reason = _why_not_keel("dyt", (x, alpha, weight, bias), _KEEL_DTYPES, dtype)
    if reason is not None:
        _fall_back("dyt", reason)
        y = torch.tanh(alpha * x)
        y = y if weight is None else y * weight
        return (y if bias is None else y + bias).to(dtype).contiguous()
    return _DYT(x, dims, alpha, weight, bias)


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
