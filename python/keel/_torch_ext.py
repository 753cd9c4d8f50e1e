"""keel's torch operators (python/keel/csrc/torch_ops.cpp) and their eager entry (torch_fast.cpp):
finding or compiling the extension module, importing it (which registers the operators with
torch's dispatcher), and binding it to the libkeel that `import keel` loaded.

They are C++ so that an eager call costs what a call of torch's own ops costs. They are
compiled against the torch that runs them (a torch extension is tied to its torch version):
  1. `pip install --no-build-isolation .` with torch installed compiles them into the package
     (keel/_torch_ops.so, with a stamp naming the torch and the sources it was built from);
  2. otherwise the first `import keel.torch` compiles them once (about a minute on 2 cores, with a
     message) into KEEL_TORCH_EXT_DIR, default ~/.cache/keel/torch-ops/<key>/, and later imports
     load that copy. The key names the torch version and a hash of the sources, so a new torch or
     a new keel compiles again.
Compiling needs a C++ compiler and ninja (`pip install ninja`).
"""

import ctypes
import functools
import importlib.util
import os
import subprocess
import sys

import torch

from ._ext_build import TORCH_NAME as _NAME
from ._ext_build import TORCH_PREBUILT as PREBUILT
from ._ext_build import TORCH_STAMP as STAMP
from ._ext_build import cache_dir, compile_torch_ops, entry_addresses, torch_key

# The libkeel entry points the operators call, in the order of torch_ops.cpp's struct Api.
_API = ("keel_ctx_create", "keel_ctx_destroy", "keel_ctx_set_threads", "keel_last_error",
        "keel_layernorm_fwd", "keel_layernorm_bwd", "keel_rmsnorm_fwd", "keel_rmsnorm_bwd",
        "keel_add_layernorm_fwd", "keel_add_rmsnorm_fwd", "keel_add_layernorm_bwd", "keel_add_rmsnorm_bwd",
        "keel_layerscale_fwd", "keel_layerscale_bwd", "keel_dyt_fwd", "keel_dyt_bwd", "keel_batchnorm_fwd",
        "keel_batchnorm_bwd")

compile_into = compile_torch_ops  # (a name of this module: tests replace it)


def _prebuilt_matches(k):
    try:
        with open(STAMP) as f:
            return os.path.isfile(PREBUILT) and f.read().strip() == k
    except OSError:
        return False


def find_or_compile():
    """The path of a shared object of the operators for this torch and these sources."""
    k = torch_key()
    if _prebuilt_matches(k):
        return PREBUILT
    folder = cache_dir("KEEL_TORCH_EXT_DIR", "torch-ops", k)
    path = os.path.join(folder, _NAME + ".so")
    if not os.path.isfile(path):
        print(f"keel.torch: compiling keel's torch operators for torch {torch.__version__} into {folder} "
              "(once; about a minute on 2 cores)", file=sys.stderr, flush=True)
        try:
            path = compile_into(folder)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            raise ImportError(
                f"keel.torch: its operators could not be compiled for torch {torch.__version__} ({e}). They need a "
                "C++ compiler and ninja (pip install ninja); or install keel with torch present: "
                "pip install --no-build-isolation .") from e
    return path


def _bind(path):
    """Hands the operators the entry points of the libkeel keel loaded."""
    from . import _lib

    so = ctypes.CDLL(path)
    fns = entry_addresses(_lib.lib, _API)
    if so.keel_torch_api_entries() != len(fns):
        raise ImportError(f"keel.torch: {path} expects {so.keel_torch_api_entries()} entry points, "
                          f"this keel gives {len(fns)}: a stale build")
    so.keel_torch_bind((ctypes.c_void_p * len(fns))(*fns), len(fns))
    so.keel_torch_set_threads.argtypes = [ctypes.c_int]
    so.keel_torch_row_copies.restype = ctypes.c_longlong
    return so


@functools.cache
def load():
    """Imports the extension (registering torch.ops.keel.*) once and binds it to libkeel; returns
    (the module, whose functions are keel.torch's eager entry; the ctypes handle of the same
    library, for keel_torch_set_threads)."""
    path = find_or_compile()
    spec = importlib.util.spec_from_file_location(_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, _bind(path)
