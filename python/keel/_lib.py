"""Finding and loading libkeel, and the ctypes prototypes of keel.h.

Where the library is looked for, first match wins:
  1. the environment variable KEEL_LIBRARY (a path to libkeel.so; it must exist),
  2. next to this file (what `pip install .` bundles),
  3. <repository>/build/ (a source checkout after `make build`).
"""

import ctypes
import os
import sys

from ._errors import error_for_status

_NAMES = {"darwin": "libkeel.dylib", "win32": "keel.dll"}
LIBRARY_NAME = _NAMES.get(sys.platform, "libkeel.so")

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO_BUILD = os.path.join(_HERE, os.pardir, os.pardir, "build")


def find_library():
    """The path of the libkeel that `import keel` loads (see the module docstring)."""
    env = os.environ.get("KEEL_LIBRARY")
    if env:
        if not os.path.isfile(env):
            raise ImportError(f"keel: KEEL_LIBRARY={env!r} is not a file")
        return os.path.abspath(env)
    for folder in (_HERE, _REPO_BUILD):
        path = os.path.join(folder, LIBRARY_NAME)
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise ImportError(
        f"keel: {LIBRARY_NAME} not found: set KEEL_LIBRARY=/path/to/{LIBRARY_NAME}, "
        f"install the package (pip install .), or build it (make build) in {os.path.abspath(_REPO_BUILD)}"
    )


class Tensor(ctypes.Structure):
    """keel_tensor: {data, dtype, stride}; the stride counts elements. It holds an address only:
    the caller keeps the array or tensor behind it alive through the call."""

    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("stride", ctypes.c_size_t)]


_ctx_p = ctypes.c_void_p
_fp = ctypes.c_void_p  # float * (we pass addresses as ints; None is NULL)
_sz = ctypes.c_size_t
_int = ctypes.c_int
_uint = ctypes.c_uint
_f32 = ctypes.c_float


class Residual(ctypes.Structure):
    """keel_residual: h = alpha * x + lambda * r + bias."""

    _fields_ = [("x", Tensor), ("r", Tensor), ("alpha", _f32), ("lam", _fp), ("bias", _fp)]


class ResidualGrads(ctypes.Structure):
    """keel_residual_grads: dx, dr (tensors), dlambda, dbias (dim floats or NULL)."""

    _fields_ = [("dx", Tensor), ("dr", Tensor), ("dlam", _fp), ("dbias", _fp)]


class QuantI8(ctypes.Structure):
    """keel_quant_i8: scale (> 0 per tensor, 0 per row), row_scale, smooth."""

    _fields_ = [("scale", _f32), ("row_scale", _fp), ("smooth", _fp)]


class EpsInfo(ctypes.Structure):
    """keel_eps_info (keel_eps_check's answer)."""

    _fields_ = [("eps", _f32), ("eps_in_dtype", _f32), ("representable", _int),
                ("subnormal_in_dtype", _int), ("max_amplification", ctypes.c_double),
                ("dominance_variance", ctypes.c_double), ("dtype_noise_variance", ctypes.c_double),
                ("suggested_eps", _f32)]


_T, _res_p, _grads_p = Tensor, ctypes.POINTER(Residual), ctypes.POINTER(ResidualGrads)
_quant_p = ctypes.POINTER(QuantI8)
_i64_p = ctypes.c_void_p  # int64_t *

_PROTOTYPES = {
    "keel_status_str": (ctypes.c_char_p, [_int]),
    "keel_last_error": (ctypes.c_char_p, []),
    "keel_version": (_int, []),
    "keel_version_string": (ctypes.c_char_p, []),
    "keel_isa_name": (ctypes.c_char_p, [_int]),
    "keel_dtype_name": (ctypes.c_char_p, [_int]),
    "keel_ctx_create": (_int, [ctypes.POINTER(_ctx_p), _int]),
    "keel_ctx_destroy": (None, [_ctx_p]),
    "keel_ctx_threads": (_int, [_ctx_p]),
    "keel_ctx_set_threads": (_int, [_ctx_p, _int]),
    "keel_ctx_isa": (_int, [_ctx_p]),
    "keel_layernorm_fwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _fp, _f32, _fp, _fp, _uint]),
    "keel_layernorm_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _fp, _fp, _f32, _T, _fp, _fp, _uint]),
    "keel_rmsnorm_fwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _f32, _fp, _uint]),
    "keel_rmsnorm_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _fp, _f32, _T, _fp, _uint]),
    "keel_add_layernorm_fwd": (_int, [_ctx_p, _sz, _sz, _res_p, _T, _T, _fp, _fp, _f32, _fp, _fp, _uint]),
    "keel_add_rmsnorm_fwd": (_int, [_ctx_p, _sz, _sz, _res_p, _T, _T, _fp, _f32, _fp, _uint]),
    "keel_add_layernorm_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _res_p, _T, _fp, _fp, _fp, _f32, _grads_p,
                                      _fp, _fp, _uint]),
    "keel_add_rmsnorm_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _res_p, _T, _fp, _fp, _f32, _grads_p, _fp, _uint]),
    "keel_layerscale_fwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _T, _uint]),
    "keel_layerscale_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _T, _T, _fp, _uint]),
    "keel_batchnorm_fwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _fp, _f32, _int, _f32, _fp, _fp, _i64_p,
                                  _fp, _fp, _uint]),
    "keel_batchnorm_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _fp, _fp, _f32, _int, _T, _fp, _fp, _uint]),
    "keel_dyt_fwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _f32, _fp, _fp, _uint]),
    "keel_dyt_bwd": (_int, [_ctx_p, _sz, _sz, _T, _T, _f32, _fp, _T, _fp, _fp, _fp, _uint]),
    "keel_layernorm_fwd_i8": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _fp, _f32, _quant_p, _fp, _fp, _uint]),
    "keel_rmsnorm_fwd_i8": (_int, [_ctx_p, _sz, _sz, _T, _T, _fp, _f32, _quant_p, _fp, _uint]),
    "keel_eps_check": (_int, [_int, _f32, ctypes.POINTER(EpsInfo)]),
}


def _load():
    path = find_library()
    lib = ctypes.CDLL(path)
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib, path


lib, path = _load()


def last_error():
    return lib.keel_last_error().decode("utf-8", "replace")


def raise_status(status):
    """Raise the exception of a failed call: keel_last_error()'s message (thread-local: call it
    on the thread that made the call) in the class of the status."""
    message = last_error() or lib.keel_status_str(status).decode()
    raise error_for_status(status, message)


def check(status):
    """Raise the exception for a non-zero keel_status, with keel_last_error()'s message.
    Call it on the thread that made the call: the message is thread-local."""
    if status:
        raise_status(status)
