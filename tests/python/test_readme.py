"""The Python examples of README.md and python/README.md run as written: every ```python block
of each file, in order, in one namespace per file (a block importing torch is skipped without
torch)."""

import importlib.util
import os
import re

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir))
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _blocks(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return BLOCK.findall(f.read())


@pytest.mark.parametrize("name", ["README.md", os.path.join("python", "README.md")])
def test_python_blocks_run(name):
    blocks = _blocks(name)
    assert blocks, f"no ```python block in {name}"
    namespace = {"__name__": "readme"}
    ran = 0
    for code in blocks:
        if re.search(r"^import torch", code, re.M) and importlib.util.find_spec("torch") is None:
            continue
        exec(compile(code, name, "exec"), namespace)
        ran += 1
    assert ran
    if "n" in namespace and "model" in namespace:
        assert namespace["n"] == 4  # keel.torch.patch swapped the 4 LayerNorms of the 2 layers
