"""`pip install .` in a fresh virtualenv builds libkeel with CMake and bundles it.

Slow (a CMake build, and pip fetches setuptools from PyPI): run with KEEL_TEST_PIP_INSTALL=1.
"""

import os
import subprocess
import venv

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir))

pytestmark = pytest.mark.skipif(os.environ.get("KEEL_TEST_PIP_INSTALL") != "1",
                                reason="slow, needs PyPI: set KEEL_TEST_PIP_INSTALL=1 to run")

SMOKE = """
import os, numpy as np, keel
assert os.path.dirname(keel.library_path) == os.path.dirname(keel.__file__), keel.library_path
assert "site-packages" in keel.__file__, keel.__file__
y = keel.layer_norm(np.arange(8, dtype=np.float32).reshape(2, 4), 4)
assert abs(float(y[0, 0]) + 1.3416355) < 1e-6, y
y, h = keel.add_rms_norm(np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), 4)
assert float(h[0, 0]) == 2.0 and keel.eps_check("f16", 1e-12).eps_in_dtype == 0.0
print("ok", keel.__version__, keel.library_path)
"""


def test_pip_install_in_fresh_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_LIBRARY", "PYTHONPATH")}
    subprocess.run([python, "-m", "pip", "install", "--quiet", ROOT], check=True, env=env)
    out = subprocess.run([python, "-c", SMOKE], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith("ok 0.2.0 ")


TORCH_SMOKE = """
import os, torch, keel, keel._torch_ext as ext, keel.torch as kt
assert "site-packages" in keel.__file__, keel.__file__
assert ext.find_or_compile() == ext.PREBUILT, "the operators were not prebuilt into the package"
assert not os.listdir(os.environ["KEEL_TORCH_EXT_DIR"]), "keel.torch compiled at import"
x = torch.randn(3, 16, requires_grad=True)
y = kt.layer_norm(x, 16)
y.sum().backward()
torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (16,)))
print("ok", torch.__version__)
"""


def test_pip_install_no_build_isolation_prebuilds_the_torch_operators(tmp_path):
    """With torch importable at build time (pip install --no-build-isolation in an environment
    that has torch), the torch operators are compiled into the package: importing keel.torch
    compiles nothing."""
    pytest.importorskip("torch")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=True)  # sees this Python's torch
    python = str(env_dir / "bin" / "python")
    cache = tmp_path / "ext-cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_LIBRARY", "PYTHONPATH")}
    env["KEEL_TORCH_EXT_DIR"] = str(cache)
    # the venv's own setuptools (from ensurepip) shadows this Python's: the build tools first
    subprocess.run([python, "-m", "pip", "install", "--quiet", "setuptools>=70.1", "wheel"], check=True, env=env)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps", ROOT],
                   check=True, env=env)
    out = subprocess.run([python, "-c", TORCH_SMOKE], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith("ok ")
