"""Build step of the Python package: CMake builds libkeel.so (target keel_shared) from this
repository and the wheel carries it as keel/libkeel.so, with the NumPy API's compiled entry
(keel/_numpy_fast, a CPython extension module) and, when torch is importable in the build
(pip install --no-build-isolation), keel.torch's operators. Metadata lives in pyproject.toml.

Environment: CMAKE (the cmake to run), CMAKE_BUILD_PARALLEL_LEVEL (jobs), KEEL_CMAKE_ARGS
(extra -D options, space-separated).
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY = {"darwin": "libkeel.dylib", "win32": "keel.dll"}.get(sys.platform, "libkeel.so")


def build_libkeel(build_dir):
    """Configure and build keel_shared in build_dir; returns the path of the library file."""
    cmake = os.environ.get("CMAKE") or shutil.which("cmake")
    if not cmake:
        sys.exit("keel: cmake not found (install cmake, or let pip's build isolation fetch it)")
    args = [cmake, "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
            "-DKEEL_BUILD_TESTS=OFF", "-DKEEL_BUILD_CLI=OFF"]
    if not shutil.which("make") and shutil.which("ninja"):
        args += ["-G", "Ninja"]
    args += os.environ.get("KEEL_CMAKE_ARGS", "").split()
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
    subprocess.check_call(args)
    subprocess.check_call([cmake, "--build", build_dir, "--target", "keel_shared", "-j", jobs])
    path = os.path.join(build_dir, LIBRARY)
    if not os.path.exists(path):
        sys.exit(f"keel: the CMake build did not produce {path}")
    return os.path.realpath(path)  # libkeel.so -> libkeel.so.0 -> libkeel.so.0.2.0


def build_torch_ops(package, build_dir):
    """keel's torch operators (python/keel/csrc/torch_ops.cpp) compiled into the package as
    _torch_ops.so with a stamp naming the torch and sources, when torch is importable here
    (pip install --no-build-isolation with torch installed). Otherwise `import keel.torch`
    compiles them on first use (python/keel/_torch_ext.py)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("keel: torch is not importable in this build: keel.torch compiles its operators on first use",
              flush=True)
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("keel_ext_build", os.path.join(package, "_ext_build.py"))
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    print(f"keel: compiling the torch operators for torch {torch.__version__}", flush=True)
    built = ext.compile_torch_ops(build_dir, verbose=True)
    shutil.copyfile(built, ext.TORCH_PREBUILT)
    with open(ext.TORCH_STAMP, "w") as f:
        f.write(ext.torch_key() + "\n")


class BuildPyWithLibrary(build_py):
    """build_py, then libkeel into the package (the source tree's for an editable install), with
    keel.h beside the torch operators' source, and those operators compiled when torch is here."""

    def run(self):
        super().run()
        build_temp = self.get_finalized_command("build").build_temp
        print("keel: building libkeel with CMake", flush=True)
        library = build_libkeel(os.path.join(build_temp, "cmake"))
        if getattr(self, "editable_mode", False):
            target = os.path.join(ROOT, "python", "keel")
        else:
            target = os.path.join(self.build_lib, "keel")
        os.makedirs(os.path.join(target, "csrc"), exist_ok=True)
        shutil.copyfile(library, os.path.join(target, LIBRARY))
        if not getattr(self, "editable_mode", False):  # the source tree finds include/keel.h itself
            shutil.copyfile(os.path.join(ROOT, "include", "keel.h"), os.path.join(target, "csrc", "keel.h"))
        build_torch_ops(target, os.path.join(build_temp, "torch-ops"))


setup(
    cmdclass={"build_py": BuildPyWithLibrary},
    # the NumPy API's compiled entry (python/keel/_numpy_ext.py): a CPython extension module, so
    # the wheel is tagged for this Python and platform
    ext_modules=[Extension("keel._numpy_fast", sources=["python/keel/csrc/numpy_fast.c"], include_dirs=["include"],
                           extra_compile_args=["-std=c11", "-O2"])],
    # setuptools' default build dir, build/, is the C build's: keep out of it.
    options={"build": {"build_base": "build-pip"}},
)
