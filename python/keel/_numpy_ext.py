"""The NumPy API's compiled entry (python/keel/csrc/numpy_fast.c): found, or compiled, and bound
to the libkeel that `import keel` loaded.

  1. `pip install .` builds it into the package (keel/_numpy_fast*.so);
  2. otherwise (a source checkout) the first `import keel` compiles it, about a second, with the
     C compiler Python was built with (sysconfig's CC, else cc) into KEEL_NUMPY_EXT_DIR, default
     ~/.cache/keel/numpy-fast/<key>/ (the key names the Python version and the sources' hash).

`fast` is the module, or None where it could not be had (no compiler, KEEL_NUMPY_FAST=0): the
NumPy functions then take their ctypes path, the same results a few microseconds slower a call;
`reason` says why.
"""

import importlib.machinery
import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig

import numpy as np

from . import _lib
from ._ext_build import cache_dir, entry_addresses, include_dir, source_key

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(_HERE, "csrc", "numpy_fast.c")
_NAME = "_numpy_fast"
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
_ENTRIES = ("keel_layernorm_fwd", "keel_layernorm_bwd", "keel_rmsnorm_fwd", "keel_rmsnorm_bwd")


def compile_into(folder):
    """Compiles numpy_fast.c into folder; returns the extension module's path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, _NAME + _SUFFIX)
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    tmp = f"{path}.{os.getpid()}.tmp"
    cmd = cc + ["-std=c11", "-O2", "-fPIC", "-shared", f"-I{sysconfig.get_paths()['include']}",
                f"-I{include_dir()}", SOURCE, "-o", tmp]
    subprocess.run(cmd, check=True, capture_output=True)
    os.replace(tmp, path)  # atomic: another process may be compiling the same
    return path


def _load(path):
    spec = importlib.util.spec_from_file_location("keel." + _NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _find():
    """The module: the package's own, else a compiled copy in the cache (compiled if missing)."""
    try:
        from . import _numpy_fast  # built by pip install
        return _numpy_fast
    except ImportError:
        pass
    key = source_key(sys.implementation.cache_tag, [SOURCE])
    path = os.path.join(cache_dir("KEEL_NUMPY_EXT_DIR", "numpy-fast", key), _NAME + _SUFFIX)
    if not os.path.isfile(path):
        path = compile_into(os.path.dirname(path))
    return _load(path)


def _bind(module):
    module.bind(np.ndarray, np.empty, np.zeros, np.dtype(np.float32), _lib.raise_status,
                *entry_addresses(_lib.lib, _ENTRIES))
    return module


def _fast_or_reason():
    if os.environ.get("KEEL_NUMPY_FAST") == "0":
        return None, "KEEL_NUMPY_FAST=0"
    try:
        return _bind(_find()), None
    except (OSError, ImportError, subprocess.CalledProcessError) as e:
        detail = e.stderr.decode(errors="replace").strip()[:300] if isinstance(e, subprocess.CalledProcessError) else e
        return None, f"the compiled entry is unavailable ({detail}): the ctypes path serves every call"


fast, reason = _fast_or_reason()
