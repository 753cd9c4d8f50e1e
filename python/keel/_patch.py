"""keel.torch.patch(model): every norm module of a model computed by keel, recognised by what it
computes rather than by its class; keel.torch.unpatch(model) undoes it.

A module is examined when it looks like a norm: a leaf module whose class name contains "norm"
(any case), or one with a 1-D weight and an eps attribute (eps, variance_epsilon or epsilon).
torch.nn's batch, instance, group and local response norms normalize across rows, which keel's
row norms do not, and are passed over. From the module's attributes come candidate formulas:

    layer_norm(x, dims, weight, bias, eps)        (weight and bias optional)
    rms_norm(x, dims, weight, eps)                (weight optional)
    rms_norm(x, dims, weight, eps) scaled by (1 + weight) instead of weight   (Gemma's form)

with dims the module's normalized_shape or its weight's shape, and eps its eps attribute (read at
each call), else 1e-5 or 1e-6 (the values norms hardcode). A candidate is confirmed by running the
module's own forward on a probe: a float32 input of 2 x 2 rows (a mean offset, small rows where
eps matters, a large row) through a copy of the module with random weight and bias: the answer
does not hang on the current weights (Gemma's start at zero), and neither the module nor the
global random state is touched. Only a confirmed module is patched; a norm-looking module that
matches no candidate is left alone and reported in one warning.

Patching is in place: the module's instance gets a forward attribute (its class's forward stays),
so hooks, state_dict keys, isinstance checks and the Parameter objects all stay as they were.

Rounding and dtypes. The patched forward hands CPU float32, bfloat16 and float16 inputs to keel,
which computes each row in float32 (statistics in float64) and rounds once, to the dtype the
module's own forward returns (learned per input and parameter dtypes by running that forward on
zero rows): x is widened first when that dtype is wider (T5's norm returns float32 for a bf16 x
and float32 weight), y is cast when it is narrower (T5's norm with a bf16 weight returns bf16).
Norms that round in between (Llama's rounds the normalized x to x's dtype before the weight
multiplies it) therefore differ from keel by up to an ulp or two of bf16/f16; in float32, by
float32 rounding. Under CPU autocast the same holds (the dtype is learned under it). Other inputs
(float64, CUDA, tensor subclasses, extra arguments) and outputs of another dtype go to the
module's own forward.
"""

import copy
import logging
import math
import warnings
from collections import Counter
from typing import NamedTuple, Optional

import torch
from torch import nn

__all__ = ["patch", "unpatch", "PatchResult"]

log = logging.getLogger("keel.torch")

_KEEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_EPS_NAMES = ("eps", "variance_epsilon", "epsilon")
_EPS_DEFAULTS = (1e-5, 1e-6)  # tried for a norm without an eps attribute (its forward hardcodes one)
# torch.nn's norms over batches, groups or neighbouring channels: not keel's row norms
_CROSS_ROW_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LocalResponseNorm, nn.CrossMapLRN2d)
_ALREADY, _KEEL_MODULE = "already patched", "a keel module"  # the reasons patch() does not warn about

# The probe: rows of scale * (z + offset), z standard normal. An offset tells layer_norm from
# rms_norm; rows of 1e-3 and 1e-6 make eps 1e-5 / 1e-6 / 1e-12 matter; 10 checks scale.
_PROBE_SCALES = (1.0, 1e-3, 1e-6, 10.0)
_PROBE_OFFSETS = (3.0, 0.0, -1.0, 0.5)
_F32_EPS = torch.finfo(torch.float32).eps


_OPS = []  # keel.torch once imported (a patched forward runs at every call: no import statement there)


def _ops():
    """keel.torch, imported at first use (it re-exports this module's functions)."""
    if not _OPS:
        from . import torch as ops
        _OPS.append(ops)
    return _OPS[0]


def _tensor(module, name):
    """module's tensor attribute `name` (a Parameter, buffer or plain tensor), or None."""
    params = module._parameters  # the common case first: nn.Module's __getattr__ is slower
    value = params[name] if name in params else getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


class _Formula(NamedTuple):
    """One candidate for what a norm module computes. op: "layer_norm" or "rms_norm";
    unit_offset: scale by (1 + weight); dims: normalized_shape; eps_attr: the attribute eps is
    read from at each call, or None for the constant eps."""

    op: str
    unit_offset: bool
    dims: tuple
    eps_attr: Optional[str]
    eps: Optional[float]

    def eps_of(self, module):
        return getattr(module, self.eps_attr) if self.eps_attr else self.eps

    def __call__(self, module, x):
        """keel.torch's op on x with module's current weight, bias and eps."""
        ops, weight = _ops(), _tensor(module, "weight")
        if self.op == "layer_norm":
            return ops.layer_norm(x, self.dims, weight, _tensor(module, "bias"), self.eps_of(module))
        return ops.rms_norm(x, self.dims, weight, self.eps_of(module), add_unit_offset=self.unit_offset)

    def describe(self, module):
        """The formula as text, e.g. "rms_norm(1 + weight, eps=1e-06)"."""
        terms = []
        if _tensor(module, "weight") is not None:
            terms.append("1 + weight" if self.unit_offset else "weight")
        if self.op == "layer_norm" and _tensor(module, "bias") is not None:
            terms.append("bias")
        return f"{self.op}({', '.join(terms + [f'eps={self.eps_of(module)}'])})"


def _dims(module, weight, bias):
    """The normalized shape of module (its normalized_shape, else its weight's shape) as a
    tuple, or None when there is none or weight / bias have another shape."""
    shape = getattr(module, "normalized_shape", None)
    if shape is None and weight is not None:
        shape = weight.shape
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, torch.Size)) or not shape or \
            not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    dims = tuple(shape)
    if any(t is not None and tuple(t.shape) != dims for t in (weight, bias)):
        return None
    return dims


def _eps_options(module):
    """[(eps_attr, eps)] to try: the module's eps attribute, else the usual hardcoded values."""
    for name in _EPS_NAMES:
        if hasattr(module, name):
            return [(name, getattr(module, name))]
    return [(None, eps) for eps in _EPS_DEFAULTS]


def _valid_eps(op, eps):
    """eps keel.torch's op takes: a finite number >= 0 (rms_norm: or None, float32's epsilon)."""
    if eps is None:
        return op == "rms_norm"
    return isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps >= 0


def _candidates(module):
    """The formulas module may compute, chosen from its attributes: [] when it cannot be a norm
    keel computes (parameters other than weight and bias, no normalized shape)."""
    if set(name for name, _ in module.named_parameters(recurse=False)) - {"weight", "bias"}:
        return []
    weight, bias = _tensor(module, "weight"), _tensor(module, "bias")
    dims = _dims(module, weight, bias)
    if dims is None:
        return []
    if isinstance(module, nn.LayerNorm) or bias is not None:
        kinds = [("layer_norm", False)]
    elif isinstance(module, nn.RMSNorm):
        kinds = [("rms_norm", False)]
    elif weight is not None:
        kinds = [("rms_norm", False), ("rms_norm", True), ("layer_norm", False)]
    else:
        kinds = [("layer_norm", False), ("rms_norm", False)]
    return [_Formula(op, offset, dims, attr, None if attr else eps)
            for op, offset in kinds for attr, eps in _eps_options(module) if _valid_eps(op, eps)]


def _probe_input(dims, device):
    """The probe: float32 rows of shape (2, 2, *dims), from a fixed seed of its own generator."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn((len(_PROBE_SCALES),) + dims, generator=g)
    view = (-1,) + (1,) * len(dims)
    scale, offset = torch.tensor(_PROBE_SCALES).view(view), torch.tensor(_PROBE_OFFSETS).view(view)
    return (scale * (z + offset)).view((2, 2) + dims).to(device)


def _probe_copy(module):
    """A copy of module with random weight and bias (weight around 1, bias around 0), so that the
    probe does not depend on their current values (zeros, ones) nor change them."""
    twin = copy.deepcopy(module)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, center in (("weight", 1.0), ("bias", 0.0)):
            t = _tensor(twin, name)
            if t is not None:
                t.copy_(center + 0.5 * torch.randn(t.shape, generator=g))
    return twin


def _deviation(got, want):
    """max over rows of max |got - want| / max |want| (inf when shape or dtype differ)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return math.inf
    rows = len(_PROBE_SCALES)
    got, want = got.double().reshape(rows, -1), want.double().reshape(rows, -1)
    scale = want.abs().amax(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    return ((got - want).abs().amax(dim=1) / scale).max().item()


def _keel_forward(formula, module, x, dtype):
    """The formula through keel, in the dtype the module's own forward returns: x widened to it
    first when it is wider (exact), y cast to it otherwise."""
    if x.dtype != dtype and torch.promote_types(x.dtype, dtype) == dtype:
        x = x.to(dtype)
    y = formula(module, x)
    return y if y.dtype == dtype else y.to(dtype)


def _recognise(module):
    """(formula, None) for the candidate the probe confirms, or (None, why none is)."""
    candidates = _candidates(module)
    if not candidates:
        return None, "no normalized shape, or parameters other than weight and bias"
    device = next(iter(module.parameters(recurse=False)), torch.empty(0)).device
    try:
        twin = _probe_copy(module)
        x = _probe_input(candidates[0].dims, device)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            want = type(module).forward(twin, x)
            if not isinstance(want, torch.Tensor) or want.dtype not in _KEEL_DTYPES:
                return None, f"its forward returns {getattr(want, 'dtype', type(want).__name__)}"
            tol = max(64 * _F32_EPS, 2 * torch.finfo(want.dtype).eps)
            off = [(_deviation(_keel_forward(f, twin, x, want.dtype), want), f) for f in candidates]
    except Exception as e:  # a forward the probe cannot run is not a norm keel computes
        return None, f"the probe failed: {type(e).__name__}: {e}"
    for deviation, formula in off:
        if deviation <= tol:
            return formula, None
    deviation, closest = min(off, key=lambda pair: pair[0])
    return None, f"computes none of the candidates (closest: {closest.describe(module)}, off by {deviation:.2g})"


class _NormForward:
    """The forward patch() gives a norm module's instance: keel's formula for CPU float32, bf16
    and f16 inputs, the module's class forward for anything else. A plain object (not a closure)
    so that a patched model deep-copies and pickles."""

    def __init__(self, module, formula):
        self.module, self.formula = module, formula
        self.dtypes = {}  # (x's dtype, parameters' dtypes) -> the dtype the original returns

    def original(self, *args, **kwargs):
        return type(self.module).forward(self.module, *args, **kwargs)

    def _keel_takes(self, args, kwargs):
        """True for one plain CPU float32/bf16/f16 tensor ending in dims."""
        if len(args) != 1 or kwargs:
            return False
        x, dims = args[0], self.formula.dims
        return (type(x) in (torch.Tensor, nn.Parameter) and x.is_cpu and x.dtype in _KEEL_DTYPES
                and tuple(x.shape[x.dim() - len(dims):]) == dims)

    def _output_dtype(self, x):
        """The dtype the original forward returns for x, learned once per dtypes (and autocast
        state: CPU autocast may change what it returns) by running it on zero rows."""
        autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")
        key = (x.dtype, autocast, *[p.dtype for p in self.module._parameters.values() if p is not None])
        dtype = self.dtypes.get(key)
        if dtype is None:
            with torch.no_grad():
                dtype = self.original(x.new_empty((0,) + self.formula.dims)).dtype
            self.dtypes[key] = dtype
        return dtype

    def __call__(self, *args, **kwargs):
        if not self._keel_takes(args, kwargs):
            return self.original(*args, **kwargs)
        dtype = self._output_dtype(args[0])
        if dtype not in _KEEL_DTYPES:
            return self.original(*args)
        return _keel_forward(self.formula, self.module, args[0], dtype)


class PatchResult(int):
    """What patch() did: the number of modules patched (an int, so `patch(model) == 5` holds),
    with .patched, a list of (qualified name, class name, formula), and .skipped, a list of
    (qualified name, class name, reason) of the norm-looking modules left alone."""

    def __new__(cls, patched, skipped):
        self = super().__new__(cls, len(patched))
        self.patched, self.skipped = patched, skipped
        return self


def _is_patched(module):
    return isinstance(module.__dict__.get("forward"), _NormForward)


def _looks_like_norm(module):
    """A leaf module named like a norm, or with a 1-D weight and an eps attribute."""
    if isinstance(module, _CROSS_ROW_NORMS) or next(module.children(), None) is not None:
        return False
    weight = _tensor(module, "weight")
    return "norm" in type(module).__name__.lower() or (
        weight is not None and weight.dim() == 1 and any(hasattr(module, n) for n in _EPS_NAMES))


def _examine(module):
    """(formula, None) for a module to patch, (None, reason) for a norm-looking one to leave
    alone, (None, None) for any other."""
    if not _looks_like_norm(module):
        return None, None
    if _is_patched(module):
        return None, _ALREADY
    if type(module).__module__.split(".")[0] == "keel":
        return None, _KEEL_MODULE
    if "forward" in module.__dict__:
        return None, "its instance already has its own forward (another tool's wrapper)"
    return _recognise(module)


def _report(patched, skipped):
    """Log what patch() did (logger "keel.torch", INFO) and warn once about the norm-looking
    modules that match no formula."""
    kinds = Counter(f"{cls} as {formula}" for _, cls, formula in patched)
    log.info("keel.torch.patch: %d modules now computed by keel%s", len(patched),
             "".join(f"; {n} x {kind}" for kind, n in kinds.items()))
    for name, cls, reason in skipped:
        log.info("keel.torch.patch: left %s (%s) alone: %s", name or "the model", cls, reason)
    unmatched = [(name, cls, reason) for name, cls, reason in skipped if reason not in (_ALREADY, _KEEL_MODULE)]
    if unmatched:
        listed = "; ".join(f"{name or 'the model'} ({cls}): {reason}" for name, cls, reason in unmatched)
        warnings.warn(f"keel.torch.patch: {len(unmatched)} norm-looking modules match no formula keel "
                      f"computes and keep their own forward: {listed}", stacklevel=3)


def patch(model):
    """Make keel compute every norm module inside `model` (the model itself included) that it
    recognises: LayerNorm (with or without weight and bias), RMSNorm, and RMSNorm scaled by
    (1 + weight), whatever the class, each confirmed by a probe of the module's own forward (see
    the module's docstring). Patches in place: the module gets an instance forward, so hooks,
    parameters, state_dict and isinstance checks stay. Modules patched before are left as they
    are. Returns a PatchResult: the number patched (an int), with .patched and .skipped."""
    patched, skipped = [], []
    for name, module in model.named_modules():
        formula, reason = _examine(module)
        if formula is not None:
            module.forward = _NormForward(module, formula)
            patched.append((name, type(module).__name__, formula.describe(module)))
        elif reason is not None:
            skipped.append((name, type(module).__name__, reason))
    _report(patched, skipped)
    return PatchResult(patched, skipped)


def unpatch(model):
    """Undo patch(): the modules inside `model` it patched compute with their class's forward
    again. Returns how many were restored."""
    count = 0
    for module in model.modules():
        if _is_patched(module):
            del module.forward
            count += 1
    log.info("keel.torch.unpatch: %d modules restored to their own forward", count)
    return count
