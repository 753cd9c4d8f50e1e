"""The build backend of `pip install .`: setuptools' own, plus CMake from PyPI as a build
requirement when no `cmake` is on PATH (and Ninja when there is no `make` either)."""

import shutil

from setuptools import build_meta as _orig
from setuptools.build_meta import (build_editable, build_sdist, build_wheel,
                                   get_requires_for_build_sdist,
                                   prepare_metadata_for_build_editable,
                                   prepare_metadata_for_build_wheel)

__all__ = [  # the PEP 517 hooks: setuptools' own, two of them with CMake added
    "build_editable", "build_sdist", "build_wheel", "get_requires_for_build_editable",
    "get_requires_for_build_sdist", "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable", "prepare_metadata_for_build_wheel",
]


def _c_build_tools():
    tools = []
    if shutil.which("cmake") is None:
        tools.append("cmake>=3.16")
    if shutil.which("make") is None and shutil.which("ninja") is None:
        tools.append("ninja")
    return tools


def get_requires_for_build_wheel(config_settings=None):
    return _orig.get_requires_for_build_wheel(config_settings) + _c_build_tools()


def get_requires_for_build_editable(config_settings=None):
    return _orig.get_requires_for_build_editable(config_settings) + _c_build_tools()
