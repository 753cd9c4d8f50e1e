"""NumPy arrays as keel arguments, with little work per call.

Every binding of the NumPy API goes through here: `rows_in` turns an array normalized over its
trailing `normalized_shape` into a keel_tensor (its rows read in place when evenly strided, else
those of a contiguous copy), `param` checks a float32 parameter, `address` gives the address of
an array's data, and `run` makes the call through the module's context. What a shape implies
(rows, dim, row stride, dtype code, the leading shape) is computed once per (normalized_shape,
shape, strides, dtype) and cached, so a call on shapes seen before checks nothing twice.
"""

import ctypes
import sys

import numpy as np

from . import _context, _lib
from ._errors import EINVAL, EUNSUPPORTED, KeelTypeError, KeelValueError
from ._layout import normalized_tuple, row_stride, split_shape

F32, BF16, F16, I8 = 0, 1, 2, 3
F32_DTYPE = np.dtype(np.float32)
# keel_dtype by NumPy type number; bfloat16 (ml_dtypes) is found by its name
_DTYPE_CODES = {np.dtype(np.float32).num: F32, np.dtype(np.float16).num: F16, np.dtype(np.int8).num: I8}
_ITEMSIZE = {F32: 4, BF16: 2, F16: 2, I8: 1}

NULL_ROW = np.zeros(1, np.float32)  # a valid address for empty tensors; never read or written
Tensor = _lib.Tensor
NO_TENSOR = Tensor(None, F32, 0)  # the absent tensor (keel_none())


# --- addresses ------------------------------------------------------------------------------
# `a.ctypes.data` and `a.__array_interface__` cost about a microsecond each. NumPy's array object
# (PyArrayObject) starts with PyObject_HEAD followed by `char *data`, a layout that is part of
# NumPy's ABI; reading that pointer through ctypes takes a fifth of the time. It is checked at
# import against __array_interface__ on a few arrays, and not used if anything disagrees.

def _slow_address(a):
    return a.__array_interface__["data"][0] or NULL_ROW.__array_interface__["data"][0]


def _fast_address_or_none():
    if sys.implementation.name != "cpython":
        return None
    offset, read = object.__basicsize__, ctypes.c_void_p.from_address
    base = np.arange(64, dtype=np.float32)
    samples = [base, base[3:], base.reshape(8, 8)[2:, 1::2], np.empty(0, np.float32), np.zeros((2, 3), np.int8)]
    if any(read(id(a) + offset).value != a.__array_interface__["data"][0] for a in samples):
        return None
    null = _slow_address(NULL_ROW)

    def address(a):
        """The address of a NumPy array's data (an int)."""
        return read(id(a) + offset).value or null

    return address


address = _fast_address_or_none() or _slow_address
NULL = address(NULL_ROW)


def address_or_none(a):
    return None if a is None else address(a)


# --- calls ----------------------------------------------------------------------------------

def run(fn, *args):
    """fn(ctx, *args) through the module's context, under its lock; a non-zero status raises."""
    ctx = _context.current or _context.default()
    lock = ctx.lock
    lock.acquire()  # quicker than `with`
    try:
        status = fn(ctx.ptr, *args)
    finally:
        lock.release()
    if status:
        _lib.raise_status(status)


# --- checks ---------------------------------------------------------------------------------

def require_array(a, name, who):
    if not isinstance(a, np.ndarray):
        raise KeelTypeError(f"{who}: {name} must be a numpy.ndarray (got {type(a).__name__})", EINVAL)
    return a


def dtype_code(a, name, who):
    """keel_dtype of a float32, float16, bfloat16 or int8 array; TypeError for any other."""
    code = _DTYPE_CODES.get(a.dtype.num) if a.dtype.isnative else None
    if code is None and a.dtype.name == "bfloat16":
        code = BF16
    if code is None:
        raise KeelTypeError(
            f"{who}: {name}.dtype {a.dtype.name}{'' if a.dtype.isnative else ' (non-native byte order)'} "
            f"is not supported (this version: float32 only; convert with .astype(numpy.float32))", EUNSUPPORTED)
    return code


def _dense_strides(shape):
    """The strides (bytes) of a C-contiguous float32 array of `shape`."""
    strides, step = [], 4
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


class Layout:
    """What keel needs to know of an array of one (normalized_shape, shape, strides, dtype)."""

    __slots__ = ("dims", "lead", "rows", "dim", "code", "stride", "itemsize", "out_dtype", "dense_strides",
                 "lead_strides")

    def __init__(self, a, dims, who, name):
        self.dims = dims
        self.code = dtype_code(a, name, who)
        self.lead, self.rows, self.dim = split_shape(a.shape, dims, who, name)
        self.itemsize = _ITEMSIZE[self.code]
        self.out_dtype = F32_DTYPE if self.code == F32 else a.dtype
        # None: the rows are not evenly strided (or a stride is no multiple of the element
        # size): the call reads a contiguous copy
        stride = None
        if all(s % self.itemsize == 0 for s in a.strides):
            if a.flags.c_contiguous:
                stride = self.dim
            else:
                stride = row_stride(a.shape, [s // self.itemsize for s in a.strides], len(dims), self.dim)
        self.stride = stride
        self.dense_strides = _dense_strides(dims)  # of parameters
        self.lead_strides = _dense_strides(self.lead)  # of statistics


_LAYOUTS = {}
_MAX_LAYOUTS = 4096


def layout(a, normalized_shape, who, name="x"):
    """The (cached) Layout of array a normalized over its trailing normalized_shape."""
    kind = type(normalized_shape)
    # 4.0 == 4 and (4.0,) == (4,) as keys: only exact ints are keys as given, the rest is
    # checked (and refused, or made a tuple of ints) first
    if kind is not int and not (kind is tuple and all(type(d) is int for d in normalized_shape)):
        normalized_shape = normalized_tuple(normalized_shape, who)
    key = (normalized_shape, a.shape, a.strides, a.dtype)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = Layout(a, normalized_tuple(normalized_shape, who), who, name)
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = lay
    return lay


def rows_in(a, normalized_shape, who, name="x"):
    """(keel_tensor, array, Layout) of input a: its rows in place when evenly strided and
    aligned, else a contiguous copy's (returned as `array`: keep it alive through the call)."""
    if type(a) is not np.ndarray:
        require_array(a, name, who)
    lay = None
    if type(normalized_shape) is int:  # the common case, looked up here (a call less)
        lay = _LAYOUTS.get((normalized_shape, a.shape, a.strides, a.dtype))
    if lay is None:
        lay = layout(a, normalized_shape, who, name)
    ptr = address(a)
    if lay.stride is None or ptr % lay.itemsize:
        a = np.array(a, order="C", copy=True)
        return Tensor(address(a), lay.code, lay.dim), a, lay
    return Tensor(ptr, lay.code, lay.stride), a, lay


def rows_like(a, lay, x_shape, name, who):
    """(keel_tensor, array) of an input that has x's shape (dy, dh, h, a branch)."""
    if type(a) is not np.ndarray:
        require_array(a, name, who)
    if a.shape != x_shape:
        raise KeelValueError(f"{who}: {name}.shape {a.shape} != x.shape {x_shape}", EINVAL)
    lay = _LAYOUTS.get((lay.dims, a.shape, a.strides, a.dtype)) or layout(a, lay.dims, who, name)
    ptr = address(a)
    if lay.stride is None or ptr % lay.itemsize:
        a = np.array(a, order="C", copy=True)
        return Tensor(address(a), lay.code, lay.dim), a
    return Tensor(ptr, lay.code, lay.stride), a


def output(lay, shape, dtype=None):
    """(keel_tensor, array) of a new C-contiguous output of x's shape, in x's dtype (or dtype)."""
    if dtype is None:
        y = np.empty(shape, lay.out_dtype)
        return Tensor(address(y), lay.code, lay.dim), y
    y = np.empty(shape, dtype)
    return Tensor(address(y), _DTYPE_CODES[np.dtype(dtype).num], lay.dim), y


def optional_output(needed, lay, shape):
    """(keel_tensor, array) of an optional output of x's shape and dtype (a gradient such as
    dx), or (the absent tensor, None)."""
    return output(lay, shape) if needed else (NO_TENSOR, None)


def param(p, lay, name, who, size=None):
    """p (weight, bias, a scale: shape normalized_shape; with size: mean, rstd, a row scale,
    `size` values) as a dense, aligned float32 array, or None."""
    if p is None:
        return None
    require_array(p, name, who)
    if p.dtype != F32_DTYPE:
        raise KeelTypeError(f"{who}: {name}.dtype {p.dtype.name} is not supported (it must be float32)",
                            EUNSUPPORTED)
    if size is None and p.shape != lay.dims:
        raise KeelValueError(f"{who}: {name}.shape {p.shape} != normalized_shape {lay.dims}", EINVAL)
    if size is not None and p.size != size:
        raise KeelValueError(f"{who}: {name} has {p.size} values, x has {size} rows", EINVAL)
    p = np.ascontiguousarray(p)
    return p if p.flags.aligned else p.copy()


class KeptAddress(int):
    """The address of a copy made for a call, keeping the copy (`owner`) alive with it."""


def _kept(p):
    kept = KeptAddress(address(p))
    kept.owner = p
    return kept


def param_address(p, lay, name, who):
    """The address of parameter p (shape normalized_shape, float32; see param), or None. A
    parameter that is not dense and aligned is copied: the address (a KeptAddress) then keeps
    the copy alive; hold it until the call returns. Otherwise the address is p's own: the
    caller must keep p referenced through the call (never rebind p's name to the address: an
    argument built in the call expression, `f(x, n, w.copy())`, is referenced by nothing else)."""
    if p is None:
        return None
    if type(p) is np.ndarray and p.dtype is F32_DTYPE and p.strides == lay.dense_strides and p.shape == lay.dims:
        ptr = address(p)
        if not ptr & 3:
            return ptr
    return _kept(param(p, lay, name, who))


def stat_address(p, lay, name, who):
    """The address of a per-row statistic (mean, rstd: x's leading shape, or any shape of
    `rows` float32 values), or None; copied (a KeptAddress) when not dense and aligned."""
    if p is None:
        return None
    if type(p) is np.ndarray and p.dtype is F32_DTYPE and p.strides == lay.lead_strides and p.shape == lay.lead:
        ptr = address(p)
        if not ptr & 3:
            return ptr
    return _kept(param(p, lay, name, who, size=lay.rows))


def inout(p, lay, name, who, size=None, dtype=F32_DTYPE):
    """An array keel updates in place (BatchNorm's running statistics): it must already be a
    dense, aligned array of `dtype` (never copied: the update would be lost)."""
    if p is None:
        return None
    require_array(p, name, who)
    if p.dtype != dtype:
        raise KeelTypeError(f"{who}: {name}.dtype {p.dtype.name} is not supported (it must be {dtype.name})",
                            EUNSUPPORTED)
    want = lay.dims if size is None else None
    if (want is not None and p.shape != want) or (size is not None and p.size != size):
        raise KeelValueError(f"{who}: {name}.shape {p.shape} != {want if want is not None else (size,)}", EINVAL)
    if not (p.flags.c_contiguous and p.flags.aligned and p.flags.writeable):
        raise KeelValueError(f"{who}: {name} is updated in place: it must be a writeable, C-contiguous, "
                             f"aligned array", EINVAL)
    return p


def stat(needed, lead):
    """A new float32 array of x's leading shape (mean, rstd, a row scale), or None."""
    return np.empty(lead, np.float32) if needed else None


def grad(needed, dims):
    """A parameter gradient, zeroed (with 0 rows keel writes nothing, and a sum over no rows
    is 0), or None."""
    return np.zeros(dims, np.float32) if needed else None


def as_float(value, name, who):
    """value as a Python float; a bool (True is 1 to Python, never meant as a float here) or a
    non-number is a KeelTypeError."""
    if isinstance(value, (bool, np.bool_)):
        raise KeelTypeError(f"{who}: {name} ({value!r}) must be a float, not a bool", EINVAL)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KeelTypeError(f"{who}: {name} ({value!r}) must be a float", EINVAL) from None
