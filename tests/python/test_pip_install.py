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
    assert out.startswith("ok 0.1.0 ")
