"""What keel's two compiled Python entries share (keel.torch's operators, _torch_ext.py; the
NumPy entry, _numpy_ext.py): where keel.h is, the key a compiled copy is filed under, the cache
folder, the addresses of libkeel's entry points, and compiling the torch operators. Standard
library only, no import from the package: setup.py loads this file alone to compile the
operators into a wheel."""

import ctypes
import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))

TORCH_SOURCES = [os.path.join(HERE, "csrc", name) for name in ("torch_ops.cpp", "torch_layers.cpp", "torch_fast.cpp")]
TORCH_HEADERS = [os.path.join(HERE, "csrc", "torch_common.h")]  # included by the sources: part of the key
TORCH_NAME = "keel_torch_ops"
TORCH_PREBUILT = os.path.join(HERE, "_torch_ops.so")  # pip install --no-build-isolation's copy
TORCH_STAMP = TORCH_PREBUILT + ".stamp"  # the key it was built for


def include_dir():
    """The folder holding keel.h: the package's copy (installed), or the repository's include/."""
    for folder in (os.path.join(HERE, "csrc"), os.path.join(HERE, os.pardir, os.pardir, "include")):
        if os.path.isfile(os.path.join(folder, "keel.h")):
            return os.path.abspath(folder)
    raise OSError("keel: keel.h not found beside the package or in the repository's include/")


def source_key(prefix, sources):
    """prefix and a hash of the sources and keel.h: what a compiled copy must match."""
    digest = hashlib.sha256()
    for path in list(sources) + [os.path.join(include_dir(), "keel.h")]:
        with open(path, "rb") as f:
            digest.update(f.read())
    return f"{prefix}-{digest.hexdigest()[:16]}"


def cache_dir(env_var, kind, key):
    """The folder of a compiled copy: $env_var/key, else ~/.cache/keel/kind/key."""
    base = os.environ.get(env_var) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "keel", kind)
    return os.path.join(base, key)


def entry_addresses(lib, names):
    """The addresses (ints) of libkeel's functions `names` in the loaded ctypes library lib."""
    return [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in names]


def torch_key():
    """The torch operators' key: the torch version and the sources' hash."""
    import torch

    return source_key(f"torch-{torch.__version__}", TORCH_SOURCES + TORCH_HEADERS)


def compile_torch_ops(folder, verbose=False):
    """Compiles the torch operators into folder (ninja, through torch.utils.cpp_extension);
    returns the extension module's path."""
    from torch.utils import cpp_extension

    os.makedirs(folder, exist_ok=True)
    cpp_extension.load(name=TORCH_NAME, sources=TORCH_SOURCES, build_directory=folder, is_python_module=True,
                       extra_cflags=["-O2", f"-I{include_dir()}"], verbose=verbose)
    return os.path.join(folder, TORCH_NAME + ".so")
