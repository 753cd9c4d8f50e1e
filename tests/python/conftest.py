"""pytest setup for the Python bindings.

`import keel` comes from the source tree (python/) unless KEEL_TEST_INSTALLED=1 (then from the
installed package). The source tree's keel loads KEEL_LIBRARY, else build/libkeel.so.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, os.pardir, os.pardir))

if os.environ.get("KEEL_TEST_INSTALLED") != "1":
    sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)  # reference.py

from hypothesis import settings  # noqa: E402

# Deterministic and bounded: the same examples on every run, no deadline on a loaded machine.
settings.register_profile("keel", derandomize=True, database=None, deadline=None, max_examples=60, print_blob=True)
# HYPOTHESIS_PROFILE=thorough: many more random cases (minutes).
settings.register_profile("thorough", derandomize=False, database=None, deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "keel"))


import pytest  # noqa: E402


@pytest.fixture
def keel_calls():
    """The keel torch operators that run during the test (keel_spy.KeelCalls), a list."""
    pytest.importorskip("torch")
    from keel_spy import KeelCalls

    with KeelCalls() as calls:
        yield calls
